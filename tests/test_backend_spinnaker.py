"""SpiNNaker back end: PyNN on NEST equals the reference; virtual-board mapping; errors."""

import importlib.util
import itertools
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from _helpers import networks, small_convnet, trained_network
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from whetstone import simulate
from whetstone.backends import MissingDependencyError, get
from whetstone.backends import spinnaker as sp
from whetstone.backends.spinnaker import plan, pynn
from whetstone.network import SpikingNetwork, Stage, output_length


def _dense(name, n_in, n_out, rng, scale=1.0):
    w = (rng.normal(size=(n_in, n_out)) * scale).astype("float32")
    return Stage(name, "dense", (n_in,), (n_out,), w, rng.normal(size=n_out).astype("float32"))


def _same_as_reference(net, x, result):
    """Output spikes equal the reference's on every sample without a tie."""
    reference = simulate.run(net, x)
    clean = ~reference.tie_mask
    got = result.output_spikes.reshape(len(x), -1)[clean]
    assert np.array_equal(got, reference.output_spikes.reshape(len(x), -1)[clean])
    assert np.array_equal(result.predictions[clean], reference.predictions[clean])
    if clean.all():
        assert result.spike_counts.tolist() == reference.spike_counts.tolist()


# ---------------------------------------------------------------- no optional packages


@pytest.mark.parametrize("padding", ["valid", "same"])
@pytest.mark.parametrize(("strides", "dilation"), [(1, 1), (2, 1), (1, 2)])
@pytest.mark.parametrize("kind", ["conv", "pool"])
def test_connections_equal_reference_operator(padding, strides, dilation, kind):
    rng = np.random.default_rng(0)
    shape, window = (9, 7, 3), (3, 2)
    out = tuple(
        output_length(n, k, strides, dilation, padding) for n, k in zip((9, 7), window, strict=True)
    )
    geometry = {"strides": (strides,) * 2, "dilation": (dilation,) * 2, "padding": padding}
    if kind == "conv":
        kernel = rng.normal(size=(*window, 3, 4)).astype("float32")
        stage = Stage("c", "conv", shape, (*out, 4), kernel, **geometry)
    else:
        stage = Stage("p", "pool", shape, (*out, 3), pool_size=window, **geometry)
    rows = sp.connections(stage)
    matrix = np.zeros((stage.in_size, stage.num_neurons))
    np.add.at(matrix, (rows[:, 0].astype(int), rows[:, 1].astype(int)), rows[:, 2])
    s = rng.integers(0, 2, (4, *shape)).astype("float32")
    expected = simulate.preactivation(stage, s, "float64").reshape(4, -1)
    np.testing.assert_allclose(s.reshape(4, -1) @ matrix, expected, atol=1e-9)
    assert len(rows) <= stage.num_synapses


def test_plan_splits_signs_and_folds_bias_into_threshold():
    w = np.array([[1.0, -2.0], [0.0, 0.5]], "float32")
    stage = Stage("d", "dense", (2,), (2,), w, np.array([0.25, -1.0], "float32"))
    [layer] = sp.build_plan(SpikingNetwork((2,), [stage], input_encoding="binary"))
    assert layer.thresholds.tolist() == [0.25, 1.5]
    assert layer.exc.tolist() == [[0, 0, 1.0], [1, 1, 0.5]]
    assert layer.inh.tolist() == [[0, 1, 2.0]]
    assert layer.max_summed == (1.0, 2.0)


def test_quantisation_reports_zero_rounding_and_fixed_point_model():
    rng = np.random.default_rng(1)
    w = np.array([[1.0, 1e-6, -3.0], [0.5, 0.25, 1.0]], "float32")
    net = SpikingNetwork((2,), [Stage("d", "dense", (2,), (3,), w)], input_encoding="binary")
    report = sp.quantisation(net, rng.integers(0, 2, (20, 2)))
    assert (report["synapses"], report["rounded_to_zero"], report["saturated"]) == (6, 1, 0)
    layer = report["layers"][0]
    # largest summed excitatory input 1.25 -> shift 1; inhibitory 3 -> shift 2
    assert (layer["exc"]["shift"], layer["inh"]["shift"]) == (1, 2)
    assert report["predictions_changed"] == 0


def test_ring_buffer_shift_matches_spynnaker_rule():
    assert [sp._ring_buffer_shift(m) for m in (0, 0.3, 1.0, 1.5, 4.0, 5.0)] == [0, 0, 1, 1, 3, 3]


def test_unknown_and_unsupported_simulators():
    backend = get("spinnaker")
    net = SpikingNetwork((1,), [Stage("d", "dense", (1,), (1,), np.ones((1, 1), "f4"))])
    with pytest.raises(ValueError, match="simulator must be one of"):
        backend.run(net, np.ones((1, 1)), simulator="loihi")
    with pytest.raises(NotImplementedError, match=r"brian2.*not supported"):
        backend.run(net, np.ones((1, 1)), simulator="brian2")


@pytest.mark.parametrize(("simulator", "extra"), [("nest", "nest"), ("spinnaker", "spinnaker")])
def test_missing_package_names_the_extra(monkeypatch, simulator, extra):
    monkeypatch.setitem(sys.modules, "pyNN", None)
    net = SpikingNetwork((1,), [Stage("d", "dense", (1,), (1,), np.ones((1, 1), "f4"))])
    with pytest.raises(MissingDependencyError, match=rf"whetstone-snn\[{extra}\]"):
        get("spinnaker").run(net, np.ones((1, 1)), simulator=simulator)
    assert get("spinnaker").is_available(simulator) is False


def test_spinnaker_config_restores_environment_and_writes_no_home(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    with sp.spinnaker_config(width=8, height=8) as root:
        assert os.environ["HOME"] != str(tmp_path)
        assert "width = 8" in (root / "config" / ".spynnaker.cfg").read_text()
    assert os.environ["HOME"] == str(tmp_path) and "XDG_CONFIG_HOME" not in os.environ
    assert list(tmp_path.iterdir()) == []


def test_export_is_atomic(tmp_path, monkeypatch):
    rng = np.random.default_rng(2)
    net = SpikingNetwork((4,), [_dense("a", 4, 3, rng), _dense("b", 3, 2, rng)])

    def broken(net, folder, x, **_):
        (folder / "network.npz").write_text("partial")
        raise OSError("disk full")

    monkeypatch.setattr(sp, "_write_export", broken)
    with pytest.raises(OSError, match="disk full"):
        get("spinnaker").export(net, tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


def test_export_refuses_existing_folder(tmp_path):
    rng = np.random.default_rng(2)
    net = SpikingNetwork((4,), [_dense("a", 4, 3, rng), _dense("b", 3, 2, rng)])
    (tmp_path / "out").mkdir()
    with pytest.raises(FileExistsError, match="force=True"):
        get("spinnaker").export(net, tmp_path / "out")


# ---------------------------------------------------------------- NEST


@pytest.fixture(scope="module")
def nest():
    pytest.importorskip("nest")
    return pytest.importorskip("pyNN.nest")


@settings(
    max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    seed=st.integers(0, 2**31 - 1),
    widths=st.lists(st.integers(1, 7), min_size=1, max_size=3),
    encoding=st.sampled_from(["host", "binary"]),
)
def test_nest_equals_reference_dense(nest, seed, widths, encoding):
    rng = np.random.default_rng(seed)
    sizes = [5, *widths]
    stages = [_dense(f"d{i}", a, b, rng) for i, (a, b) in enumerate(itertools.pairwise(sizes))]
    net = SpikingNetwork((5,), stages, input_encoding=encoding)
    x = rng.normal(size=(30, 5)) if encoding == "host" else rng.integers(0, 2, (30, 5))
    _same_as_reference(net, x.astype("float32"), get("spinnaker").run(net, x, simulator="nest"))


@pytest.mark.parametrize("encoding", ["host", "binary"])
def test_nest_equals_reference_conv_pool(nest, encoding):
    rng = np.random.default_rng(3)
    net = small_convnet(rng, encoding)
    x = rng.normal(size=(40, 8, 8, 1)).astype("float32")
    if encoding == "binary":
        x = (x > 0).astype("float32")
    result = get("spinnaker").run(net, x, simulator="nest")
    _same_as_reference(net, x, result)
    assert result.output_spikes.sum() > 0


def _nest_connections(net, list_connector: bool) -> np.ndarray:
    """Every NEST connection of the built network, ``(source, target, weight, delay,
    receptor)`` sorted; ``list_connector``: built with PyNN's own ``FromListConnector``."""
    import nest as nest_kernel

    from whetstone.backends.spinnaker import pynn

    with pytest.MonkeyPatch.context() as patch:
        if list_connector:
            patch.setattr(pynn, "_array_connector", lambda sim: sim.FromListConnector)
        built = get("spinnaker").build(net, "nest")
    found = nest_kernel.GetConnections().get(["source", "target", "weight", "delay", "receptor"])
    built.sim.end()
    rows = np.array([found[k] for k in ("source", "target", "weight", "delay", "receptor")]).T
    return rows[np.lexsort(rows.T[::-1])]


@settings(
    max_examples=4,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(networks(ranks=(0, 2), dilation=False, on_chip=True, sizes=(3, 6), dag=True))
def test_array_connections_equal_pynns_list_connector(nest, net):
    """One ``nest.Connect`` of arrays per projection makes exactly PyNN's connections:
    the same sources, targets, weights (bit for bit), delays and receptors."""
    fast, listed = _nest_connections(net, False), _nest_connections(net, True)
    synapses = sum(len(r) for layer in sp.build_plan(net) for *_, start, width in layer.inputs
                   for r in layer.edge_rows(start, width))  # fmt: skip
    assert len(fast) >= synapses  # and the recorders' and input parrots' connections
    np.testing.assert_array_equal(fast, listed)


def test_nest_threads_give_the_same_run(nest):
    rng = np.random.default_rng(5)
    net = small_convnet(rng, "host")
    x = rng.normal(size=(30, 8, 8, 1)).astype("float32")
    one = get("spinnaker").run(net, x, simulator="nest")
    two = get("spinnaker").run(net, x, simulator="nest", threads=2)
    assert one.output_spikes.sum() > 0
    np.testing.assert_array_equal(one.output_spikes, two.output_spikes)
    np.testing.assert_array_equal(one.spike_counts, two.spike_counts)
    with pytest.raises(ValueError, match="threads must be at least 1, got 0"):
        get("spinnaker").run(net, x, simulator="nest", threads=0)


@pytest.mark.parametrize("max_population", [None, 40])
def test_exported_script_runs_on_nest(nest, tmp_path, max_population):
    """``max_population``: the script's limit lowered, so that the 192-neuron source is
    built as 5 PyNN populations and the 48-neuron pool as 2."""
    rng = np.random.default_rng(4)
    net = small_convnet(rng)
    x = rng.normal(size=(10, 8, 8, 1)).astype("float32")
    folder = get("spinnaker").export(net, tmp_path / "export", x=x)
    assert sorted(p.name for p in folder.iterdir()) == [
        "export.json", "inputs.npz", "network.h5", "network.npz", "run.py"
    ]  # fmt: skip
    if max_population:
        script = (folder / "run.py").read_text()
        limit = f"MAX_POPULATION = {sp.MAX_POPULATION:_}"
        assert limit in script
        (folder / "run.py").write_text(script.replace(limit, f"MAX_POPULATION = {max_population}"))
    subprocess.run(
        [sys.executable, str(folder / "run.py"), "--simulator", "nest", "--predictions", "p.npy"],
        check=True, capture_output=True, cwd=tmp_path, timeout=300,
    )  # fmt: skip
    reference = simulate.run(net, x)
    np.testing.assert_array_equal(np.load(tmp_path / "p.npy"), reference.predictions)


def test_exported_script_labels_pieces_as_whetstone_does(monkeypatch):
    """The standalone run.py names its populations as ``pynn.Pieces`` does."""
    path = Path(sp.__file__).parents[1] / "templates" / "run_spinnaker.py"
    spec = importlib.util.spec_from_file_location("exported_run", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    assert script.MAX_POPULATION == sp.MAX_POPULATION
    monkeypatch.setattr(script, "MAX_POPULATION", 40)
    monkeypatch.setattr(plan, "MAX_POPULATION", 40)
    for size in (40, 90):
        labels = [script.piece_label("input", lo, hi, size) for lo, hi in script.pieces(size)]
        made = pynn.Pieces.build("input", size, lambda lo, hi, label: label).parts
        assert labels == made
    assert labels == ["input[0:40]", "input[40:80]", "input[80:90]"]


# ---------------------------------------------------------------- sPyNNaker virtual board


@pytest.fixture(scope="module")
def spynnaker():
    return pytest.importorskip("pyNN.spiNNaker")


def test_virtual_board_mapping_reports_cores_and_chips(spynnaker):
    rng = np.random.default_rng(5)
    w = rng.normal(size=(20, 300)).astype("float32")
    w[0, :] = 1e-7  # rounds to zero in 16 bits
    stages = [_dense("enc", 4, 20, rng), Stage("big", "dense", (20,), (300,), w),
              _dense("out", 300, 10, rng, 0.1)]  # fmt: skip
    net = SpikingNetwork((4,), stages)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        report = get("spinnaker").map(net, neurons_per_core=100, precision_warning=0.0)
    big = report["populations"]["big"]
    assert (big["cores"], big["neurons_per_core"], big["longest_row"]) == (3, 100, 100)
    assert report["cores"] == 5 and report["chips"] >= 1 and report["boards"] == 1
    assert any("16-bit weights" in str(w.message) for w in caught)


def test_virtual_board_run_gives_fixed_point_predictions(spynnaker):
    rng = np.random.default_rng(6)
    net = small_convnet(rng)
    x = rng.normal(size=(20, 8, 8, 1)).astype("float32")
    result = get("spinnaker").run(net, x, simulator="spinnaker")
    np.testing.assert_array_equal(result.predictions, sp.fixed_point_run(net, x)[0])
    assert result.info["mapping"]["cores"] >= 4
    assert "fixed-point" in result.info["predictions_from"]


def test_unplaceable_network_passes_on_spynnakers_reason(spynnaker):
    rng = np.random.default_rng(7)
    net = SpikingNetwork((2,), [_dense("enc", 2, 4, rng), _dense("wide", 4, 2000, rng)])
    with pytest.raises(sp.MappingError, match="could not map"):
        get("spinnaker").map(net, neurons_per_core=1, width=8, height=8)


# ---------------------------------------------------------------- real MNIST


@pytest.mark.slow
@pytest.mark.parametrize("name", ["dense_mnist", "conv_mnist", "resnet_mnist"])
def test_real_mnist_nest_agrees_and_maps(nest, spynnaker, data_dir, name):
    from whetstone import datasets

    net = trained_network(name)
    _, (x, y) = datasets.load("mnist", data_dir)
    n = 1000 if name == "dense_mnist" else 200  # the conv net runs at ~5 images/s on NEST
    x, y = x[:n], y[:n]
    reference = simulate.run(net, x)
    result = get("spinnaker").run(net, x, simulator="nest")
    differ = result.predictions != reference.predictions
    assert differ.mean() <= 0.001 and not (differ & ~reference.tie_mask).any()
    report = get("spinnaker").map(net, x[:10])
    assert report["cores"] > 0 and report["chips"] > 0
