"""Event-driven stage products: the reference's own float sums, from nonzero inputs only.

A BLAS product of 0/1 spikes with weights adds, for each output, the weights of the
active inputs one after another in input order, in blocks of the inner dimension that
are summed afterwards (OpenBLAS: blocks of ``GEMM_Q``, the last two halved). The kernels
here add only the weights of active inputs (work in proportion to the synaptic events,
not to the synapses), in the same order and the same blocks, so they give the same bits.
Real inputs (the host encoder's pixels) work alike: each term is one fused multiply-add,
or a rounded product then an add, as the BLAS's kernel does it (measured, see
:func:`blocks`), and a zero input's terms, which add nothing, are skipped.
:func:`step` adds bias and threshold and returns spikes and ties in the same pass.

Some kernels (OpenBLAS's Haswell/Zen SGEMM) also sum part of their tiles in two
accumulators, the block's even and odd terms apart, added at the end; which outputs of
which rows is fixed by the shape and the BLAS's threads, not by the data.

Which blocks and paired tiles the BLAS uses is *measured*, once per product shape, on
weights with a wide spread of magnitudes (where any other order changes the bits):
:func:`blocks` returns the :class:`Order` that reproduces it, or None where no candidate
does (another BLAS); the caller then runs the BLAS itself. The kernels are compiled by
Numba; without Numba :data:`AVAILABLE` is False and the reference uses the BLAS everywhere.

Example:
    >>> import numpy as np
    >>> w = np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]], "float32")
    >>> s = np.array([[1, 0, 1]], bool)
    >>> product(s, w, blocks(1, 3, 2, "float32")).tolist() if AVAILABLE else [[6.0, 8.0]]
    [[6.0, 8.0]]
"""

from __future__ import annotations

import functools
import itertools
from typing import NamedTuple

import numpy as np

from whetstone.geometry import one_blas_thread

try:
    import numba
except ImportError:  # pragma: no cover - numba is a dependency; kept optional for ports
    numba = None

__all__ = [
    "AVAILABLE", "Order", "blocks", "conv_product", "finish", "paired_weights", "product",
    "stacked", "step", "weighted_counts",
]  # fmt: skip

AVAILABLE = numba is not None
"""Whether the compiled kernels exist (Numba importable)."""

_RULES = [(None, 1, 0)] + [
    (q, u, plus)
    for q in (320, 256, 384, 512, 192, 128, 640, 768, 1024)
    for u in (4, 8, 16, 2, 1, 32)
    for plus in (0, 1)
]
"""Candidate blockings ``(GEMM_Q, GEMM_UNROLL_M, +1)``; None: no blocking."""


def split(k: int, q: int | None, u: int, plus: int) -> tuple[int, ...]:
    """Block lengths of an inner dimension ``k`` under OpenBLAS's rule.

    At least ``2q`` left: a block of ``q``; between ``q`` and ``2q``: half of it, rounded
    up to a multiple of ``u``; else the rest.

    Example:
        >>> split(784, 320, 4, 0), split(300, 320, 4, 0), split(10, None, 1, 0)
        ((320, 232, 232), (300,), (10,))
    """
    if q is None:
        return (k,)
    lengths, start = [], 0
    while start < k:
        m = k - start
        if m >= 2 * q:
            m = q
        elif m > q:
            m = ((m + plus) // 2 + u - 1) // u * u
        lengths.append(m)
        start += m
    return tuple(lengths)


def _block_index(lengths: tuple[int, ...]) -> np.ndarray:
    return np.repeat(np.arange(len(lengths)), lengths).astype(np.int64)


PAIRED_UNROLL = 8
"""Terms per pass of a paired kernel's loop: the first ``8 * (len // 8)`` terms of a block
alternate between two accumulators (even positions, odd positions), the rest go to the
first."""


class Order(NamedTuple):
    """How a BLAS sums ``(m, k) @ (k, n)``: where each term goes, for each output.

    ``block`` ``(k,)``: each inner index's block (blocks sum apart, then add in order;
    int32 marks a BLAS that rounds each product before adding). ``lanes`` ``(k,)``: 1
    where a term goes to a paired sum's odd accumulator. ``pattern`` ``(m,)``: per row,
    the row of ``columns`` ``(P, L)`` that lists its paired outputs (padded with -1), or
    -1 where it has none; a paired output's block sum is ``(even terms + tail) + odd
    terms`` (see :data:`PAIRED_UNROLL`).

    Example:
        >>> order = Order.of(np.zeros(10, np.int64), np.array([[True, False], [False, False]]))
        >>> order.lanes.tolist(), order.pattern.tolist(), order.columns.tolist()
        ([0, 1, 0, 1, 0, 1, 0, 1, 0, 0], [0, -1], [[0]])
    """

    block: np.ndarray
    lanes: np.ndarray
    pattern: np.ndarray
    columns: np.ndarray

    @classmethod
    def of(cls, block: np.ndarray, paired: np.ndarray | None = None, m: int = 0) -> Order:
        """The order of ``block``, with the outputs ``paired`` ``(m, n)`` bool (None: no
        output of the ``m`` rows)."""
        if paired is None or not paired.any():
            m = m if paired is None else len(paired)
            return cls(block, _lanes(block), np.full(m, -1), np.zeros((0, 1), np.int64))
        rows, inverse = np.unique(paired, axis=0, return_inverse=True)
        inverse, keep = inverse.ravel(), rows.any(axis=1)
        pattern = np.where(keep[inverse], (np.cumsum(keep) - 1)[inverse], -1)
        rows = rows[keep]
        columns = np.full((len(rows), rows.sum(axis=1).max()), -1, np.int64)
        for r, row in enumerate(rows):
            columns[r, : row.sum()] = np.flatnonzero(row)
        return cls(block, _lanes(block), pattern.astype(np.int64), columns)

    @property
    def paired(self) -> bool:
        """Whether any output's sums are paired."""
        return bool((self.pattern >= 0).any())

    def rows(self, index) -> Order:
        """The order of the rows ``index`` of the product."""
        return self._replace(pattern=self.pattern[index])

    @property
    def count(self) -> int:
        """How many blocks."""
        return int(self.block[-1]) + 1 if len(self.block) else 1


def stacked(orders: list[Order | None]) -> Order | None:
    """One order for products stacked row-wise, or None where their blocks differ.

    Example:
        >>> a = Order.of(np.zeros(8, np.int64), np.array([[True, False]]))
        >>> b = Order.of(a.block, np.array([[False, True], [False, False]]))
        >>> ab = stacked([a, b])
        >>> ab.pattern.tolist(), ab.columns.tolist()
        ([0, 1, -1], [[0], [1]])
    """
    first = orders[0]
    if any(o is None or not np.array_equal(o.block, first.block) for o in orders):
        return None
    if len(orders) == 1:
        return first
    width = max(o.columns.shape[1] for o in orders)
    columns = [np.pad(o.columns, ((0, 0), (0, width - o.columns.shape[1])), constant_values=-1)
               for o in orders]  # fmt: skip
    offsets = np.cumsum([0] + [len(c) for c in columns[:-1]])
    pattern = [
        np.where(o.pattern >= 0, o.pattern + at, -1) for o, at in zip(orders, offsets, strict=True)
    ]
    return first._replace(pattern=np.concatenate(pattern), columns=np.concatenate(columns))


def _lanes(block: np.ndarray) -> np.ndarray:
    """1 for each inner index summed in a paired tile's odd accumulator."""
    starts = np.flatnonzero(np.r_[True, block[1:] != block[:-1]]) if len(block) else []
    lanes = np.zeros(len(block), np.int64)
    for start, stop in itertools.pairwise([*starts, len(block)]):
        alternating = PAIRED_UNROLL * ((stop - start) // PAIRED_UNROLL)
        lanes[start + 1 : start + alternating : 2] = 1
    return lanes


def _paired_outputs(m: int, k: int, n: int, dtype: str) -> np.ndarray:
    """``(m, n)``: True where the BLAS pairs the block sums of that output.

    One product tells: four terms ``big, 1, -big, 1`` (``big`` = 2 ** mantissa bits + 1)
    sum to 1 in order (``big + 1`` rounds to ``big``) and to 2 paired (``0 + 2``).
    """
    if k < PAIRED_UNROLL:
        return np.zeros((m, n), bool)
    big = 2.0 ** (np.finfo(dtype).nmant + 1)
    w = np.zeros((k, n), dtype)
    w[:4] = np.array([big, 1, -big, 1], dtype)[:, None]
    return (np.ones((m, k), dtype) @ w) == 2


@functools.lru_cache(maxsize=512)
def blocks(m: int, k: int, n: int, dtype: str, real: bool = False) -> Order | None:
    """The :class:`Order` of the BLAS's ``(m, k) @ (k, n)`` product of ``dtype``, here.

    Measured on one BLAS thread (as the reference runs it), on 0/1 left operands, or on real ones
    (``real=True``: each term one fused multiply-add, as most BLAS kernels do, or else a
    rounded product then an add, as OpenBLAS's Sapphire Rapids SGEMM does; an index of
    int32 marks the latter). None where no candidate gives the BLAS's bits (or without
    Numba).
    """
    if not AVAILABLE or min(m, k, n) == 0:
        return None
    with one_blas_thread():  # the reference's BLAS
        return _measured_order(m, k, n, dtype, real)


def _measured_order(m: int, k: int, n: int, dtype: str, real: bool) -> Order | None:
    paired = _paired_outputs(m, k, n, dtype)
    rng = np.random.default_rng(k * 7919 + n)
    rows = np.unique(np.r_[0 : min(m, 40), max(m - 40, 0) : m])
    trials = [_trial(rng, m, k, n, dtype, real, rows) for _ in range(-(-_SUMS // (len(rows) * n)))]
    for kind in (np.int64, np.int32) if real else (np.int64,):  # fused, then not
        tried = set()
        for rule in list(_RULES):
            lengths = split(k, *rule)
            if lengths in tried:
                continue
            tried.add(lengths)
            order = Order.of(_block_index(lengths).astype(kind), paired)
            on_rows = order.rows(rows)
            if all(np.array_equal(product(a, w, on_rows), expected) for a, w, expected in trials):
                _RULES.remove(rule)
                _RULES.insert(0, rule)  # most shapes of this process share it: tried first next
                return order
    return None


_SUMS = 2000
"""Sums compared with the BLAS's before a blocking is taken (more trials for small shapes:
a few sums may agree by chance, e.g. with a one-row product, which NumPy hands to gemv)."""


def _trial(rng, m: int, k: int, n: int, dtype: str, real: bool, rows: np.ndarray):
    """Random operands, weights of widely spread magnitudes (where another order changes
    the bits) and the BLAS's product, on ``rows``."""
    w = (rng.normal(size=(k, n)) * 2.0 ** rng.integers(-14, 14, (k, 1))).astype(dtype)
    a = rng.uniform(size=(m, k)) < 0.5
    if real:
        a = (a * rng.normal(size=(m, k)) * 2.0 ** rng.integers(-8, 8, (m, k))).astype(dtype)
    return a[rows], w, (a.astype(dtype) @ w)[rows]


if AVAILABLE:
    _JIT = dict(nogil=True, cache=True, fastmath={"contract"})  # a * w + acc: one FMA, as BLAS

    @numba.njit(**_JIT)
    def _active(s, i, index):  # pragma: no cover - compiled
        """The nonzero inputs of row ``i`` into ``index``; returns how many."""
        count = 0
        for j in range(s.shape[1]):  # without a branch: the pattern is unpredictable
            index[count] = j
            count += s[i, j] != 0
        return count

    @numba.njit(inline="always", **_JIT)
    def _dense_sums(s, i, active, w, block, acc):  # pragma: no cover - compiled
        """Block sums of row ``i`` (its nonzero inputs ``active``) into ``acc``, each term
        ``s[i, j] * w[j]`` (a 0/1 input: exactly ``w[j]``): eight inputs of a block at a
        time (else four, else one), each sum read and written once for them, its terms
        still added one by one in input order. Indexed in two dimensions (a row view per
        input costs more than its adds)."""
        acc[:] = 0
        n = w.shape[1]
        t = 0
        while t < active.size:
            j = active[t]
            b = block[j]
            if t + 7 < active.size and block[active[t + 7]] == b:
                j1, j2, j3 = active[t + 1], active[t + 2], active[t + 3]
                j4, j5, j6, j7 = active[t + 4], active[t + 5], active[t + 6], active[t + 7]
                v0, v1, v2, v3 = s[i, j], s[i, j1], s[i, j2], s[i, j3]
                v4, v5, v6, v7 = s[i, j4], s[i, j5], s[i, j6], s[i, j7]
                for o in range(n):
                    total = acc[b, o]
                    total += v0 * w[j, o]
                    total += v1 * w[j1, o]
                    total += v2 * w[j2, o]
                    total += v3 * w[j3, o]
                    total += v4 * w[j4, o]
                    total += v5 * w[j5, o]
                    total += v6 * w[j6, o]
                    total += v7 * w[j7, o]
                    acc[b, o] = total
                t += 8
            elif t + 3 < active.size and block[active[t + 3]] == b:
                j1, j2, j3 = active[t + 1], active[t + 2], active[t + 3]
                v0, v1, v2, v3 = s[i, j], s[i, j1], s[i, j2], s[i, j3]
                for o in range(n):
                    total = acc[b, o]
                    total += v0 * w[j, o]
                    total += v1 * w[j1, o]
                    total += v2 * w[j2, o]
                    total += v3 * w[j3, o]
                    acc[b, o] = total
                t += 4
            else:
                v0 = s[i, j]
                for o in range(n):
                    acc[b, o] += v0 * w[j, o]
                t += 1

    @numba.njit(inline="always", **_JIT)
    def _lane_sums(s, i, active, w, block, lanes, even_acc, odd_acc, odd):
        # pragma: no cover - compiled
        """Row ``i``'s block sums of a paired tile: the even lane's terms (and the tail) in
        ``even_acc``, the odd lane's in ``odd_acc``, each as :func:`_dense_sums` adds them
        (``active`` is reordered: the even lane's inputs in front; ``odd``: scratch)."""
        evens = 0
        odds = 0
        for j in active:  # without a branch: the lanes alternate with the input
            lane = lanes[j]
            odd[odds] = j
            active[evens] = j
            odds += lane
            evens += 1 - lane
        _dense_sums(s, i, active[:evens], w, block, even_acc)
        _dense_sums(s, i, odd[:odds], w, block, odd_acc)

    @numba.njit(inline="always", **_JIT)
    def _row_sums(s, i, index, w, block, lanes, pattern, columns, whole, paired_w, acc, pair):
        # pragma: no cover - compiled
        """Row ``i``'s sums ``s[i] @ w`` in the BLAS's order (blocks, then its paired
        outputs, see :class:`Order`), returned (a view of ``acc``). Scratch: ``index``
        ``(2, k)``, ``acc`` ``(2, blocks, n)``, ``pair`` ``(2, blocks, L)``."""
        active = index[0, : _active(s, i, index[0])]
        p, sums = pattern[i], acc[0]
        if p >= 0 and whole[p]:  # every output paired: its two lanes only
            _lane_sums(s, i, active, w, block, lanes, sums, acc[1], index[1])
            for b in range(sums.shape[0]):
                _add(sums[b], acc[1, b], 1, True)
            return _total(sums)
        _dense_sums(s, i, active, w, block, sums)
        if p >= 0:  # some outputs paired: their two lanes, then in place of their sums
            _lane_sums(s, i, active, paired_w[p], block, lanes, pair[0], pair[1], index[1])
            for c in range(columns.shape[1]):
                if columns[p, c] >= 0:
                    for b in range(sums.shape[0]):
                        sums[b, columns[p, c]] = pair[0, b, c] + pair[1, b, c]
        return _total(sums)

    @numba.njit(inline="always", **_JIT)
    def _add(acc, w, v, binary):  # pragma: no cover - compiled
        """``acc += w`` (0/1 input) or ``acc += v * w`` (one FMA each), on rows: vectorised."""
        if binary:
            for o in range(acc.size):
                acc[o] += w[o]
        else:
            for o in range(acc.size):
                acc[o] += v * w[o]

    @numba.njit(inline="always", **_JIT)
    def _conv_sums(s, i, w, block, rows, cols, runs, binary, acc):  # pragma: no cover
        """Block sums of sample ``i``'s conv outputs into ``acc`` ``(blocks, oh, ow, c_out)``;
        ``rows[y, dy]`` (``cols[x, dx]``): the output row (column) that input row ``y``
        reaches through tap ``dy``, or -1. ``runs``: see :func:`_runs`; where a run
        applies, the input's whole row of taps is one add."""
        _, height, width, channels = s.shape
        kh, kw = w.shape[0], w.shape[1]
        block_of, reversed_rows = runs
        lines = acc.reshape(acc.shape[0], acc.shape[1], -1)  # (blocks, oh, ow * c_out)
        span = kw * w.shape[3]
        acc[:] = 0
        for y in range(height):  # raster order: each output meets its taps in order
            for x in range(width):
                for c in range(channels):
                    v = s[i, y, x, c]
                    if not v:
                        continue
                    for dy in range(kh):
                        oy = rows[y, dy]
                        if oy < 0:
                            continue
                        b = block_of[dy, c]
                        if b >= 0 and cols[x, 0] >= 0 and cols[x, kw - 1] >= 0:
                            start = cols[x, kw - 1] * w.shape[3]  # taps reach kw outputs in a row
                            _add(
                                lines[b, oy, start : start + span], reversed_rows[dy, c], v, binary
                            )
                            continue
                        for dx in range(kw):
                            ox = cols[x, dx]
                            if ox < 0:
                                continue
                            b = block[(dy * kw + dx) * channels + c]
                            _add(acc[b, oy, ox], w[dy, dx, c], v, binary)

    @numba.njit(inline="always", **_JIT)
    def _total(acc):  # pragma: no cover - compiled
        """The blocks ``acc`` ``(blocks, F)`` added in order into ``acc[0]``, returned (the
        BLAS adds each block's sum to C in turn)."""
        for b in range(1, acc.shape[0]):
            _add(acc[0], acc[b], 1, True)
        return acc[0]

    @numba.njit(inline="always", **_JIT)
    def _fire(pre, bias, theta, tolerance, spikes):  # pragma: no cover - compiled
        """Spikes of a row (``pre + bias - theta >= 0``, two roundings); returns its ties."""
        count = 0
        for o in range(pre.size):
            diff = pre[o] + bias[o]
            diff = diff - theta
            spikes[o] = diff >= 0
            count += abs(diff) < tolerance
        return count

    @numba.njit(**_JIT)
    def _dense_kernel(s, w, block, lanes, pattern, columns, whole, paired_w, nblocks, out):
        # pragma: no cover - compiled
        acc = np.empty((2, nblocks, w.shape[1]), w.dtype)
        pair = np.empty((2, nblocks, paired_w.shape[2]), w.dtype)
        index = np.empty((2, s.shape[1]), np.int64)
        for i in range(s.shape[0]):
            out[i] = _row_sums(s, i, index, w, block, lanes, pattern, columns, whole, paired_w,
                               acc, pair)  # fmt: skip

    @numba.njit(**_JIT)
    def _conv_kernel(s, w, block, nblocks, rows, cols, runs, binary, out):  # pragma: no cover
        acc = np.empty((nblocks, *out.shape[1:]), w.dtype)
        flat = acc.reshape(nblocks, -1)
        for i in range(s.shape[0]):
            _conv_sums(s, i, w, block, rows, cols, runs, binary, acc)
            out[i].reshape(-1)[:] = _total(flat)

    @numba.njit(**_JIT)
    def _dense_step_kernel(s, w, block, lanes, pattern, columns, whole, paired_w, nblocks, bias,
                           theta, tolerance, spikes, ties):  # pragma: no cover  # fmt: skip
        acc = np.empty((2, nblocks, w.shape[1]), w.dtype)
        pair = np.empty((2, nblocks, paired_w.shape[2]), w.dtype)
        index = np.empty((2, s.shape[1]), np.int64)
        for i in range(s.shape[0]):
            sums = _row_sums(s, i, index, w, block, lanes, pattern, columns, whole, paired_w, acc,
                             pair)  # fmt: skip
            ties[i] = _fire(sums, bias, theta, tolerance, spikes[i])

    @numba.njit(**_JIT)
    def _conv_step_kernel(s, w, block, nblocks, rows, cols, runs, binary, bias, theta, tolerance,
                          spikes, ties):  # pragma: no cover - compiled  # fmt: skip
        acc = np.empty((nblocks, spikes.shape[1], spikes.shape[2], w.shape[3]), w.dtype)
        flat = acc.reshape(nblocks, -1)
        for i in range(s.shape[0]):
            _conv_sums(s, i, w, block, rows, cols, runs, binary, acc)
            ties[i] = _fire(_total(flat), bias, theta, tolerance, spikes[i].reshape(-1))

    @numba.njit(**_JIT)
    def _finish_kernel(pre, bias, theta, tolerance, spikes, ties):  # pragma: no cover
        for i in range(pre.shape[0]):
            ties[i] = _fire(pre[i], bias, theta, tolerance, spikes[i])

    @numba.njit(nogil=True, cache=True)
    def _weighted_kernel(s, weights, out):  # pragma: no cover - compiled
        for i in range(s.shape[0]):
            total = 0
            for j in range(s.shape[1]):
                if s[i, j]:
                    total += weights[j]
            out[i] = total

    @numba.njit(nogil=True, cache=True)
    def _counts_kernel(flat, out):  # pragma: no cover - compiled
        for i in range(flat.shape[0]):
            total = 0
            for j in range(flat.shape[1]):
                total += flat[i, j]
            out[i] = total

    def _unfused(kernel):
        """``kernel`` compiled without contraction: ``acc + v * w`` rounds the product
        first (the inlined helpers take the caller's flags). Not cached on disk: the cache
        would not tell it from the fused kernel of the same function."""
        return numba.njit(nogil=True)(kernel.py_func)

    _KERNELS = {
        f.__name__: (f, _unfused(f))
        for f in (_dense_kernel, _conv_kernel, _dense_step_kernel, _conv_step_kernel)
    }


def _kernel(name: str, order: Order):
    """The compiled kernel ``name`` for ``order``: fused multiply-adds, or rounded
    products for an int32 block index (see :func:`blocks`)."""
    return _KERNELS[name][order.block.dtype == np.int32]


def finish(pre: np.ndarray, bias: np.ndarray, theta, tolerance: float):
    """Spikes ``pre + bias - theta >= 0`` (bool) and per-sample ties (``|.| < tolerance``).

    ``pre`` is ``(n, F)``, ``bias`` ``(F,)``; each sum rounds in ``pre``'s dtype, one add
    then one subtract, as NumPy's ``pre += bias; pre -= theta`` does.

    Example:
        >>> pre = np.array([[0.5, 0.25]], "float32")
        >>> spikes, ties = finish(pre, np.zeros(2, "float32"), 0.5, 1e-6)
        >>> spikes.tolist(), ties.tolist()
        ([[True, False]], [1])
    """
    dtype = pre.dtype.type
    spikes = np.empty(pre.shape, bool)
    ties = np.empty(len(pre), np.int64)
    _finish_kernel(pre, bias, dtype(theta), dtype(tolerance), spikes, ties)
    return spikes, ties


def weighted_counts(s: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Per row of 0/1 ``s`` ``(n, F)``, the sum of the whole ``weights`` of its active entries.

    Example:
        >>> weighted_counts(np.array([[1, 0, 1]], bool), np.array([2, 5, 3])).tolist()
        [5.0]
    """
    out = np.empty(len(s), np.float64)
    _weighted_kernel(s, weights, out)
    return out


def row_counts(flat: np.ndarray) -> np.ndarray:
    """Per row of 0/1 ``flat`` ``(n, F)`` (bool), how many entries are set (int64).

    Example:
        >>> row_counts(np.array([[1, 0, 1], [0, 0, 0]], bool)).tolist()
        [2, 0]
    """
    out = np.empty(len(flat), np.int64)
    _counts_kernel(np.ascontiguousarray(flat).view(np.uint8), out)
    return out


def product(s: np.ndarray, w: np.ndarray, order: Order, paired_w=None) -> np.ndarray:
    """``s @ w`` for ``s`` of shape ``(n, k)`` (0/1 or real), summed in the BLAS's ``order``
    (``paired_w``: :func:`paired_weights`, gathered here where None)."""
    out = np.empty((len(s), w.shape[1]), w.dtype)
    s = np.ascontiguousarray(s, w.dtype)  # 0/1 as 0.0/1.0: each term 1.0 * w, exactly w
    w = np.ascontiguousarray(w)
    _kernel("_dense_kernel", order)(s, w, *_dense_operands(order, w, len(s), paired_w), out)
    return out


def conv_product(s: np.ndarray, stage, w: np.ndarray, order: Order) -> np.ndarray:
    """``im2col(s) @ w`` of a rank-1 or rank-2 conv stage, as ``(n, *out)``.

    ``w`` is the stage's kernel ``(*window, c_in, c_out)`` in the product's dtype;
    ``order`` without paired outputs (the conv kernel has no second accumulator).
    """
    s, w, rows, cols, runs, shape = _conv_operands(s, stage, w, order)
    out = np.empty((len(s), *shape), w.dtype)
    _kernel("_conv_kernel", order)(
        s, w, order.block, order.count, rows, cols, runs, s.dtype == bool, out
    )
    return out.reshape(len(out), *stage.output_shape)


def step(s: np.ndarray, stage, w: np.ndarray, order: Order, bias: np.ndarray, tolerance,
         paired_w=None):  # fmt: skip
    """Spikes (bool, ``(n, *out)``) and per-sample ties of a dense or conv stage in one pass.

    :func:`product` (or :func:`conv_product`) then :func:`finish`, without the products
    in memory. ``bias`` holds one value per neuron; ``paired_w`` as in :func:`product`.

    Example:
        >>> from whetstone.network import Stage
        >>> stage = Stage("d", "dense", (3,), (2,), np.ones((3, 2), "float32"), None, 1.5)
        >>> w, bias = stage.weights, np.zeros(2, "float32")
        >>> order = Order.of(np.zeros(3, np.int64))
        >>> spikes, ties = step(np.array([[1, 1, 0]], bool), stage, w, order, bias, 1e-6)
        >>> spikes.tolist(), ties.tolist()
        ([[True, True]], [0])
    """
    dtype = w.dtype.type
    theta, tolerance = dtype(stage.threshold), dtype(tolerance)
    ties = np.empty(len(s), np.int64)
    if stage.kind == "dense":
        s = np.ascontiguousarray(s.reshape(len(s), -1), w.dtype)  # 0/1: each term exactly w
        spikes = np.empty((len(s), w.shape[1]), bool)
        kernel = _kernel("_dense_step_kernel", order)
        w = np.ascontiguousarray(w)
        kernel(s, w, *_dense_operands(order, w, len(s), paired_w), bias, theta, tolerance,
               spikes, ties)  # fmt: skip
        return spikes, ties
    s, w, rows, cols, runs, shape = _conv_operands(s, stage, w, order)
    spikes = np.empty((len(s), *shape), bool)
    kernel = _kernel("_conv_step_kernel", order)
    kernel(s, w, order.block, order.count, rows, cols, runs, s.dtype == bool, bias, theta,
           tolerance, spikes, ties)  # fmt: skip
    return spikes.reshape(len(s), *stage.output_shape), ties


def _dense_operands(order: Order, w: np.ndarray, n: int, paired_w) -> tuple:
    """The dense kernels' order arguments for ``n`` rows: ``order``'s, then the weights
    of each pattern's paired outputs (``paired_w``, or gathered now where None)."""
    pattern = order.pattern if order.paired else np.full(n, -1)
    if len(pattern) != n:
        raise ValueError(
            f"events: an order of {len(pattern)} rows for a product of {n} rows; measure "
            f"the order for {n} rows (blocks) or take its rows (Order.rows, stacked)."
        )
    paired_w = paired_weights(order, w) if paired_w is None else paired_w
    whole = _whole(order.columns, w.shape[1])
    return order.block, order.lanes, pattern, order.columns, whole, paired_w, order.count


def _whole(columns: np.ndarray, n: int) -> np.ndarray:
    """``(P,)``: True for each pattern that pairs every one of the ``n`` outputs, in order
    (its paired weights are ``w`` itself)."""
    if columns.shape[1] < n:
        return np.zeros(len(columns), bool)
    return (columns[:, :n] == np.arange(n)).all(axis=1) & (columns[:, n:] < 0).all(axis=1)


def paired_weights(order: Order, w: np.ndarray) -> np.ndarray:
    """``(P, k, L)``: ``w``'s columns of each pattern's paired outputs (zero in its
    padding), the dense kernels' second operand; gather it once where ``w`` and ``order``
    serve many calls. A pattern that pairs every output reads ``w`` itself: its slot is
    left zero, and ``L`` is the widest of the other patterns (at least 1).

    Example:
        >>> order = Order.of(np.zeros(2, np.int64), np.array([[False, True], [True, True]]))
        >>> paired_weights(order, np.array([[1, 2], [3, 4]], "float32")).tolist()
        [[[2.0], [4.0]], [[0.0], [0.0]]]
    """
    columns = np.where(_whole(order.columns, w.shape[1])[:, None], -1, order.columns)
    columns = columns[:, : max(1, int((columns >= 0).sum(axis=1).max(initial=0)))]
    taken = w[:, columns].transpose(1, 0, 2)
    return np.ascontiguousarray(np.where(columns[:, None, :] >= 0, taken, 0), w.dtype)


def _operand(s: np.ndarray, dtype) -> np.ndarray:
    """0/1 spikes as they are (bool), real values in the product's dtype, contiguous."""
    return np.ascontiguousarray(s if s.dtype == bool else s.astype(dtype, copy=False))


def _conv_operands(s: np.ndarray, stage, w: np.ndarray, order: Order):
    """A rank-1 or rank-2 conv's input and kernel as rank 2, its two :func:`_reach`
    tables, its :func:`_runs` and its output shape."""
    from whetstone.geometry import axes

    if order.paired:
        raise ValueError("events: the conv kernels cannot pair sums; use the BLAS for this order.")

    s = _operand(s.reshape(len(s), *stage.input_shape), w.dtype)
    tables = [_reach(*axis, stage.padding) for axis in axes(stage)]
    if len(stage.window) == 1:  # a row of height one
        s, w, tables = s[:, None], w[None], [np.zeros((1, 1), np.int64), *tables]
    shape = (*(1,) * (3 - len(stage.output_shape)), *stage.output_shape)
    w = np.ascontiguousarray(w)
    contiguous = stage.strides[-1] == 1 and stage.dilation[-1] == 1
    return s, w, *tables, _runs(w, order.block, contiguous), shape


def _runs(w: np.ndarray, block: np.ndarray, contiguous: bool):
    """Per kernel row ``dy`` and input channel ``c``: the block of all its taps (-1 where
    they span two blocks, or the last axis has a stride or dilation), and its weights in
    the order of the outputs they reach, ``w[dy, ::-1, c]`` as ``(kh, c_in, kw * c_out)``.

    With stride and dilation 1 an input reaches ``kw`` neighbouring outputs of a row, the
    last tap the first output: one add of ``kw * c_out`` values, the same terms in the
    same order for each output.
    """
    kh, kw, c_in, _ = w.shape
    taps = block.reshape(kh, kw, c_in)
    same = (taps == taps[:, :1]).all(axis=1) & contiguous
    block_of = np.where(same, taps[:, 0], -1).astype(np.int64)
    reversed_rows = np.ascontiguousarray(w[:, ::-1].transpose(0, 2, 1, 3)).reshape(kh, c_in, -1)
    return block_of, reversed_rows


def _reach(n: int, k: int, s: int, d: int, padding: str) -> np.ndarray:
    """``(n, k)``: the output that input ``i`` reaches through tap ``t`` of one axis, or -1.

    Example:
        >>> _reach(4, 2, 2, 1, "valid").tolist()
        [[0, -1], [-1, 0], [1, -1], [-1, 1]]
    """
    from whetstone.geometry import axis_index

    index = axis_index(n, k, s, d, padding)  # (outputs, k): the input each tap reads
    table = np.full((n, k), -1, np.int64)
    out, tap = np.nonzero((index >= 0) & (index < n))
    table[index[out, tap], tap] = out
    return table
