"""The Nengo-Loihi back end: exact dynamics (float emulator), chip emulator, resources."""

from __future__ import annotations

import numpy as np
import pytest
from _helpers import conv_stage, dense_stage, inputs, networks, pool_stage, trained_model
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import whetstone.backends as backends
from whetstone import simulate
from whetstone.backends.loihi import LoihiResourceWarning
from whetstone.backends.loihi_emulator import _segments
from whetstone.network import KeyDecoder, SpikingNetwork, Stage

loihi = backends.get("loihi")
if not loihi.is_available():  # the loihi extra (nengo-loihi, numpy < 2) is not installed
    pytest.skip("needs the loihi extra: pip install -e '.[loihi]'", allow_module_level=True)


def _differ_not_ties(result, net, x):
    ref = simulate.run(net, x)
    differ = (result.output_spikes != ref.output_spikes.reshape(len(x), -1)).any(axis=1)
    differ |= result.predictions != ref.predictions
    return int((differ & ~ref.tie_mask).sum())


def _grid_network(rng, encoding="binary"):
    """Integer weights, half-integer biases: far from ties even after 8-bit discretisation."""
    conv = conv_stage(rng, "c", (6, 6, 1), 3, 3, 1, "same", 0.5)
    conv.weights[:] = rng.integers(-2, 3, conv.weights.shape)
    conv.bias[:] = rng.integers(-1, 2, conv.bias.shape)
    pool = pool_stage("p", (6, 6, 3), 2, 2, "valid")
    dense = dense_stage(rng, "d", 27, 6, 0.5)
    dense.weights[:] = rng.integers(-2, 3, dense.weights.shape)
    dense.bias[:] = rng.integers(-1, 2, dense.bias.shape)
    return SpikingNetwork((6, 6, 1), [conv, pool, dense], KeyDecoder(np.eye(6)[:3]), encoding)


@pytest.mark.parametrize("encoding", ["binary", "host"])
def test_chip_emulator_exact_on_weight_grid(encoding):
    rng = np.random.default_rng(0)
    net = _grid_network(rng, encoding)
    x = rng.integers(0, 2, (40, 6, 6, 1)).astype("float32")
    result = loihi.run(net, x, target="sim", compare_reference=True)
    assert result.info["output_spikes_differing"] == 0
    assert np.array_equal(result.spike_counts, result.info["reference_spike_counts"])


@pytest.mark.parametrize("encoding", ["binary", "host"])
def test_latency_matches_offsets(encoding):
    """One image then blanks: each stage spikes exactly at its stated offset."""
    stages = [Stage(f"d{i}", "dense", (3,), (3,), np.eye(3, dtype="float32")) for i in range(3)]
    net = SpikingNetwork((3,), stages, input_encoding=encoding)
    built = loihi._build(net)
    with loihi.simulator(built, "sim") as sim:
        built.presenter.load(0, built.node_rows(np.ones((1, 3), "float32")))
        sim.run_steps(8)
        first = [int(np.flatnonzero(sim.data[p].any(axis=1))[0]) for p in built.probes]
    assert first == loihi.offsets(built)
    expected = net.latency + (encoding == "binary")  # input spikes: one step host -> chip
    assert loihi.run(net, np.ones((1, 3))).info["latency"] == expected


def test_resources_counted():
    rng = np.random.default_rng(1)
    net = _grid_network(rng)
    report = loihi.resources(net)
    assert report["cores"] == 3 and report["fits_one_chip"]
    assert report["total"]["compartments"] == net.num_neurons
    assert set(report["limits_per_core"]) == {
        "compartments", "in_axons", "out_axons", "synapse_bits"
    }  # fmt: skip
    split = loihi.resources(net, block_shapes={"c": (3, 3, 3)})
    assert split["cores"] == 6 and split["max_per_core"]["compartments"] == 27


def test_too_many_cores_warns_with_numbers_and_advice():
    rng = np.random.default_rng(2)
    net = SpikingNetwork((4,), [dense_stage(rng, "d", 4, 130, 0.5)], input_encoding="binary")
    with pytest.warns(LoihiResourceWarning, match=r"cores 130 > 128.*block_shapes"):
        loihi.run(net, np.ones((1, 4)), target="sim", block_shapes={"d": (1,)})


def test_nothing_on_chip_is_refused():
    net = SpikingNetwork((4,), [dense_stage(np.random.default_rng(6), "d", 4, 3, 0.5)])
    with pytest.raises(ValueError, match="nothing would run on the chip"):
        loihi.run(net, np.ones((1, 4)))


def test_bad_block_shape_name():
    net = _grid_network(np.random.default_rng(3))
    with pytest.raises(ValueError, match="not on-chip stages"):
        loihi.build(net, block_shapes={"nope": (2,)})


def test_wrong_shape_names_expected_and_given():
    net = _grid_network(np.random.default_rng(4))
    with pytest.raises(ValueError, match=r"\(6, 6, 1\).*\(3, 7\)"):
        loihi.run(net, np.zeros((3, 7)))


def test_export(tmp_path):
    net = _grid_network(np.random.default_rng(5))
    path = loihi.export(net, tmp_path / "loihi_model")
    assert SpikingNetwork.load(path / "network.h5") == net
    assert '"loihi"' in (path / "run.py").read_text()


def test_registry():
    assert loihi.is_available() is True and loihi.extra == "loihi"


@pytest.mark.slow
@pytest.mark.parametrize("name", ["dense_mnist", "conv_mnist", "resnet_mnist"])
def test_real_mnist_subset(name, data_dir):
    from whetstone import convert, datasets

    model = trained_model(name)
    net = convert.to_spiking(model)
    _, (x, y) = datasets.load("mnist", data_dir)
    n = 200 if name == "dense_mnist" else 100  # the conv net runs at ~3 images/s emulated
    x, y = x[:n], y[:n]
    keras_accuracy = (model.predict(x, verbose=0).argmax(axis=1) == y).mean()
    exact = loihi.run(net, x, target="simreal", compare_reference=True)
    assert exact.info["differing_not_ties"] == 0
    chip = loihi.run(net, x, target="sim", compare_reference=True)
    assert abs((chip.predictions == y).mean() - keras_accuracy) <= 0.02


SMALL = networks(ranks=(0, 2), dilation=False, square=True, on_chip=True, sizes=(3, 6))
SMALL_DAG = networks(ranks=(0, 2), dilation=False, square=True, on_chip=True, sizes=(3, 5),
                     dag=True, window_stages=(1, 3), units=(1, 5))  # fmt: skip


@pytest.mark.parametrize("target", ["sim", "simreal"])
def test_vectorised_emulator_equals_nengo_loihis_loop(target):
    """The vectorised spike delivery gives bit for bit nengo-loihi's own run: chains and DAGs,
    integer and float emulator, every stage's spike count and the output spikes (read in
    chunks of 5 steps against one chunk)."""

    @settings(max_examples=3, deadline=None, derandomize=True,
              suppress_health_check=[HealthCheck.too_slow])  # fmt: skip
    @given(st.one_of(SMALL, SMALL_DAG))
    def check(net):
        x = inputs(net, n=12)
        fast = loihi.run(net, x, target=target, chunk_steps=5)
        loop = loihi.run(net, x, target=target, fast_emulator=False)
        assert (fast.info["emulator"], loop.info["emulator"]) == ("vectorised", "nengo-loihi")
        np.testing.assert_array_equal(fast.output_spikes, loop.output_spikes)
        np.testing.assert_array_equal(fast.spike_counts, loop.spike_counts)

    check()


def test_emulator_segments():
    assert _segments(np.array([3, 0, 7]), np.array([2, 0, 1])).tolist() == [3, 4, 7]
    assert _segments(np.zeros(0, np.int64), np.zeros(0, np.int64)).tolist() == []
