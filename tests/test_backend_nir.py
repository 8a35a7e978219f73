"""NIR back end: exact round trips, refusals, and an independent reader (snnTorch).

The independent-reader tests run snnTorch's NIR import, here or in ``.venv-nir``
(``whetstone.backends.nir.snntorch_reader`` has the install lines); they skip when
neither has it.
"""

from __future__ import annotations

import itertools
import os
import tempfile
from pathlib import Path

import h5py
import numpy as np
import pytest
from _helpers import ROOT, inputs, networks, trained_network
from hypothesis import HealthCheck, assume, given, settings

from whetstone import backends
from whetstone.network import (
    KeyDecoder,
    NetworkFileError,
    SpikingNetwork,
    Stage,
    output_length,
)
from whetstone.simulate import run

nir = pytest.importorskip("nir")
wn = pytest.importorskip("whetstone.backends.nir")
reader = pytest.importorskip("whetstone.backends.nir.snntorch_reader")
READER_PYTHON = os.environ.get("WHETSTONE_NIR_READER_PYTHON", ROOT / ".venv-nir/bin/python")
needs_reader = pytest.mark.skipif(
    reader.reader_available(READER_PYTHON) is None,
    reason="snnTorch's NIR reader not installed (see whetstone.backends.nir.snntorch_reader)",
)


def independent_scores(path, x: np.ndarray, steps: int) -> np.ndarray:
    """snnTorch's outputs for ``x`` (NIR layout), here or in ``.venv-nir``."""
    return reader.independent_scores(path, x, steps, READER_PYTHON)


# ---------------------------------------------------------------- random networks


def _same_run(a: SpikingNetwork, b: SpikingNetwork, x: np.ndarray) -> None:
    ra, rb = run(a, x), run(b, x)
    np.testing.assert_array_equal(ra.output_spikes, rb.output_spikes)
    np.testing.assert_array_equal(ra.predictions, rb.predictions)
    np.testing.assert_array_equal(ra.spike_counts, rb.spike_counts)


def _export(net: SpikingNetwork, folder) -> Path:
    try:
        return wn.export(net, Path(folder) / "net.nir")
    except ValueError as error:  # some non-square or dilated windows: refused
        assert "has no NIR equivalent" in str(error)
        assume(False)


# ---------------------------------------------------------------- round trips


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(networks())
def test_round_trip_is_exact(net):
    with tempfile.TemporaryDirectory() as folder:
        back = wn.load(_export(net, folder))
    assert back == net
    _same_run(net, back, inputs(net))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(networks())
def test_graph_alone_simulates_identically(net):
    """Without the whetstone metadata (as another tool would write it) the import
    is an equivalent network: same spikes and predictions."""
    try:
        graph = wn.to_graph(net)
    except ValueError:
        assume(False)
    del graph.metadata["whetstone"]
    back = wn.from_graph(graph)
    _same_run(net, back, inputs(net))


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])  # fmt: skip
@given(networks(dag=True))
def test_dag_round_trip_is_exact(net):
    """A DAG is written with one linear node per edge into each neuron node (NIR sums
    a node's inputs) and a Delay node on each delayed edge; it reads back exactly, and
    without the metadata as an equivalent network."""
    assume(not net.is_chain)
    with tempfile.TemporaryDirectory() as folder:
        back = wn.load(_export(net, folder))
    assert back == net
    _same_run(net, back, inputs(net))
    graph = wn.to_graph(net)
    delays = [n for n, node in graph.nodes.items() if type(node).__name__ == "Delay"]
    assert len(delays) == sum(1 for s in net.stages for d in s.delays if d)
    del graph.metadata["whetstone"]
    _same_run(net, wn.from_graph(graph), inputs(net))


def _tie_net() -> SpikingNetwork:
    w = np.array([[1.0, 1.0, 1.0]], np.float32)
    return SpikingNetwork((1,), [Stage("d", "dense", (1,), (3,), w, None, 0.5)])


@pytest.mark.parametrize("value", [0.0, -0.0, 0.25])
def test_position_bias_equal_everywhere_keeps_its_shape(value, tmp_path):
    """A position bias with one value everywhere is written as a channel bias (and, where
    it is zero, no leak); reading restores its shape, so the network reads back equal.
    Found by hypothesis on a DAG (a zero position bias on a conv before a merge)."""
    kernel = np.ones((1, 1, 1, 2), np.float32)
    bias = np.full((2, 3, 2), value, np.float32)
    conv = Stage("c", "conv", (2, 3, 1), (2, 3, 2), kernel, bias, 0.5)
    net = SpikingNetwork((2, 3, 1), [conv])
    back = wn.load(_export(net, tmp_path))
    assert back == net and back.stages[0].bias.shape == (2, 3, 2)
    _same_run(net, back, inputs(net))


def test_thresholds_are_one_float32_below_and_restored():
    net = _tie_net()
    lif = wn.to_graph(net).nodes["d_lif"]
    assert lif.v_threshold.dtype == np.float32
    assert np.all(lif.v_threshold == np.nextafter(np.float32(0.5), np.float32(0)))
    assert np.all(lif.tau == wn.DT) and np.all(lif.r == 1) and not np.any(lif.v_leak)
    assert wn.from_graph(wn.to_graph(net)).stages[0].threshold == 0.5


def test_conv_layout_and_flatten_order():
    rng = np.random.default_rng(1)
    kernel = rng.normal(size=(3, 3, 2, 4)).astype(np.float32)
    conv = Stage("c", "conv", (5, 5, 2), (3, 3, 4), kernel, None, strides=(2, 2), padding="same")
    dense = Stage("d", "dense", (3, 3, 4), (2,), rng.normal(size=(36, 2)).astype(np.float32))
    graph = wn.to_graph(SpikingNetwork((5, 5, 2), [conv, dense]))
    node = graph.nodes["c"]
    assert tuple(node.input_type["input"]) == (2, 5, 5)
    assert tuple(node.output_type["output"]) == (4, 3, 3)
    np.testing.assert_array_equal(node.weight, kernel.transpose(3, 2, 0, 1))
    assert tuple(node.padding) == (1, 1)
    assert tuple(graph.nodes["d_flatten"].output_type["output"]) == (36,)
    # column (c, h, w) of the NIR weight is row (h, w, c) of whetstone's
    column = graph.nodes["d"].weight[:, 1 * 9 + 2 * 3 + 0]
    np.testing.assert_array_equal(column, dense.weights[2 * 12 + 0 * 4 + 1])


@pytest.mark.parametrize(
    "window, strides, dilation",
    [((2, 2), (1, 1), (1, 1)), ((2, 3), (2, 2), (1, 1)), ((1, 3), (1, 1), (1, 1)),
     ((3, 3), (2, 1), (2, 2)), ((2, 2), (2, 2), (1, 1))],
)  # fmt: skip
def test_asymmetric_and_non_square_windows_are_exact(window, strides, dilation):
    """Keras 'same' with an even kernel pads more after; nir 1.0 infers Conv2d shapes
    from the kernel height alone. Zero taps make both exact."""
    rng = np.random.default_rng(2)
    shape = (7, 6, 2)
    out = tuple(
        output_length(n, k, s, d, "same")
        for n, k, s, d in zip(shape[:2], window, strides, dilation, strict=True)
    )
    geometry = {"strides": strides, "dilation": dilation, "padding": "same"}
    conv = Stage("c", "conv", shape, (*out, 3), rng.normal(size=(*window, 2, 3)), **geometry)
    pool = Stage(
        "p", "pool", conv.output_shape, conv.output_shape, pool_size=(2, 2), padding="same"
    )
    net = SpikingNetwork(shape, [conv, pool])
    graph = wn.to_graph(net)
    assert graph.nodes["c"].weight.shape[2] == graph.nodes["c"].weight.shape[3]
    assert tuple(graph.nodes["c"].output_type["output"]) == (3, *out)
    back = wn.from_graph(graph)
    assert back == net
    _same_run(net, back, inputs(net, 32))


def test_key_decoder_is_the_vote():
    key = np.array([[1, 0, 1], [0, 1, 1]])
    net = SpikingNetwork((3,), [Stage("d", "dense", (3,), (3,), np.eye(3))], KeyDecoder(key))
    node = wn.to_graph(net).nodes["decoder"]
    spikes = np.array([1.0, 0.0, 1.0])
    np.testing.assert_array_equal(
        node.weight @ spikes + node.bias, net.decoder.scores(spikes[None])[0]
    )


def test_backend_registry_run_and_build():
    backend = backends.get("nir")
    assert backend.is_available()
    net = SpikingNetwork((1,), [Stage("d", "dense", (1,), (2,), np.array([[1.0, -1.0]]))])
    assert isinstance(backend.build(net), nir.NIRGraph)
    x = np.array([[0.5], [-0.5], [0.25]], np.float32)
    result = backend.run(net, x)
    np.testing.assert_array_equal(result.predictions, run(net, x).predictions)
    assert result.info["file_bytes"] > 0


# ---------------------------------------------------------------- refusals and files


def test_unknown_node_type_is_named(tmp_path):
    path = wn.export(_tie_net(), tmp_path / "net.nir")
    with h5py.File(path, "r+") as f:
        del f["node/nodes/d_lif/type"]
        f["node/nodes/d_lif"].create_dataset("type", data="Mystery", dtype=h5py.string_dtype())
    with pytest.raises(wn.UnsupportedGraphError, match=r"'d_lif' is a Mystery"):
        wn.load(path)


def _graph_with(neuron) -> object:
    nodes = {
        "input": nir.Input(np.array([1])),
        "lin": nir.Linear(np.array([[1.0], [2.0]], np.float32)),
        "spike": neuron,
        "output": nir.Output(np.array([2])),
    }
    return nir.NIRGraph(nodes, [("input", "lin"), ("lin", "spike"), ("spike", "output")])


def test_neurons_with_memory_are_refused(tmp_path):
    cases = {
        "IF": nir.IF(np.ones(2), np.ones(2)),
        "tau": nir.LIF(np.full(2, 0.01), np.ones(2), np.zeros(2), np.ones(2)),
    }
    graph = _graph_with(cases["IF"])
    with pytest.raises(wn.UnsupportedGraphError, match=r"'spike' is a IF"):
        wn.from_graph(graph)
    graph = _graph_with(cases["tau"])
    graph.metadata = {"dt": 1e-4}
    with pytest.raises(wn.UnsupportedGraphError, match=r"'spike' \(LIF\).*tau == dt"):
        wn.from_graph(graph)
    path = tmp_path / "if.nir"
    nir.write(path, _graph_with(nir.IF(np.ones(2), np.ones(2))))
    with pytest.raises(wn.UnsupportedGraphError, match=r"if.nir: node 'spike' is a IF"):
        wn.load(path)


def test_lif_layers_must_share_one_step():
    """Without a dt in the metadata, the first LIF's tau is the step; others must match."""

    def lif(tau):
        return nir.LIF(np.full(2, tau), np.ones(2), np.zeros(2), np.full(2, 0.5))

    nodes = {
        "input": nir.Input(np.array([1])),
        "a": nir.Linear(np.ones((2, 1), np.float32)),
        "a_lif": lif(1e-3),
        "b": nir.Linear(np.ones((2, 2), np.float32)),
        "b_lif": lif(2e-3),
        "output": nir.Output(np.array([2])),
    }
    names = list(nodes)
    graph = nir.NIRGraph(nodes, list(itertools.pairwise(names)))
    with pytest.raises(wn.UnsupportedGraphError, match=r"'b_lif'.*tau=0.002.*dt=0.001"):
        wn.from_graph(graph)


def test_threshold_nodes_import():
    graph = _graph_with(nir.Threshold(np.full(2, np.float32(0.75))))
    net = wn.from_graph(graph)
    assert net.stages[0].threshold == float(np.nextafter(np.float32(0.75), np.float32(1)))
    spikes = run(net, np.array([[0.375], [0.5]])).output_spikes
    np.testing.assert_array_equal(spikes, [[0, 0], [0, 1]])


@pytest.mark.parametrize(
    "damage, reason",
    [
        (lambda p: p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2]), "not a readable"),
        (lambda p: p.write_bytes(b"not hdf5 at all"), "not a readable"),
        (lambda p: p.unlink(), "not a readable"),
    ],
)
def test_damaged_files_are_refused(tmp_path, damage, reason):
    path = wn.export(_tie_net(), tmp_path / "net.nir")
    damage(path)
    with pytest.raises(NetworkFileError, match=reason) as error:
        wn.load(path)
    assert str(path) in str(error.value)


def test_hdf5_without_a_graph_is_refused(tmp_path):
    path = tmp_path / "other.h5"
    with h5py.File(path, "w") as f:
        f["x"] = 1
    with pytest.raises(NetworkFileError, match=r"other\.h5"):
        wn.load(path)


def test_failed_export_leaves_nothing(tmp_path, monkeypatch):
    def broken(buffer, graph):
        buffer.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(nir, "write", broken)
    with pytest.raises(OSError, match="disk full"):
        wn.export(_tie_net(), tmp_path / "net.nir")
    assert list(tmp_path.iterdir()) == []


def test_reshape_into_a_convolution_is_refused():
    dense = Stage("d", "dense", (4,), (8,), np.ones((4, 8)))
    conv = Stage("c", "conv", (2, 2, 2), (2, 2, 1), np.ones((1, 1, 2, 1)))
    with pytest.raises(ValueError, match=r"'c'.*no Reshape"):
        wn.to_graph(SpikingNetwork((4,), [dense, conv]))


# ---------------------------------------------------------------- independent reader


def _tie_conv_net() -> SpikingNetwork:
    """Integer weights and quarter-step inputs: many pre-activations equal theta."""
    rng = np.random.default_rng(3)
    conv = Stage("c", "conv", (6, 6, 2), (6, 6, 3), rng.integers(-1, 2, size=(3, 3, 2, 3)),
                 rng.integers(-1, 2, size=3) / 4, padding="same")  # fmt: skip
    pool = Stage("p", "pool", (6, 6, 3), (3, 3, 3), pool_size=(2, 2), strides=(2, 2))
    dense = Stage("d", "dense", (3, 3, 3), (8,), rng.integers(-1, 2, size=(27, 8)) / 2)
    return SpikingNetwork((6, 6, 2), [conv, pool, dense], KeyDecoder(rng.integers(0, 2, (4, 8))))


@needs_reader
def test_snntorch_reproduces_spikes_and_ties(tmp_path):
    """snnTorch's reader, stepped for the latency, gives the reference's key votes,
    exact ties included (they fire, as ``>=`` says)."""
    net = _tie_conv_net()
    x = inputs(net, 40, seed=4)
    reference = run(net, x)
    assert reference.ties.sum() > 0
    path = wn.export(net, tmp_path / "net.nir")
    scores = independent_scores(path, wn.nir_input(net, x), net.latency)
    np.testing.assert_array_equal(scores, reference.scores)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["dense_mnist", "conv_mnist", "resnet_mnist"])
def test_sharpened_mnist_round_trip_and_reader(name, data_dir, tmp_path):
    from whetstone import datasets

    net = trained_network(name)
    _, (x, _) = datasets.load("mnist", data_dir)
    path = wn.export(net, tmp_path / f"{name}.nir")
    back = wn.load(path)
    assert back == net
    reference, trip = run(net, x), run(back, x)
    np.testing.assert_array_equal(trip.predictions, reference.predictions)
    np.testing.assert_array_equal(trip.output_spikes, reference.output_spikes)
    if reader.reader_available(READER_PYTHON) is None:
        pytest.skip("round trip checked; snnTorch's NIR reader not installed")
    if not net.is_chain:
        pytest.skip("round trip checked; snnTorch's NIR importer has no Delay node")
    scores = independent_scores(path, wn.nir_input(net, x[:200]), net.latency)
    np.testing.assert_array_equal(scores.argmax(axis=1), reference.predictions[:200])
