"""The Nengo back end computes the contract exactly: equal to whetstone.simulate.run."""

from __future__ import annotations

import numpy as np
import pytest
from _helpers import conv_stage, dense_stage, pool_stage, trained_network

import whetstone.backends as backends
from whetstone import simulate
from whetstone.network import KeyDecoder, SpikingNetwork

nengo_backend = backends.get("nengo")


def _assert_matches_reference(net, x):
    result = nengo_backend.run(net, x)
    ref = simulate.run(net, x)
    differ = (result.output_spikes != ref.output_spikes.reshape(len(x), -1)).any(axis=1)
    differ |= result.predictions != ref.predictions
    # ties are the only allowed disagreement, and they are counted by the reference
    assert not (differ & ~ref.tie_mask).any(), (differ, ref.ties)
    if not ref.tie_mask.any():
        assert np.array_equal(result.spike_counts, ref.spike_counts)
    return result, ref


# ---------------------------------------------------------------- latency and pipeline


def test_latency_equals_reference():
    """One image, then blanks: the output appears exactly net.latency - 1 steps later."""
    rng = np.random.default_rng(0)
    stages = [dense_stage(rng, f"d{i}", 4, 4, 0.5) for i in range(4)]
    for stage in stages:
        stage.weights[:] = np.eye(4)
        stage.bias[:] = 0
    net = SpikingNetwork((4,), stages, input_encoding="binary")
    built = backends.nengo.build_network(net)
    import nengo

    with nengo.Simulator(built.network, progress_bar=False) as sim:
        built.presenter.load(0, built.node_rows(np.ones((1, 4), "float32")))
        sim.run_steps(8)
        first = [int(np.flatnonzero(sim.data[p].any(axis=1))[0]) for p in built.probes]
    assert first == list(range(net.latency))  # one step per stage
    assert nengo_backend.run(net, np.ones((1, 4))).info["latency"] == net.latency
    assert simulate.run(net, np.ones((1, 4))).latency == net.latency


def test_pipelined_images_are_matched_to_their_predictions():
    rng = np.random.default_rng(1)
    net = SpikingNetwork((6,), [dense_stage(rng, "a", 6, 8, 0.5),
                                dense_stage(rng, "b", 8, 5, 0.5)])  # fmt: skip
    x = rng.uniform(0, 1, (300, 6)).astype("float32")  # more than one probe chunk
    result, ref = _assert_matches_reference(net, x)
    assert np.array_equal(result.predictions, ref.predictions)


def test_or_pool_and_conv_are_not_expanded():
    rng = np.random.default_rng(2)
    conv = conv_stage(rng, "c", (6, 6, 1), 2, 3, 1, "same", 0.5)
    pool = pool_stage("p", (6, 6, 2), 2, 2, "valid")
    net = SpikingNetwork((6, 6, 1), [conv, pool, dense_stage(rng, "d", 18, 3, 0.5)],
                         input_encoding="binary")  # fmt: skip
    built = backends.nengo.build_network(net)
    import nengo

    kinds = [type(c.transform).__name__ for c in built.network.all_connections]
    assert kinds.count("Convolution") == 2 and "Dense" in kinds
    x = rng.integers(0, 2, (20, 6, 6, 1)).astype("float32")
    _assert_matches_reference(net, x)
    assert isinstance(built.ensembles[0].neuron_type, nengo.neurons.NeuronType)


# ---------------------------------------------------------------- errors, export, registry


def test_wrong_shape_names_expected_and_given():
    rng = np.random.default_rng(3)
    net = SpikingNetwork((6,), [dense_stage(rng, "a", 6, 3, 0.5)])
    with pytest.raises(ValueError, match=r"\(6,\).*\(2, 5\)"):
        nengo_backend.run(net, np.zeros((2, 5)))


def test_export_is_atomic_and_runs(tmp_path):
    import subprocess
    import sys

    rng = np.random.default_rng(4)
    net = SpikingNetwork((6,), [dense_stage(rng, "a", 6, 3, 0.5)], KeyDecoder(np.eye(3)))
    path = nengo_backend.export(net, tmp_path / "model")
    assert sorted(p.name for p in path.iterdir()) == ["export.json", "network.h5", "run.py"]
    assert SpikingNetwork.load(path / "network.h5") == net
    x = rng.uniform(0, 1, (5, 6)).astype("float32")
    np.save(tmp_path / "x.npy", x)
    subprocess.run([sys.executable, str(path / "run.py"), "x.npy", "--predictions", "p.npy"],
                   capture_output=True, text=True, check=True, cwd=tmp_path)  # fmt: skip
    predictions = np.load(tmp_path / "p.npy")
    assert predictions.tolist() == simulate.run(net, x).predictions.tolist()
    with pytest.raises(FileExistsError):
        nengo_backend.export(net, path)


def test_failed_export_leaves_nothing(tmp_path, monkeypatch):
    rng = np.random.default_rng(5)
    net = SpikingNetwork((6,), [dense_stage(rng, "a", 6, 3, 0.5)])

    def broken(self, path):
        raise OSError("disk full")

    monkeypatch.setattr(SpikingNetwork, "save", broken)
    with pytest.raises(OSError):
        nengo_backend.export(net, tmp_path / "model")
    assert list(tmp_path.iterdir()) == []


def test_registry():
    assert backends.get("nengo").is_available() is True
    assert backends.get("nengo").extra == "nengo"


# ---------------------------------------------------------------- real MNIST


@pytest.mark.slow
@pytest.mark.parametrize("name", ["dense_mnist", "conv_mnist", "resnet_mnist"])
def test_real_mnist_subset(name, data_dir):
    from whetstone import datasets

    net = trained_network(name)
    _, (x, _) = datasets.load("mnist", data_dir)
    result = nengo_backend.run(net, x[:300], compare_reference=True)
    assert result.info["differing_not_ties"] == 0
    assert result.info["agreement"] >= 0.999


@pytest.mark.parametrize("name", ["nengo", "loihi"])
def test_a_batch_that_fills_whole_chunks_runs(name):
    """The last chunks only flush the pipeline (no images left to present)."""
    if name == "loihi":
        pytest.importorskip("nengo_loihi")
    rng = np.random.default_rng(5)
    stages = [dense_stage(rng, "a", 6, 5, 0.5), dense_stage(rng, "b", 5, 3, 0.5)]
    net = SpikingNetwork((6,), stages, KeyDecoder(np.eye(3)))
    x = rng.random((8, 6)).astype("float32")
    options = {"target": "simreal"} if name == "loihi" else {}
    result = backends.get(name).run(net, x, chunk_steps=4, **options)
    np.testing.assert_array_equal(result.predictions, simulate.run(net, x).predictions)
