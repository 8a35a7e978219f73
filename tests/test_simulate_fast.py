"""The fast simulator path equals its oracle (``mode="batch"``) bit for bit.

Spikes, ties and synaptic operations, on random networks: dense, conv (rank 1 and 2,
strides, padding, dilation, per-position bias), OR-pools and pools with other
thresholds, host and binary input, weights on a coarse grid (exact ties) or not, one
chunk or many, one thread or several.
"""

from unittest import mock

import numpy as np
import pytest
from _helpers import cases, geometry
from hypothesis import given, settings
from hypothesis import strategies as st

from whetstone import events, simulate
from whetstone.network import KeyDecoder, ReadoutDecoder, SpikingNetwork, Stage, output_length

FIELDS = ("predictions", "output_spikes", "scores", "spike_counts", "ties", "sample_ties",
          "decoder_ties", "tie_mask", "synaptic_operations", "ann_macs", "latency")  # fmt: skip


def _values(rng, shape, grid: bool) -> np.ndarray:
    """Normal values, or multiples of 1/4 (sums of them hit thresholds exactly: ties)."""
    values = rng.normal(0, 0.6, shape)
    return np.round(values * 4) / 4 if grid else values


def _window_stage(draw, rng, name, shape, grid):
    """A conv or pool stage on ``shape`` (the geometry of tests/test_network.py), or None."""
    _, _, k, s, d, padding, _, c_out = draw(geometry)
    rank = len(shape) - 1
    out = tuple(output_length(n, k, s, d, padding) for n in shape[:-1])
    if min(out) == 0:
        return None
    window = dict(strides=(s,) * rank, padding=padding, dilation=(d,) * rank)
    if draw(st.booleans()):
        threshold = draw(st.sampled_from([0.5, 0.5, 1.0, 2.0]))  # 1, 2: whole counts, ties
        return Stage(name, "pool", shape, (*out, shape[-1]), threshold=threshold,
                     pool_size=(k,) * rank, **window)  # fmt: skip
    bias_shape = draw(st.sampled_from([(c_out,), (*out, c_out)]))
    kernel = _values(rng, (*(k,) * rank, shape[-1], c_out), grid)
    threshold = draw(st.sampled_from([0.5, 0.0, 0.25]))
    bias = _values(rng, bias_shape, grid)
    return Stage(name, "conv", shape, (*out, c_out), kernel, bias, threshold, **window)


@st.composite
def chains(draw):
    """Random chains: window stages (conv/pool) on a rank-1 or rank-2 input, then dense."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    grid = draw(st.booleans())
    rank = draw(st.integers(1, 2))
    shape = (*(draw(st.integers(3, 9)) for _ in range(rank)), draw(st.integers(1, 3)))
    stages, current = [], shape
    for i in range(draw(st.integers(0, 3))):
        stage = _window_stage(draw, rng, f"w{i}", current, grid)
        if stage is None:
            break
        stages.append(stage)
        current = stage.output_shape
    width = int(np.prod(current))
    for i in range(draw(st.integers(0 if stages else 1, 2))):
        n_out = draw(st.integers(1, 12))
        weights = _values(rng, (width, n_out), grid)
        bias = _values(rng, (n_out,), grid) if draw(st.booleans()) else None
        threshold = draw(st.sampled_from([0.5, 0.0]))
        stages.append(Stage(f"d{i}", "dense", current, (n_out,), weights, bias, threshold))
        current, width = (n_out,), n_out
    decoder = draw(st.sampled_from(["none", "key", "readout"]))
    decoder = {
        "none": None,
        "key": KeyDecoder(rng.integers(0, 2, (3, width))),
        "readout": ReadoutDecoder(rng.normal(size=(width, 3)), rng.normal(size=3), "softmax"),
    }[decoder]
    encoding = draw(st.sampled_from(["host", "binary"]))
    return SpikingNetwork(shape, stages, decoder, encoding)


def _inputs(net: SpikingNetwork, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 1, (n, *net.input_shape)).astype(np.float32)
    if net.input_encoding == "binary":
        return (x < rng.uniform(0.05, 0.5)).astype(np.float32)
    return np.round(x * 4) / 4  # on the grid too, so that host stages can tie


def assert_same(net, x, dtype="float32", threads=None):
    fast = simulate.run(net, x, dtype=dtype, threads=threads)
    oracle = simulate.run(net, x, "batch", dtype)
    for name in FIELDS:
        np.testing.assert_array_equal(getattr(fast, name), getattr(oracle, name), err_msg=name)
    return fast


@settings(max_examples=150, deadline=None)
@given(net=chains(), n=st.integers(1, 40), seed=st.integers(0, 1000),
       chunk_values=st.sampled_from([1, 300, 1 << 20]), threads=st.integers(1, 3),
       dtype=st.sampled_from(["float32", "float32", "float64"]))  # fmt: skip
def test_fast_equals_the_oracle_on_random_chains(net, n, seed, chunk_values, threads, dtype):
    x = _inputs(net, n, seed)
    with mock.patch.object(simulate, "_CHUNK_VALUES", chunk_values):  # 1: a sample per chunk
        assert_same(net, x, dtype, threads)


@settings(max_examples=100, deadline=None)
@given(net=chains(), n=st.integers(1, 20), seed=st.integers(0, 1000),
       dtype=st.sampled_from(["float32", "float64"]))  # fmt: skip
def test_fast_preactivations_are_the_oracle_bits(net, n, seed, dtype):
    """Stage by stage, ``W s + b - theta`` from bool spikes is the oracle's, to the last bit."""
    dtype = np.dtype(dtype)
    s = _inputs(net, n, seed)
    for layer, stage in enumerate(net.stages):
        expected = simulate.preactivation(stage, s, dtype) - np.asarray(stage.threshold, dtype)
        got = simulate._fast_diff(stage, s if layer == 0 else s.astype(bool), dtype)
        assert got.dtype == dtype
        np.testing.assert_array_equal(got, expected, err_msg=stage.name)
        s, _ = simulate._step(stage, s, dtype)


@settings(max_examples=40, deadline=None)
@given(case=cases(ranks=(0, 2), dilation=False))
def test_fast_equals_the_oracle_on_the_back_end_networks(case):
    net, x = case
    with mock.patch.object(simulate, "_CHUNK_VALUES", 200):
        assert_same(net, x)


def test_ties_are_counted_like_the_oracle():
    """Weights on a 1/4 grid and binary input: many exact ties, on several threads."""
    rng = np.random.default_rng(0)
    conv = Stage("c", "conv", (16, 16, 2), (16, 16, 4), _values(rng, (3, 3, 2, 4), True),
                 np.zeros(4, np.float32), 0.5, padding="same")  # fmt: skip
    pool = Stage("p", "pool", (16, 16, 4), (8, 8, 4), pool_size=(2, 2), strides=(2, 2))
    dense = Stage("d", "dense", (8, 8, 4), (6,), _values(rng, (256, 6), True), None, 1.0)
    net = SpikingNetwork((16, 16, 2), [conv, pool, dense], input_encoding="binary")
    x = (rng.uniform(size=(300, 16, 16, 2)) < 0.3).astype(np.float32)
    with mock.patch.object(simulate, "_CHUNK_VALUES", 2000):
        result = assert_same(net, x, threads=2)
    assert result.ties[0] > 0 and result.ties[2] > 0 and result.ties[1] == 0


@pytest.mark.parametrize("width", [1, 7, 1023, 1024, 3000])
def test_counts_per_sample(width):
    rng = np.random.default_rng(width)
    a = rng.uniform(size=(5, width)) < 0.3
    expected = np.count_nonzero(a, axis=1)
    assert simulate._counts(a).tolist() == simulate._counts(a.astype("float32")).tolist()
    assert simulate._counts(a).tolist() == expected.tolist()


def test_modes_and_the_refusal_name_them():
    net = SpikingNetwork((1,), [Stage("d", "dense", (1,), (1,), np.ones((1, 1), np.float32))])
    runs = [simulate.run(net, [[0.5], [0.2]], mode) for mode in ("fast", "batch", "timestep")]
    assert [r.output_spikes.ravel().tolist() for r in runs] == [[1, 0]] * 3
    with pytest.raises(ValueError, match="mode must be 'fast' or 'timestep' \\(or 'batch'"):
        simulate.run(net, [[0.5]], "event")
    for threads in (0, 1.5, "2"):
        with pytest.raises(ValueError, match="threads must be None or a whole number >= 1"):
            simulate.run(net, [[0.5]], threads=threads)


def test_threads_default_to_one_unless_blas_runs_on_one(monkeypatch):
    for name in simulate._BLAS_THREADS:
        monkeypatch.delenv(name, raising=False)
    assert simulate._threads() == 1
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "1")
    assert 1 <= simulate._threads() <= 8


def test_an_error_in_a_worker_thread_reaches_the_caller():
    net = SpikingNetwork((1,), [Stage("d", "dense", (1,), (1,), np.ones((1, 1), np.float32))])

    def broken(*args):
        raise RuntimeError("worker failed")

    with (
        mock.patch.object(simulate, "_CHUNK_VALUES", 1),
        mock.patch.object(simulate, "_fast_step", broken),
        pytest.raises(RuntimeError, match="worker failed"),
    ):
        simulate.run(net, np.zeros((5, 1), np.float32), threads=2)


SHAPES = [(7, 9, 5), (60, 288, 64), (33, 700, 64), (18, 3136, 256), (5, 3136, 16)]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_the_event_kernels_reproduce_this_blas(shape, dtype):
    """The blocking measured for shapes like the models' exists here and gives the BLAS's bits.

    (Some other shapes, e.g. 20 outputs, have none on OpenBLAS 0.3.23: they use the BLAS.)
    """
    m, k, n = shape
    block = events.blocks(m, k, n, dtype)
    assert block is not None, "no candidate blocking reproduces this BLAS: the fast path falls back"
    rng = np.random.default_rng(k)
    s = rng.uniform(size=(m, k)) < 0.3
    w = rng.normal(size=(k, n)).astype(dtype)
    np.testing.assert_array_equal(events.product(s, w, block), s.astype(dtype) @ w)


def test_split_follows_openblas():
    assert events.split(640, 320, 4, 0) == (320, 320)
    assert events.split(641, 320, 4, 0) == (320, 160, 161)
    assert sum(events.split(5000, 256, 8, 1)) == 5000
