"""The fast simulator path equals its oracle (``mode="batch"``) bit for bit.

Spikes, ties and synaptic operations, on random networks (the shared strategy: chains
and DAGs; dense, conv of rank 1 and 2 with strides, padding, dilation and per-position
bias, OR-pools, host and binary input, weights on a 1/4 grid for exact ties), with one
chunk or many, kernel calls over several chunks, one worker thread or several, each
stage on the event kernels or the BLAS (forced either way, or measured).
"""

import contextlib
from unittest import mock

import numpy as np
import pytest
from _helpers import cases, inputs, networks
from hypothesis import given, settings
from hypothesis import strategies as st
from threadpoolctl import threadpool_info

from whetstone import events, simulate
from whetstone.geometry import one_blas_thread
from whetstone.network import SpikingNetwork, Stage

FIELDS = ("predictions", "output_spikes", "scores", "spike_counts", "ties", "sample_ties",
          "decoder_ties", "tie_mask", "synaptic_operations", "ann_macs", "latency",
          "sample_spikes")  # fmt: skip

choices = st.sampled_from(["measured", "events", "blas"])
"""How each stage picks its product in a run large enough to measure: by timing, or forced."""


def assert_same(net, x, dtype="float32", threads=None):
    fast = simulate.run(net, x, dtype=dtype, threads=threads)
    oracle = simulate.run(net, x, "batch", dtype)
    for name in FIELDS:
        np.testing.assert_array_equal(getattr(fast, name), getattr(oracle, name), err_msg=name)
    return fast


def run_same(net, x, dtype="float32", threads=None, chunk=1 << 20, group=256, choice="measured"):
    """:func:`assert_same` with the oracle's chunks near ``chunk`` values, ``group`` samples
    per kernel call at least, and every run measured (``choice``: the measurement's outcome)."""
    with contextlib.ExitStack() as stack:
        stack.enter_context(mock.patch.object(simulate, "_CHUNK_VALUES", chunk))
        stack.enter_context(mock.patch.object(simulate, "_FAST_SAMPLES", group))
        stack.enter_context(mock.patch.object(simulate, "_MEASURE_SAMPLES", 1))  # n >= 4
        stack.enter_context(mock.patch.dict(simulate._CHOICES, clear=True))  # measured anew
        if choice != "measured":
            forced = choice == "events"
            faster = mock.patch.object(simulate._Plan, "_events_faster", lambda *a: forced)
            stack.enter_context(faster)
        return assert_same(net, x, dtype, threads)


@settings(max_examples=120, deadline=None)
@given(net=networks(), n=st.integers(1, 41),
       seed=st.integers(0, 1000), chunk=st.sampled_from([1, 300, 1 << 20]),
       group=st.sampled_from([1, 7, 256]), threads=st.integers(1, 3), choice=choices,
       dtype=st.sampled_from(["float32", "float32", "float64"]))  # fmt: skip
def test_fast_equals_the_oracle_on_random_chains(
    net, n, seed, chunk, group, threads, choice, dtype
):
    run_same(net, inputs(net, n, seed), dtype, threads, chunk, group, choice)


@settings(max_examples=60, deadline=None)
@given(net=networks(dag=True), n=st.sampled_from([1, 2, 3, 5, 17, 33]), seed=st.integers(0, 99),
       chunk=st.sampled_from([1, 300, 1 << 20]), group=st.sampled_from([1, 3, 256]),
       threads=st.integers(1, 3), choice=choices)  # fmt: skip
def test_fast_equals_the_oracle_on_random_dags(net, n, seed, chunk, group, threads, choice):
    run_same(net, inputs(net, n, seed), "float32", threads, chunk, group, choice)


@settings(max_examples=40, deadline=None)
@given(net=networks(dag=True), threads=st.integers(1, 3))
def test_an_empty_batch_is_refused_by_every_path(net, threads):
    x = np.zeros((0, *net.input_shape), np.float32)
    for mode in ("fast", "batch", "timestep"):
        with pytest.raises(ValueError, match="x is an empty batch"):
            simulate.run(net, x, mode, threads=threads if mode == "fast" else None)


@settings(max_examples=100, deadline=None)
@given(net=networks(dag=True), n=st.integers(1, 20), seed=st.integers(0, 1000),
       dtype=st.sampled_from(["float32", "float64"]))  # fmt: skip
def test_fast_preactivations_are_the_oracle_bits(net, n, seed, dtype):
    """Stage by stage, ``W s + b - theta`` from real input or bool spikes is the oracle's,
    to the last bit (the event kernels' sums, real or 0/1, where their blocks exist)."""
    dtype = np.dtype(dtype)
    x = inputs(net, n, seed)
    outputs = [None] * len(net.stages)
    for layer, stage in enumerate(net.stages):
        s = net.stage_input(layer, x, outputs)
        expected = simulate.preactivation(stage, s, dtype) - np.asarray(stage.threshold, dtype)
        spikes = s.dtype == bool or (layer > 0 and -1 not in stage.sources)
        got = simulate._fast_diff(stage, s.astype(bool) if spikes else s, dtype)
        assert got.dtype == dtype
        np.testing.assert_array_equal(got, expected, err_msg=stage.name)
        outputs[layer] = simulate._step(stage, s, dtype)[0]


@settings(max_examples=40, deadline=None)
@given(case=cases(ranks=(0, 2), dilation=False, dag=True), threads=st.integers(1, 2))
def test_fast_equals_the_oracle_on_the_back_end_networks(case, threads):
    net, x = case
    run_same(net, x, threads=threads, chunk=200, group=2)


def test_ties_are_counted_like_the_oracle():
    """Weights on a 1/4 grid and binary input: many exact ties, on several threads."""
    rng = np.random.default_rng(0)
    grid = lambda *shape: (np.round(rng.normal(0, 0.6, shape) * 4) / 4).astype("float32")  # noqa: E731
    conv = Stage("c", "conv", (16, 16, 2), (16, 16, 4), grid(3, 3, 2, 4),
                 np.zeros(4, np.float32), 0.5, padding="same")  # fmt: skip
    pool = Stage("p", "pool", (16, 16, 4), (8, 8, 4), pool_size=(2, 2), strides=(2, 2))
    dense = Stage("d", "dense", (8, 8, 4), (6,), grid(256, 6), None, 1.0)
    net = SpikingNetwork((16, 16, 2), [conv, pool, dense], input_encoding="binary")
    x = (rng.uniform(size=(301, 16, 16, 2)) < 0.3).astype(np.float32)
    for choice in ("events", "blas"):
        result = run_same(net, x, threads=2, chunk=2000, group=16, choice=choice)
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


def blas_threads() -> set[int]:
    """Threads of NumPy's BLAS (another library's, loaded later, is not ours to limit)."""
    return {
        pool["num_threads"]
        for pool in threadpool_info()
        if pool["user_api"] == "blas" and "numpy" in pool["filepath"]
    }


def test_threads_use_every_cpu_with_the_blas_on_one_thread_each(monkeypatch):
    assert simulate._threads() == min(len(simulate.os.sched_getaffinity(0)), 8)
    before, seen = blas_threads(), []
    blas_product = simulate._blas_product

    def spy(*args, **kwargs):
        seen.append(blas_threads())
        return blas_product(*args, **kwargs)

    monkeypatch.setattr(simulate, "_blas_product", spy)
    rng = np.random.default_rng(3)
    net = SpikingNetwork((20,), [Stage("d", "dense", (20,), (5,), rng.normal(size=(20, 5)))])
    x = rng.normal(size=(40, 20)).astype(np.float32)
    with mock.patch.object(simulate._Plan, "_events_faster", lambda *a: False):
        fast = run_same(net, x, threads=2, chunk=20, group=1, choice="blas")
    assert fast.threads == 2 and seen and all(used <= {1} for used in seen)
    assert blas_threads() == before  # the BLAS has its own threads again


def test_a_stage_measured_slower_on_events_runs_on_the_blas():
    rng = np.random.default_rng(1)
    net = SpikingNetwork((20,), [Stage("d", "dense", (20,), (5,), rng.normal(size=(20, 5)))],
                         input_encoding="binary")  # fmt: skip
    plan = simulate._Plan(net, np.dtype("float32"))
    x = rng.uniform(size=(40, 20)) < 0.5
    with mock.patch.object(simulate._Plan, "_events_faster", lambda *a: False):
        plan.measuring = True
        plan.step(0, x, [40])
    assert plan.events == [False] and plan.uses_blas


def test_a_shape_without_a_blocking_uses_the_blas():
    """Where no candidate blocking reproduces the BLAS (another CPU's kernel), the stage
    runs on the BLAS itself, and the result is still the oracle's."""
    rng = np.random.default_rng(2)
    net = SpikingNetwork((20,), [Stage("d", "dense", (20,), (5,), rng.normal(size=(20, 5)))],
                         input_encoding="binary")  # fmt: skip
    x = (rng.uniform(size=(40, 20)) < 0.5).astype(np.float32)
    with mock.patch.object(events, "blocks", lambda *a, **k: None):
        plan = simulate._Plan(net, np.dtype("float32"))
        plan.measuring = True
        plan.step(0, x > 0, [40])
        fast = simulate.run(net, x)
    assert plan.events == [False] and plan.uses_blas
    oracle = simulate.run(net, x, mode="batch")
    np.testing.assert_array_equal(fast.output_spikes, oracle.output_spikes)


def test_an_error_in_a_worker_thread_reaches_the_caller():
    net = SpikingNetwork((1,), [Stage("d", "dense", (1,), (1,), np.ones((1, 1), np.float32))])

    def broken(*args):
        raise RuntimeError("worker failed")

    with (
        mock.patch.object(simulate, "_CHUNK_VALUES", 1),
        mock.patch.object(simulate, "_FAST_SAMPLES", 1),
        mock.patch.object(simulate._Plan, "step", broken),
        pytest.raises(RuntimeError, match="worker failed"),
    ):
        simulate.run(net, np.zeros((5, 1), np.float32), threads=2)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize(("mode", "threads"), [("fast", 1), ("fast", 2), ("batch", None),
                                               ("timestep", None)])  # fmt: skip
def test_a_non_finite_input_in_any_chunk_is_refused_by_every_path(bad, mode, threads):
    """The fast path's workers check their own chunks (the last one here); the error is the
    same as every other path's."""
    net = SpikingNetwork((3,), [Stage("d", "dense", (3,), (2,), np.ones((3, 2), np.float32))])
    x = np.full((40, 3), 0.5, np.float32)
    x[-1, 1] = bad
    with (
        mock.patch.object(simulate, "_CHUNK_VALUES", 20),  # chunks of 10 samples
        mock.patch.object(simulate, "_FAST_SAMPLES", 1),
        pytest.raises(ValueError, match=r"^run: x holds NaN or Inf values; pass finite inputs"),
    ):
        simulate.run(net, x, mode=mode, threads=threads)


SHAPES = [(7, 9, 5), (60, 288, 64), (33, 700, 64), (18, 3136, 256), (5, 3136, 16)]
REAL = [(784 * 18, 9, 32), (1024 * 14, 27, 32), (1000, 784, 256)]  # the models' encoders


@pytest.mark.parametrize("shape", SHAPES + REAL)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("real", [False, True])
def test_the_event_kernels_reproduce_this_blas(shape, dtype, real):
    """The blocking measured for shapes like the models' exists here and gives the BLAS's
    bits, on 0/1 and on real inputs (each term one fused multiply-add, or a
    rounded product then an add).

    Which shapes have one depends on the CPU's OpenBLAS kernel: on one (GEMM_Q 320) every
    shape here has one; on an AVX-512 one (GEMM_Q 128) the small-row 0/1 products have none;
    on Zen (Haswell kernels, paired tiles) every float32 shape has one, and the float64
    products of the small shapes none.
    Those stages use the BLAS itself (exact: ``test_a_shape_without_a_blocking_uses_the_blas``),
    so the kernel check is skipped there, saying so.
    """
    m, k, n = shape
    order = events.blocks(m, k, n, dtype, real)
    if order is None:
        pytest.skip(f"no candidate blocking reproduces this CPU's BLAS for {shape}: BLAS used")
    rng = np.random.default_rng(k)
    s = rng.uniform(size=(m, k)) < 0.3
    if real:
        s = (s * rng.uniform(size=(m, k))).astype(dtype)
    w = rng.normal(size=(k, n)).astype(dtype)
    with one_blas_thread():  # the reference's BLAS
        expected = s.astype(dtype) @ w
    np.testing.assert_array_equal(events.product(s, w, order), expected)


@settings(max_examples=20, deadline=None)
@given(st.integers(1, 9), st.integers(1, 40), st.integers(1, 20), st.integers(1, 3),
       st.integers(0, 2**16))  # fmt: skip
def test_an_int32_index_rounds_each_product_before_adding(m, k, n, nblocks, seed):
    """An int32 block index (a BLAS without fused multiply-adds): each term ``v * w``
    rounds, then adds to its block's sum in input order; the blocks add in order."""
    rng = np.random.default_rng(seed)
    s = (rng.normal(size=(m, k)) * (rng.uniform(size=(m, k)) < 0.6)).astype("float32")
    w = (rng.normal(size=(k, n)) * 2.0 ** rng.integers(-10, 10, (k, 1))).astype("float32")
    block = np.sort(rng.integers(0, nblocks, k)).astype(np.int32)
    block = np.unique(block, return_inverse=True)[1].astype(np.int32)  # blocks 0, 1, ...
    sums = np.zeros((block[-1] + 1, m, n), np.float32)
    for j in range(k):
        sums[block[j]] += s[:, j : j + 1] * w[j]  # NumPy: a rounded product, then the add
    for b in range(1, len(sums)):
        sums[0] += sums[b]
    np.testing.assert_array_equal(events.product(s, w, events.Order.of(block)), sums[0])


def test_split_follows_openblas():
    assert events.split(640, 320, 4, 0) == (320, 320)
    assert events.split(641, 320, 4, 0) == (320, 160, 161)
    assert sum(events.split(5000, 256, 8, 1)) == 5000


@pytest.mark.parametrize("strides", [(1, 1), (1, 2)])
def test_a_conv_whose_taps_span_blocks_equals_the_oracle(strides):
    """3 x 3 x 64 inputs per output: the BLAS sums them in two blocks, which split some
    kernel rows (their taps then go one by one, the others in one add)."""
    rng = np.random.default_rng(2)
    out = (6, 6 // strides[1], 8)
    conv = Stage("c", "conv", (6, 6, 64), out, rng.normal(size=(3, 3, 64, 8)).astype("f4"),
                 rng.normal(size=8).astype("f4"), 0.5, strides=strides, padding="same")  # fmt: skip
    net = SpikingNetwork((6, 6, 64), [conv], input_encoding="binary")
    order = events.blocks(40 * 36 // strides[1], 576, 8, "float32")
    assert order is not None and order.count >= 2  # two blocks (more where GEMM_Q is small)
    x = (rng.uniform(size=(40, 6, 6, 64)) < 0.3).astype("f4")
    expected = simulate.preactivation(conv, x) - np.float32(0.5)
    np.testing.assert_array_equal(simulate._fast_diff(conv, x.astype(bool), "float32"), expected)
    run_same(net, x, threads=2, group=8)


@pytest.fixture(autouse=True)
def fresh_choices():
    """Each test measures its own choices of event kernel or BLAS (kept per process)."""
    with mock.patch.dict(simulate._CHOICES, clear=True):
        yield


def paired_reference(s, w, block, paired):
    """Sums as a paired BLAS kernel makes them: per block, in input order, a paired output's
    terms in two accumulators (a block's first ``8 * (len // 8)`` terms alternating, the
    rest in the first), added; the blocks added in order."""
    lanes = events.Order.of(block).lanes
    out = np.zeros((len(s), w.shape[1]), np.float32)
    for i in range(len(s)):
        for b in range(block[-1] + 1):
            sums = np.zeros((2, w.shape[1]), np.float32)  # even (and tail), odd
            flat = np.zeros(w.shape[1], np.float32)  # in order
            for j in np.flatnonzero(block == b):
                if s[i, j]:
                    sums[lanes[j]] += w[j]
                    flat += w[j]
            out[i] += np.where(paired[i], sums[0] + sums[1], flat)
    return out


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 6), st.integers(1, 40), st.integers(1, 12), st.integers(1, 3),
       st.integers(0, 2**16))  # fmt: skip
def test_paired_outputs_sum_even_and_odd_terms_apart(m, k, n, nblocks, seed):
    """An order with paired outputs (as OpenBLAS's Zen kernels make on part of their tiles):
    the kernels sum those outputs' even and odd terms apart, every other output in order.
    Some rows pair every output (their paired weights are ``w`` itself)."""
    rng = np.random.default_rng(seed)
    s = rng.uniform(size=(m, k)) < 0.6
    w = (rng.normal(size=(k, n)) * 2.0 ** rng.integers(-12, 12, (k, 1))).astype(np.float32)
    block = np.unique(np.sort(rng.integers(0, nblocks, k)), return_inverse=True)[1]
    paired = rng.uniform(size=(m, n)) < 0.4
    paired[rng.uniform(size=m) < 0.3] = True
    order = events.Order.of(block.astype(np.int64), paired)
    expected = paired_reference(s, w, block, paired)
    np.testing.assert_array_equal(events.product(s, w, order), expected)
    stage = Stage("d", "dense", (k,), (n,), w, None, 0.0)
    spikes, _ = events.step(s, stage, w, order, np.zeros(n, np.float32), 1e-6)
    np.testing.assert_array_equal(spikes, expected >= 0)


def test_stacked_orders_keep_each_parts_paired_rows():
    block = np.zeros(16, np.int64)
    a = events.Order.of(block, np.array([[True, False, False], [False, False, False]]))
    b = events.Order.of(block, np.array([[False, True, True]]))
    both = events.stacked([a, b])
    assert both.pattern.tolist() == [0, -1, 1]
    assert [list(c[c >= 0]) for c in both.columns] == [[0], [1, 2]]
    assert events.stacked([a, events.Order.of(np.ones(16, np.int64))]) is None  # other blocks


def test_the_event_or_blas_choice_is_measured_once_per_stage_shape():
    """A second run of the same stage shapes (chunks of two sizes) measures nothing: no
    timing, and no first chunk run alone to time it on."""
    rng = np.random.default_rng(4)
    net = SpikingNetwork((30,), [Stage("d", "dense", (30,), (6,), rng.normal(size=(30, 6)))],
                         input_encoding="binary")  # fmt: skip
    x = (rng.uniform(size=(47, 30)) < 0.4).astype(np.float32)  # the last chunk is smaller
    measuring = []
    chunk = simulate._Plan.chunk

    def spy(plan, *args):
        measuring.append(plan.measuring)
        return chunk(plan, *args)

    with (
        mock.patch.object(simulate, "_CHUNK_VALUES", 60),  # chunks of 10 samples
        mock.patch.object(simulate, "_FAST_SAMPLES", 1),
        mock.patch.object(simulate, "_MEASURE_SAMPLES", 2),
        mock.patch.object(simulate._Plan, "chunk", spy),
        mock.patch.object(
            events,
            "blocks",
            lambda m, k, n, dtype, real=False: events.Order.of(np.zeros(k, np.int64), None, m),
        ),  # an order on any CPU
    ):
        first = simulate.run(net, x, threads=2)
        assert measuring == [True] + [False] * 4
        measuring.clear()
        second = simulate.run(net, x, threads=2)
    assert measuring == [False] * 5
    np.testing.assert_array_equal(first.output_spikes, second.output_spikes)


def test_the_choice_of_kernel_times_each_candidate_on_every_worker_at_once():
    """The event kernel and the BLAS are timed as the workers run them: on all the run's
    threads at the same time, the best of runs taken in turn."""
    import threading
    import time

    barrier = threading.Barrier(2, timeout=5)  # passes only if both calls run together
    calls = []

    def both_at_once():
        calls.append(threading.current_thread().name)
        barrier.wait()

    simulate._on_threads(both_at_once, 2)()
    assert len(calls) == 2 and all(name.startswith("whetstone-simulate") for name in calls)
    assert simulate._on_threads(both_at_once, 1) is both_at_once
    assert simulate._faster(lambda: None, lambda: time.sleep(0.002))
    assert not simulate._faster(lambda: time.sleep(0.002), lambda: None)
