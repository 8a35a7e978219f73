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

Which blocks the BLAS uses is *measured*, once per product shape, on weights with a wide
spread of magnitudes (where any other order changes the bits): :func:`blocks` returns
the partition that reproduces it, or None where no candidate does (another BLAS); the
caller then runs the BLAS itself. The kernels are compiled by Numba; without Numba
:data:`AVAILABLE` is False and the reference uses the BLAS everywhere.

Example:
    >>> import numpy as np
    >>> w = np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]], "float32")
    >>> s = np.array([[1, 0, 1]], bool)
    >>> product(s, w, blocks(1, 3, 2, "float32")).tolist() if AVAILABLE else [[6.0, 8.0]]
    [[6.0, 8.0]]
"""

from __future__ import annotations

import functools

import numpy as np

try:
    import numba
except ImportError:  # pragma: no cover - numba is a dependency; kept optional for ports
    numba = None

__all__ = [
    "AVAILABLE", "blocks", "conv_product", "finish", "product", "step", "weighted_counts",
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


@functools.lru_cache(maxsize=512)
def blocks(m: int, k: int, n: int, dtype: str, real: bool = False) -> np.ndarray | None:
    """Per inner index, its block in the BLAS's ``(m, k) @ (k, n)`` product of ``dtype``.

    Measured on 0/1 left operands, or on real ones (``real=True``: each term one fused
    multiply-add, as most BLAS kernels do, or else a rounded product then an add, as
    OpenBLAS's Sapphire Rapids SGEMM does; an index of int32 marks the latter). None
    where no candidate blocking gives the BLAS's bits (or without Numba).
    """
    if not AVAILABLE or min(m, k, n) == 0:
        return None
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
            index = _block_index(lengths).astype(kind)
            if all(np.array_equal(product(a, w, index), expected) for a, w, expected in trials):
                _RULES.remove(rule)
                _RULES.insert(0, rule)  # most shapes of this process share it: tried first next
                return index
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
    def _dense_sums(s, i, active, w, block, binary, acc):  # pragma: no cover - compiled
        """Block sums of row ``i`` (its nonzero inputs ``active``) into ``acc``."""
        acc[:] = 0
        for j in active:
            _add(acc[block[j]], w[j], s[i, j], binary)

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
    def _dense_kernel(s, w, block, nblocks, binary, out):  # pragma: no cover - compiled
        acc = np.empty((nblocks, w.shape[1]), w.dtype)
        index = np.empty(s.shape[1], np.int64)
        for i in range(s.shape[0]):
            active = index[: _active(s, i, index)]
            _dense_sums(s, i, active, w, block, binary, acc)
            out[i] = _total(acc)

    @numba.njit(**_JIT)
    def _conv_kernel(s, w, block, nblocks, rows, cols, runs, binary, out):  # pragma: no cover
        acc = np.empty((nblocks, *out.shape[1:]), w.dtype)
        flat = acc.reshape(nblocks, -1)
        for i in range(s.shape[0]):
            _conv_sums(s, i, w, block, rows, cols, runs, binary, acc)
            out[i].reshape(-1)[:] = _total(flat)

    @numba.njit(**_JIT)
    def _dense_step_kernel(s, w, block, nblocks, binary, bias, theta, tolerance, spikes, ties):
        # pragma: no cover - compiled
        acc = np.empty((nblocks, w.shape[1]), w.dtype)
        index = np.empty(s.shape[1], np.int64)
        for i in range(s.shape[0]):
            active = index[: _active(s, i, index)]
            _dense_sums(s, i, active, w, block, binary, acc)
            ties[i] = _fire(_total(acc), bias, theta, tolerance, spikes[i])

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

    def _unfused(kernel):
        """``kernel`` compiled without contraction: ``acc + v * w`` rounds the product
        first (the inlined helpers take the caller's flags). Not cached on disk: the cache
        would not tell it from the fused kernel of the same function."""
        return numba.njit(nogil=True)(kernel.py_func)

    _KERNELS = {
        f.__name__: (f, _unfused(f))
        for f in (_dense_kernel, _conv_kernel, _dense_step_kernel, _conv_step_kernel)
    }


def _kernel(name: str, block: np.ndarray):
    """The compiled kernel ``name`` for ``block``: fused multiply-adds, or rounded
    products for an int32 index (see :func:`blocks`)."""
    return _KERNELS[name][block.dtype == np.int32]


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


def product(s: np.ndarray, w: np.ndarray, block: np.ndarray) -> np.ndarray:
    """``s @ w`` for ``s`` of shape ``(n, k)`` (0/1 or real), summed in the blocks ``block``."""
    out = np.empty((len(s), w.shape[1]), w.dtype)
    s = _operand(s, w.dtype)
    _kernel("_dense_kernel", block)(
        s, np.ascontiguousarray(w), block, _count(block), s.dtype == bool, out
    )
    return out


def conv_product(s: np.ndarray, stage, w: np.ndarray, block: np.ndarray) -> np.ndarray:
    """``im2col(s) @ w`` of a rank-1 or rank-2 conv stage, as ``(n, *out)``.

    ``w`` is the stage's kernel ``(*window, c_in, c_out)`` in the product's dtype.
    """
    s, w, rows, cols, runs, shape = _conv_operands(s, stage, w, block)
    out = np.empty((len(s), *shape), w.dtype)
    _kernel("_conv_kernel", block)(
        s, w, block, _count(block), rows, cols, runs, s.dtype == bool, out
    )
    return out.reshape(len(out), *stage.output_shape)


def step(s: np.ndarray, stage, w: np.ndarray, block: np.ndarray, bias: np.ndarray, tolerance):
    """Spikes (bool, ``(n, *out)``) and per-sample ties of a dense or conv stage in one pass.

    :func:`product` (or :func:`conv_product`) then :func:`finish`, without the products
    in memory. ``bias`` holds one value per neuron.

    Example:
        >>> from whetstone.network import Stage
        >>> stage = Stage("d", "dense", (3,), (2,), np.ones((3, 2), "float32"), None, 1.5)
        >>> w, bias = stage.weights, np.zeros(2, "float32")
        >>> spikes, ties = step(np.array([[1, 1, 0]], bool), stage, w, np.zeros(3, int), bias, 1e-6)
        >>> spikes.tolist(), ties.tolist()
        ([[True, True]], [0])
    """
    dtype = w.dtype.type
    theta, tolerance = dtype(stage.threshold), dtype(tolerance)
    ties = np.empty(len(s), np.int64)
    if stage.kind == "dense":
        s = _operand(s.reshape(len(s), -1), w.dtype)
        spikes = np.empty((len(s), w.shape[1]), bool)
        kernel = _kernel("_dense_step_kernel", block)
        kernel(s, np.ascontiguousarray(w), block, _count(block), s.dtype == bool, bias, theta,
               tolerance, spikes, ties)  # fmt: skip
        return spikes, ties
    s, w, rows, cols, runs, shape = _conv_operands(s, stage, w, block)
    spikes = np.empty((len(s), *shape), bool)
    kernel = _kernel("_conv_step_kernel", block)
    kernel(s, w, block, _count(block), rows, cols, runs, s.dtype == bool, bias, theta,
           tolerance, spikes, ties)  # fmt: skip
    return spikes.reshape(len(s), *stage.output_shape), ties


def _count(block: np.ndarray) -> int:
    return int(block[-1]) + 1 if len(block) else 1


def _operand(s: np.ndarray, dtype) -> np.ndarray:
    """0/1 spikes as they are (bool), real values in the product's dtype, contiguous."""
    return np.ascontiguousarray(s if s.dtype == bool else s.astype(dtype, copy=False))


def _conv_operands(s: np.ndarray, stage, w: np.ndarray, block: np.ndarray):
    """A rank-1 or rank-2 conv's input and kernel as rank 2, its two :func:`_reach`
    tables, its :func:`_runs` and its output shape."""
    from whetstone.geometry import axes

    s = _operand(s.reshape(len(s), *stage.input_shape), w.dtype)
    tables = [_reach(*axis, stage.padding) for axis in axes(stage)]
    if len(stage.window) == 1:  # a row of height one
        s, w, tables = s[:, None], w[None], [np.zeros((1, 1), np.int64), *tables]
    shape = (*(1,) * (3 - len(stage.output_shape)), *stage.output_shape)
    w = np.ascontiguousarray(w)
    contiguous = stage.strides[-1] == 1 and stage.dilation[-1] == 1
    return s, w, *tables, _runs(w, block, contiguous), shape


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
