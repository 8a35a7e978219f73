"""Reference simulator: the exact definition of what a SpikingNetwork computes.

Stage ``l`` computes ``s_l[t] = H(W_l s_{l-1}[t-1] + b_l - theta_l)`` with
``H(x) = 1 if x >= 0`` and memoryless neurons; ``s_{-1}[t]`` is the input presented at
step ``t``. A stage with several sources (a DAG) reads their spikes concatenated, each
``1 + delay`` steps old (``SpikingNetwork.stage_input``); the delays align the paths, so
every stage sees one input's spikes. The arithmetic is float32 (like Keras). Three paths
give the same spikes:

* ``mode="batch"``: the whole stack in one pass per batch (inputs and outputs matched
  trivially), written plainly; the oracle the other paths are tested against;
* ``mode="fast"`` (default): the same arithmetic on the same chunks, bit for bit, with
  the spikes kept as one byte each: a dense or conv stage adds only the terms of its
  nonzero inputs, spikes or pixels (:mod:`whetstone.events`, in the BLAS's own
  summation order, so the same sums), where that is measured faster than the BLAS, and
  the chunks are spread over threads;
* ``mode="timestep"``: the pipelined network, a new input every step, each edge
  carrying its source's spikes of ``1 + delay`` steps before, each output matched to its
  input by the latency (the longest path).

Pre-activations within ``TIE_TOLERANCE`` of the threshold are *ties*: the only places
where two correct back ends (or Keras) may disagree. They are counted per stage and
flagged per sample, never hidden.

Example:
    >>> import numpy as np
    >>> from whetstone.network import Stage, SpikingNetwork, KeyDecoder
    >>> w = np.array([[1.0, -1.0]], "float32")
    >>> net = SpikingNetwork((1,), [Stage("d", "dense", (1,), (2,), w)],
    ...                      KeyDecoder([[1, 0], [0, 1]]))
    >>> result = run(net, np.array([[0.9], [-0.9]], "float32"))
    >>> result.predictions.tolist(), result.output_spikes.tolist()
    ([0, 1], [[1, 0], [0, 1]])
"""

from __future__ import annotations

import functools
import itertools
import math
import os
import time
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from whetstone import events
from whetstone.geometry import im2col, one_blas_thread, pad, preactivation, taps
from whetstone.network import ReadoutDecoder, SpikingNetwork, Stage, check_finite

__all__ = ["TIE_TOLERANCE", "SimulationResult", "preactivation", "run", "stage_spikes"]

TIE_TOLERANCE = 1e-6
"""A neuron whose ``|pre-activation - threshold|`` is below this is a tie."""

_CHUNK_VALUES = 1 << 20  # about 4 MiB of float32 im2col per chunk: stays in cache
_MAX_CHUNK = 512  # samples per chunk at most: several chunks to share among threads
_FAST_SAMPLES = 256  # samples per call of the fast path's kernels, at least
_MEASURE_SAMPLES = 64  # samples on which each stage times its event kernel against the BLAS
_MEASURE_REPEATS = 5  # runs of each, in turn (the best counts)
_CHOICES: dict[tuple, bool] = {}
"""Per stage geometry, input kind, dtype and worker threads: whether its event
kernel was measured faster than the BLAS, in this process (measured once: either gives
the same bits, so the choice changes only the time)."""


@dataclass
class SimulationResult:
    """What :func:`run` returns (``n`` samples, ``L`` stages).

    Attributes:
        predictions: ``(n,)`` predicted classes (decoder; without one, the first
            spiking output neuron).
        output_spikes: ``(n, *output_shape)`` uint8 spikes of the last stage.
        scores: ``(n, classes)`` decoder scores (key votes or readout logits), or None.
        spike_counts: ``(L,)`` spikes emitted by each stage, summed over the samples.
        ties: ``(L,)`` tie count per stage, summed over the samples.
        sample_ties: ``(n, L)`` tie count per sample and stage.
        sample_spikes: ``(n, L)`` spikes per sample and stage (``spike_counts`` summed).
        decoder_ties: samples whose two best decoder scores are within the tolerance
            (for a key vote: equal votes, which every decoder resolves to the lowest
            class, so they cannot cause a disagreement; for a readout: near-equal logits).
        tie_mask: ``(n,)`` True where a sample met a tie in any stage or the decoder.
        synaptic_operations: ``(n,)`` on-chip synaptic events per sample: each input
            spike of a stage that runs on chip times its fan-out in that stage.
        ann_macs: multiply-accumulates of one inference of the same network as an
            ANN (dense and conv stages, in-bounds taps, plus a readout).
        latency: steps from an input to its output spikes (the longest path).
        threads: worker threads that ran the samples (more than one only on the fast path).
    """

    predictions: np.ndarray
    output_spikes: np.ndarray
    scores: np.ndarray | None
    spike_counts: np.ndarray
    ties: np.ndarray
    sample_ties: np.ndarray
    decoder_ties: int
    tie_mask: np.ndarray
    synaptic_operations: np.ndarray
    ann_macs: int
    latency: int
    sample_spikes: np.ndarray | None = None
    threads: int = 1

    def first(self, n: int) -> SimulationResult:
        """The result of the first ``n`` samples alone (as if only they had been run).

        Example:
            >>> from whetstone.network import Stage, SpikingNetwork
            >>> net = SpikingNetwork((1,), [Stage("d", "dense", (1,), (2,), [[1.0, -1.0]])])
            >>> run(net, [[1.0], [-1.0], [1.0]]).first(2).spike_counts.tolist()
            [2]
        """
        decoder_tie = _decoder_tie(self.scores[:n]) if self.scores is not None else None
        return SimulationResult(
            predictions=self.predictions[:n],
            output_spikes=self.output_spikes[:n],
            scores=None if self.scores is None else self.scores[:n],
            spike_counts=self.sample_spikes[:n].sum(axis=0),
            ties=self.sample_ties[:n].sum(axis=0),
            sample_ties=self.sample_ties[:n],
            decoder_ties=0 if decoder_tie is None else int(decoder_tie.sum()),
            tie_mask=self.tie_mask[:n],
            synaptic_operations=self.synaptic_operations[:n],
            ann_macs=self.ann_macs,
            latency=self.latency,
            sample_spikes=self.sample_spikes[:n],
            threads=self.threads,
        )

    @property
    def num_samples(self) -> int:
        return len(self.predictions)

    @property
    def spikes_per_inference(self) -> np.ndarray:
        """Mean spikes per sample, per stage."""
        return self.spike_counts / max(self.num_samples, 1)

    @property
    def synops_per_inference(self) -> float:
        """Mean synaptic operations per sample."""
        return float(self.synaptic_operations.mean()) if self.num_samples else 0.0


# ---------------------------------------------------------------- stage arithmetic


def _im2col_runs(x: np.ndarray, stage: Stage, dtype) -> np.ndarray:
    """``geometry.im2col`` (the same matrix), copying the last axis's taps and channels at once.

    Several times faster with several channels; the plain gather otherwise (one channel,
    dilation along the last axis, an empty output).
    """
    c_in, k, s = x.shape[-1], stage.window[-1], stage.strides[-1]
    out = stage.output_shape[:-1]
    if c_in == 1 or stage.dilation[-1] != 1 or 0 in out:
        return im2col(x, stage, dtype)
    x = pad(x, stage)
    cols = np.empty((len(x), *out, math.prod(stage.window[:-1]), k, c_in), dtype)
    for t, tap in enumerate(itertools.product(*(range(n) for n in stage.window[:-1]))):
        axes = zip(tap, stage.dilation[:-1], out[:-1], stage.strides[:-1], strict=True)
        view = x[(slice(None), *(slice(a * d, a * d + (m - 1) * n + 1, n) for a, d, m, n in axes))]
        windows = sliding_window_view(view, k, axis=-2)[..., : (out[-1] - 1) * s + 1 : s, :, :]
        cols[..., t, :, :] = np.swapaxes(windows, -1, -2)
    return cols.reshape(-1, math.prod(stage.window) * c_in)


def _step(stage: Stage, s: np.ndarray, dtype) -> tuple[np.ndarray, np.ndarray]:
    """Spikes ``H(pre - theta)`` (0/1 in ``dtype``) and per-sample tie counts of one stage."""
    diff = preactivation(stage, s, dtype)
    diff -= np.asarray(stage.threshold, dtype)  # in place: the arrays are large
    spikes = (diff >= 0).astype(dtype)  # the next stage computes in dtype anyway
    np.abs(diff, out=diff)
    ties = np.count_nonzero((diff < TIE_TOLERANCE).reshape(len(s), -1), axis=1)
    return spikes, ties


# ---------------------------------------------------------------- bookkeeping


class _Tally:
    """Per-sample spike, tie and synaptic-operation counts of a network."""

    def __init__(self, net: SpikingNetwork, n: int):
        self.on_chip_input = net.input_encoding == "binary"
        # float32 holds these integer sums exactly (each is below the synapse count, < 2**24)
        self.fan_out = [stage.fan_out_map().ravel().astype(np.float32) for stage in net.stages]
        self.same_fan_out = [f.size > 0 and f.min() == f.max() for f in self.fan_out]
        self.whole_fan_out = [f.astype(np.int64) for f in self.fan_out]
        self.spikes = np.zeros((n, len(net.stages)), np.int64)
        self.ties = np.zeros((n, len(net.stages)), np.int64)
        self.synops = np.zeros(n, np.float64)
        self.threads = 1  # worker threads that ran the samples

    def add(self, index, layer: int, s_in: np.ndarray, spikes, ties) -> None:
        if layer > 0 or self.on_chip_input:
            flat = s_in.reshape(len(s_in), -1).astype(np.float32, copy=False)
            self.synops[index] += flat @ self.fan_out[layer]
        self.spikes[index, layer] += spikes.reshape(len(spikes), -1).sum(axis=1, dtype=np.int64)
        self.ties[index, layer] += ties

    def add_counted(self, index, layer: int, s_in: np.ndarray, spikes, ties) -> None:
        """:meth:`add` for 0/1 arrays of any dtype, counting instead of summing floats.

        Where every input drives the same number of neurons (dense, non-overlapping
        pools) the synaptic operations are that number times the input spikes.
        """
        if layer > 0 or self.on_chip_input:
            flat = s_in.reshape(len(s_in), -1)
            if self.same_fan_out[layer]:
                self.synops[index] += _counts(flat) * float(self.fan_out[layer][0])
            elif events.AVAILABLE:  # whole numbers: the same sums in any order
                self.synops[index] += events.weighted_counts(flat, self.whole_fan_out[layer])
            else:
                self.synops[index] += flat.astype(np.float32) @ self.fan_out[layer]
        self.spikes[index, layer] += _counts(spikes)
        self.ties[index, layer] += ties


def _counts(a: np.ndarray) -> np.ndarray:
    """Nonzero entries of each sample of ``a`` (int64), without a slow casting reduction.

    Example:
        >>> _counts(np.array([[1, 0, 1], [0, 0, 0]], "float32")).tolist()
        [2, 0]
    """
    flat = (a if a.dtype == bool else a != 0).reshape(len(a), -1)
    if events.AVAILABLE:
        return events.row_counts(flat)
    if flat.shape[1] >= 1024:  # whole-row counts are several times faster
        return np.array([np.count_nonzero(row) for row in flat], np.int64)
    return np.add.reduce(flat.view(np.uint8), axis=1, dtype=np.uint32).astype(np.int64)


def _ann_macs(net: SpikingNetwork) -> int:
    macs = sum(s.num_synapses for s in net.stages if s.kind != "pool")
    if isinstance(net.decoder, ReadoutDecoder):
        macs += net.decoder.weights.size
    return int(macs)


def _chunk_size(net: SpikingNetwork) -> int:
    """Samples per batch so that the largest im2col matrix stays near ``_CHUNK_VALUES``."""
    per_sample = max(
        s.num_neurons // s.output_shape[-1] * s.fan_in if s.kind != "dense" else s.num_neurons
        for s in net.stages
    )
    return max(1, min(_MAX_CHUNK, _CHUNK_VALUES // max(per_sample, 1)))


# ---------------------------------------------------------------- the two paths


def _forward(net: SpikingNetwork, x: np.ndarray, step, record) -> np.ndarray:
    """Every stage in order on one batch (each sample's own spikes on every edge: the
    delays only align the pipeline); ``record(layer, input, spikes, ties)``. Returns the
    last stage's spikes; a stage's spikes are dropped once its last reader has run."""
    outputs: list = [None] * len(net.stages)
    last = net.last_reads()
    for layer, stage in enumerate(net.stages):
        s = net.stage_input(layer, x, outputs)
        spikes, ties = step(layer, s)
        record(layer, s, spikes, ties)
        outputs[layer] = spikes
        for i in stage.sources:
            if i >= 0 and last[i] == layer:
                outputs[i] = None
    return outputs[-1]


def _run_batch(net: SpikingNetwork, x: np.ndarray, dtype, tally: _Tally) -> np.ndarray:
    """The oracle: stage after stage on cache-sized chunks of the batch, one at a time."""
    outputs = np.empty((len(x), *net.output_shape), np.uint8)
    size = _chunk_size(net)
    for start in range(0, len(x), size):
        index = slice(start, start + size)
        outputs[index] = _forward(
            net, x[index], lambda layer, s: _step(net.stages[layer], s, dtype),
            lambda layer, s, spikes, ties, i=index: tally.add(i, layer, s, spikes, ties),
        )  # fmt: skip
    return outputs


def _fast_diff(stage: Stage, s: np.ndarray, dtype) -> np.ndarray:
    """``W s + b - theta`` with the arithmetic of :func:`preactivation`, ``s`` real or bool.

    The same sums (operands, order and roundings), so the same bits; spikes arrive as
    one byte each and become ``dtype`` only where gathered. (The fast path's fallback
    without Numba; the fused :func:`events.step` computes the same.)
    """
    s = s.reshape(len(s), *stage.input_shape)
    if stage.kind == "pool":  # sums of 0/1: exact in any order
        views = taps(s, stage)
        diff = next(views).astype(dtype)
        for view in views:
            diff += view
    else:
        kernel = stage.weights.astype(dtype, copy=False)
        product = _event_product(stage, s, kernel)
        diff = _blas_product(stage, s, kernel) if product is None else product
        diff = diff.reshape(len(s), *stage.output_shape)
        if stage.bias is not None:
            diff += stage.bias.astype(dtype, copy=False).reshape(
                stage.bias.shape if stage.kind != "dense" else stage.output_shape
            )
    diff -= np.asarray(stage.threshold, dtype)
    return diff


def _full_bias(stage: Stage, dtype) -> np.ndarray:
    """The stage's bias, one value per neuron (zeros without one), in ``dtype``."""
    if stage.bias is None:
        return np.zeros(stage.num_neurons, dtype)
    shape = stage.bias.shape if stage.kind != "dense" else stage.output_shape
    bias = np.broadcast_to(stage.bias.astype(dtype, copy=False).reshape(shape), stage.output_shape)
    return np.ascontiguousarray(bias).reshape(-1)


def _blas_product(stage: Stage, s: np.ndarray, kernel: np.ndarray, out=None) -> np.ndarray:
    """``W s`` as :func:`preactivation` computes it: one BLAS product (im2col for a conv),
    into ``out`` (``(samples, neurons)``) if given."""
    s = s.reshape(len(s), *stage.input_shape)
    if stage.kind == "dense":
        return np.matmul(s.reshape(len(s), -1).astype(kernel.dtype, copy=False), kernel, out=out)
    rows = None if out is None else out.reshape(-1, kernel.shape[-1])
    cols = _im2col_runs(s, stage, kernel.dtype)
    return np.matmul(cols, kernel.reshape(-1, kernel.shape[-1]), out=rows)


def _event_order(stage: Stage, n: int, real: bool, dtype) -> events.Order | None:
    """The order in which the BLAS sums this stage's product on ``n`` samples, 0/1 or
    ``real`` (see :func:`events.blocks`), or None where the event kernels do not apply (a
    pool, rank above 2, no Numba, a BLAS order they cannot reproduce, a conv with paired
    sums)."""
    if stage.kind == "pool" or not events.AVAILABLE or len(stage.window) > 2:
        return None
    dense = stage.kind == "dense"
    rows = n if dense else n * math.prod(stage.output_shape[:-1])
    inner = stage.fan_in if dense else math.prod(stage.weights.shape[:-1])
    order = events.blocks(rows, inner, stage.output_shape[-1], np.dtype(dtype).name, real)
    return None if order is None or (order.paired and not dense) else order


def _event_product(stage: Stage, s: np.ndarray, kernel: np.ndarray) -> np.ndarray | None:
    """``W s`` adding only the nonzero inputs' terms in the BLAS's order, or None."""
    order = _event_order(stage, len(s), s.dtype != bool, kernel.dtype)
    if order is None:
        return None
    if stage.kind == "dense":
        return events.product(s.reshape(len(s), -1), kernel, order)
    return events.conv_product(s, stage, kernel, order)


class _Plan:
    """What the fast path prepares once per run: each stage's weights and per-neuron bias
    in the run's dtype, and whether its product runs on the event kernels (``events``;
    while ``measuring``, each stage times both and keeps the faster)."""

    def __init__(self, net: SpikingNetwork, dtype, threads: int = 1):
        self.net, self.dtype, self.measuring, self.threads = net, dtype, False, threads
        self.weights = [
            None if s.kind == "pool" else np.ascontiguousarray(s.weights, dtype) for s in net.stages
        ]
        self.biases = [None if s.kind == "pool" else _full_bias(s, dtype) for s in net.stages]
        self.events = [events.AVAILABLE and s.kind != "pool" for s in net.stages]
        self.orders: dict[tuple[int, bool, int], events.Order | None] = {}
        self.paired: dict[int, tuple[events.Order, np.ndarray]] = {}  # per layer, the last
        self._geometry = [(s.kind, s.input_shape, s.output_shape, s.window, s.strides,
                           s.dilation, s.padding) for s in net.stages]  # fmt: skip

    def prepare(self, x: np.ndarray, sizes: list[int]) -> None:
        """Measures each stage's BLAS order (:func:`_event_order`) for chunks of ``sizes``
        once, before the workers start."""
        if not events.AVAILABLE:
            return

        def step(layer: int, s: np.ndarray):
            for n in set(sizes):
                self._order(layer, s.dtype != bool, n)
            spikes, ties = _step(self.net.stages[layer], s.astype(self.dtype), self.dtype)
            return spikes != 0, ties

        _forward(self.net, x[:1], step, lambda *_: None)

    def unmeasured(self) -> bool:
        """Whether a stage with an event kernel has no measured choice yet (after
        :meth:`prepare`)."""
        return any(
            order is not None and self._choice_key(layer, real) not in _CHOICES
            for (layer, real, _), order in self.orders.items()
        )

    def _choice_key(self, layer: int, real: bool) -> tuple:
        """The key of stage ``layer``'s choice in :data:`_CHOICES` (not its chunks'
        size: a run's last chunk is smaller, and the choice changes only the time)."""
        return self._geometry[layer], real, self.dtype.name, self.threads

    def _order(self, layer: int, real: bool, n: int) -> events.Order | None:
        key = (layer, real, n)
        if key not in self.orders:
            self.orders[key] = _event_order(self.net.stages[layer], n, real, self.dtype)
        return self.orders[key]

    def step(self, layer: int, s: np.ndarray, parts: list[int]) -> tuple[np.ndarray, np.ndarray]:
        """:func:`_step` of stage ``layer`` with bool spikes out (and in, after the first),
        on consecutive chunks of the oracle of sizes ``parts``.

        An OR-pool (threshold 0.5) of spikes needs no arithmetic: its pre-activation is
        a whole count, so ``count - 0.5`` is never a tie and fires exactly when a spike
        is in the window.
        """
        stage = self.net.stages[layer]
        if stage.kind == "pool" and stage.threshold == 0.5 and s.dtype == bool:
            views = taps(s.reshape(len(s), *stage.input_shape), stage)
            spikes = next(views).copy()
            for view in views:
                spikes |= view
            return spikes, np.zeros(len(s), np.int64)
        if stage.kind == "pool" or not events.AVAILABLE:
            diff = _fast_diff(stage, s, self.dtype)
            spikes = diff >= 0
            near = np.abs(diff, out=diff) < TIE_TOLERANCE
            return spikes, _counts(near) if np.count_nonzero(near) else np.zeros(len(s), np.int64)
        real = s.dtype != bool
        order = self._parts_order(layer, real, parts) if self.events[layer] else None
        if order is not None:
            key = self._choice_key(layer, real)
            if self.measuring and key not in _CHOICES:
                _CHOICES[key] = self._events_faster(layer, s[:_MEASURE_SAMPLES], order)
            self.events[layer] = _CHOICES.get(key, True)
        if order is None or not self.events[layer]:
            self.events[layer] = self.events[layer] and not self.measuring
            return self._blas_step(layer, s, parts)
        w, bias = self.weights[layer], self.biases[layer]
        return events.step(s, stage, w, order, bias, TIE_TOLERANCE, self._paired(layer, order))

    def _paired(self, layer: int, order: events.Order) -> np.ndarray | None:
        """:func:`events.paired_weights` of dense stage ``layer`` for ``order``, gathered
        once per order of the run (the chunks of one size share theirs); None for a conv
        (its orders are never paired)."""
        if self.net.stages[layer].kind != "dense":
            return None
        found = self.paired.get(layer)
        if found is None or found[0].columns is not order.columns:
            found = self.paired[layer] = (order, events.paired_weights(order, self.weights[layer]))
        return found[1]

    def _events_faster(self, layer: int, s: np.ndarray, order: events.Order) -> bool:
        """Whether the event kernel beats the BLAS on ``s`` (see :func:`_faster`), each
        as the workers will run it: on all the run's threads at once, the paired weights
        gathered beforehand."""
        stage, w, bias = self.net.stages[layer], self.weights[layer], self.biases[layer]
        order = order.rows(slice(0, len(s)))  # paired orders are dense: a row per sample
        paired = self._paired(layer, order)  # gathered once, as for the run
        return _faster(
            _on_threads(
                lambda: events.step(s, stage, w, order, bias, TIE_TOLERANCE, paired), self.threads
            ),
            _on_threads(lambda: self._blas_step(layer, s, [len(s)]), self.threads),
        )

    def _parts_order(self, layer: int, real: bool, parts: list[int]) -> events.Order | None:
        """The event kernels' order for all the parts at once, or None.

        A kernel's sums do not depend on the other samples, only on the order of the
        BLAS product of each oracle chunk: where every part has the same blocks, one
        call serves them all, each part's rows with their own paired outputs.
        """
        return events.stacked([self._order(layer, real, n) for n in parts])

    def _blas_step(self, layer: int, s: np.ndarray, parts: list[int]):
        """The BLAS product part by part (each as the oracle's), then the fused finish."""
        stage, bounds = self.net.stages[layer], np.cumsum([0, *parts])
        pre = np.empty((len(s), stage.num_neurons), self.dtype)
        for a, b in itertools.pairwise(bounds):  # each part's product in place: no copy
            _blas_product(stage, s[a:b], self.weights[layer], out=pre[a:b])
        spikes, ties = events.finish(pre, self.biases[layer], stage.threshold, TIE_TOLERANCE)
        return spikes.reshape(len(s), *stage.output_shape), ties

    def chunk(self, x, parts: list[int], start: int, tally: _Tally, outputs) -> None:
        """Oracle chunks of sizes ``parts`` from ``start`` on, at once (their inputs
        checked finite here): their output spikes written to ``outputs``."""
        index = slice(start, start + sum(parts))
        check_finite(x[index])
        outputs[index] = _forward(
            self.net, x[index], lambda layer, s: self.step(layer, s, parts),
            lambda layer, s, spikes, ties: tally.add_counted(index, layer, s, spikes, ties),
        )  # fmt: skip

    @property
    def uses_blas(self) -> bool:
        """Whether a dense or conv stage runs on the BLAS (its threads and ours compete)."""
        stages = zip(self.net.stages, self.events, strict=True)
        return any(s.kind != "pool" and not on for s, on in stages)


def _faster(first, second, repeats: int = _MEASURE_REPEATS) -> bool:
    """Whether ``first()`` runs at least as fast as ``second()``: the best of ``repeats``
    runs each, taken in turn (both see the same load; one noisy run decides nothing).

    Example:
        >>> _faster(lambda: None, lambda: sum(range(100_000)))
        True
    """
    best = [math.inf, math.inf]
    for _ in range(repeats):
        for i, function in enumerate((first, second)):
            started = time.perf_counter()
            function()
            best[i] = min(best[i], time.perf_counter() - started)
    return best[0] <= best[1]


def _on_threads(function, threads: int):
    """``function`` run once on each of ``threads`` workers at the same time (itself where
    one)."""
    if threads == 1:
        return function

    def on_all() -> None:
        for future in [_pool(threads).submit(function) for _ in range(threads)]:
            future.result()

    return on_all


def _threads() -> int:
    """Default worker threads of the fast path: one per CPU this process may use, at most 8."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(cpus or 1, 8))


@functools.cache
def _pool(threads: int) -> ThreadPoolExecutor:
    """The process's pool of ``threads`` workers (kept: starting threads costs milliseconds
    a run, on a busy machine more)."""
    return ThreadPoolExecutor(threads, thread_name_prefix="whetstone-simulate")


def _run_fast(net: SpikingNetwork, x: np.ndarray, dtype, tally: _Tally, threads=None) -> np.ndarray:
    """The chunks of :func:`_run_batch` (so the same sums), a few at a time (at least
    ``_FAST_SAMPLES`` samples: fewer calls, a dense stage's weights reused from cache),
    spread over threads. The kernels, NumPy and BLAS release the GIL; each job writes its
    own rows. The BLAS runs on one thread (as every reference product: see
    :func:`~whetstone.geometry.one_blas_thread`). In a run of four jobs or more, the
    first times each stage's event kernel against the BLAS on a few samples and keeps
    the faster (the same bits either way; measured once per stage shape per process).
    """
    threads = threads or _threads()
    plan = _Plan(net, dtype, threads)
    if net.input_encoding == "binary":
        x = x != 0  # spikes from the start: one byte each, the binary kernels
    outputs = np.empty((len(x), *net.output_shape), np.uint8)
    size = _chunk_size(net)
    sizes = [min(size, len(x) - start) for start in range(0, len(x), size)]
    plan.prepare(x, sizes)
    group = max(1, -(-_FAST_SAMPLES // size))
    jobs = [(sizes[i : i + group], i * size) for i in range(0, len(sizes), group)]
    measure = len(jobs) >= 4 and len(x) >= 4 * _MEASURE_SAMPLES and plan.unmeasured()
    threads = min(threads, max(len(jobs) - measure, 1))
    tally.threads = plan.threads = threads
    if measure:
        plan.measuring = True
        plan.chunk(x, *jobs.pop(0), tally, outputs)
        plan.measuring = False
    if threads == 1:
        for parts, start in jobs:
            plan.chunk(x, parts, start, tally, outputs)
        return outputs
    futures = [_pool(threads).submit(plan.chunk, x, *job, tally, outputs) for job in jobs]
    wait(futures)  # all done (the BLAS stays on one thread until the run returns)
    for future in futures:
        future.result()  # re-raises a worker's error
    return outputs


def _run_timestep(net: SpikingNetwork, x: np.ndarray, dtype, tally: _Tally) -> np.ndarray:
    """Pipelined: input ``i`` enters at step ``i``; stage ``l`` reads each source's spikes of
    ``1 + delay`` steps before and fires for input ``t - depth_l + 1`` at step ``t``; the
    output of input ``i`` leaves at step ``i + latency``."""
    n, depth = len(x), net.latency
    outputs = np.empty((n, *net.output_shape), np.uint8)
    longest = max(d for stage in net.stages for d in stage.delays) + 1
    blank = [np.zeros((1, *stage.output_shape), np.uint8) for stage in net.stages]
    history = [blank] * longest  # history[-1 - d]: every stage's spikes d + 1 steps ago
    zero = np.zeros((1, *x.shape[1:]), x.dtype)
    for t in range(n + depth - 1):
        now = []
        for layer, stage in enumerate(net.stages):
            seen = [None] * len(net.stages)
            for i, d in zip(stage.sources, stage.delays, strict=True):
                if i >= 0:
                    seen[i] = history[-1 - d][i]
            s = net.stage_input(layer, x[t : t + 1] if t < n else zero, seen)
            spikes, ties = _step(stage, s, dtype)
            sample = t - net.depths[layer] + 1  # the input whose wave this stage handles now
            if 0 <= sample < n:
                tally.add([sample], layer, s, spikes, ties)
            now.append(spikes)
        history = [*history[1:], now]
        if t - depth + 1 >= 0:
            outputs[t - depth + 1] = now[-1][0]
    return outputs


_PATHS = {"fast": _run_fast, "batch": _run_batch, "timestep": _run_timestep}


def decode(net: SpikingNetwork, outputs: np.ndarray) -> np.ndarray:
    """The network's own decoding (:meth:`SpikingNetwork.decode`); kept for old callers."""
    return net.decode(outputs)


def _decode(net: SpikingNetwork, outputs: np.ndarray):
    """Predictions, decoder scores (or None) and the samples whose two best scores tie.

    Every decoder decides by the argmax of its scores (a tie to the lowest class), so the
    scores are computed once."""
    flat = outputs.reshape(len(outputs), -1)
    if net.decoder is None:
        return net.decode(flat), None, np.zeros(len(flat), bool)
    scores = net.decoder.scores(flat)
    return scores.argmax(axis=-1), scores, _decoder_tie(scores)


def _decoder_tie(scores: np.ndarray) -> np.ndarray:
    """``(n,)`` True where a sample's two best decoder scores are within the tolerance."""
    if scores.shape[1] < 2:
        return np.zeros(len(scores), bool)
    # best - second < tolerance, where best - score falls as the score rises (rounding is
    # monotonic): at least two scores (the best one itself) within it of the best. Class
    # by class over all samples (a contiguous transpose): NumPy reduces long rows fast.
    by_class = np.ascontiguousarray(scores.T)
    near = (by_class.max(axis=0) - by_class) < TIE_TOLERANCE
    return np.add.reduce(near, axis=0, dtype=np.int64) >= 2


def check_input(net: SpikingNetwork, x, where: str = "run") -> np.ndarray:
    """The network's own input check (:meth:`SpikingNetwork.check_input`); kept for old callers."""
    return net.check_input(x, where)


def run(
    net: SpikingNetwork, x, mode: str = "fast", dtype: str = "float32", threads: int | None = None
) -> SimulationResult:
    """Simulate ``net`` on a batch ``x`` of shape ``(n, *net.input_shape)``.

    Args:
        net: the network.
        x: inputs; real values for ``input_encoding="host"``, 0/1 for ``"binary"``.
        mode: ``"fast"`` (whole stack per batch, the quickest), ``"timestep"``
            (pipelined, one new input per step) or ``"batch"`` (the plain form of
            ``"fast"``, its oracle); all give the same spikes.
        dtype: arithmetic precision, ``"float32"`` (like Keras) or ``"float64"``.
        threads: worker threads of ``mode="fast"``, each on its own chunks; None: one
            per CPU (at most 8). The spikes do not depend on it: every path runs the BLAS
            on one thread (:func:`~whetstone.geometry.one_blas_thread`).

    Example:
        >>> from whetstone.network import Stage, SpikingNetwork
        >>> stage = Stage("d", "dense", (2,), (1,), np.ones((2, 1), "float32"))
        >>> r = run(SpikingNetwork((2,), [stage]), np.array([[0.25, 0.25], [0.5, 0.5]]))
        >>> r.output_spikes.ravel().tolist(), r.ties.tolist(), r.latency
        ([1, 1], [1], 1)
    """
    if mode not in _PATHS:
        raise ValueError(
            f"run: mode must be 'fast' or 'timestep' (or 'batch', the plain path that 'fast' "
            f"is checked against), got {mode!r}."
        )
    if dtype not in ("float32", "float64"):
        raise ValueError(f"run: dtype must be 'float32' or 'float64', got {dtype!r}.")
    if threads is not None and (not isinstance(threads, (int, np.integer)) or threads < 1):
        raise ValueError(f"run: threads must be None or a whole number >= 1, got {threads!r}.")
    x = net.check_input(x, finite=mode != "fast")  # the fast path's workers check their chunks
    tally = _Tally(net, len(x))
    with one_blas_thread():  # the reference's products, on any machine (see preactivation)
        if mode == "fast":
            outputs = _run_fast(net, x, np.dtype(dtype), tally, threads)
        else:
            outputs = _PATHS[mode](net, x, np.dtype(dtype), tally)
    predictions, scores, decoder_tie = _decode(net, outputs)
    return SimulationResult(
        predictions=np.asarray(predictions, np.int64),
        output_spikes=outputs,
        scores=scores,
        spike_counts=tally.spikes.sum(axis=0),
        ties=tally.ties.sum(axis=0),
        sample_ties=tally.ties,
        decoder_ties=int(decoder_tie.sum()),
        tie_mask=(tally.ties.sum(axis=1) > 0) | decoder_tie,
        synaptic_operations=tally.synops,
        ann_macs=_ann_macs(net),
        latency=net.latency,
        sample_spikes=tally.spikes,
        threads=tally.threads,
    )


def stage_spikes(net: SpikingNetwork, x, dtype: str = "float32") -> list[np.ndarray]:
    """Every stage's spikes for a batch ``x``: one ``(n, *stage.output_shape)`` uint8 array each.

    Stage ``l`` of the network fires them ``net.depths[l]`` steps after the input enters (the
    same spikes as :func:`run`, which keeps only the last stage's). Meant for small
    batches (pictures, debugging): it holds every stage's spikes at once.

    Example:
        >>> from whetstone.network import Stage, SpikingNetwork
        >>> stages = [Stage("a", "dense", (1,), (2,), np.array([[1.0, -1.0]], "float32")),
        ...           Stage("b", "dense", (2,), (1,), np.ones((2, 1), "float32"))]
        >>> [s.tolist() for s in stage_spikes(SpikingNetwork((1,), stages), [[0.9]])]
        [[[1, 0]], [[1]]]
    """
    s = net.check_input(x, "stage_spikes")
    spikes: list = [None] * len(net.stages)
    for layer, stage in enumerate(net.stages):
        spikes[layer] = _step(stage, net.stage_input(layer, s, spikes), np.dtype(dtype))[0]
    return [a.astype(np.uint8) for a in spikes]
