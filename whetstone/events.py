"""Event-driven stage products: the reference's own float sums, from binary spikes.

A BLAS product of 0/1 spikes with weights adds, for each output, the weights of the
active inputs one after another in input order, in blocks of the inner dimension that
are summed afterwards (OpenBLAS: blocks of ``GEMM_Q``, the last two halved). The kernels
here add only the weights of active inputs (work in proportion to the synaptic events,
not to the synapses), in the same order and the same blocks, so they give the same bits.

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

__all__ = ["AVAILABLE", "blocks", "conv_product", "finish", "product", "weighted_counts"]

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
def blocks(m: int, k: int, n: int, dtype: str) -> np.ndarray | None:
    """Per inner index, its block in the BLAS's ``(m, k) @ (k, n)`` product of ``dtype``.

    None where no candidate blocking gives the BLAS's bits (or without Numba).
    """
    if not AVAILABLE or min(m, k, n) == 0:
        return None
    rng = np.random.default_rng(k * 7919 + n)
    w = (rng.normal(size=(k, n)) * 2.0 ** rng.integers(-14, 14, (k, 1))).astype(dtype)
    a = rng.uniform(size=(m, k)) < 0.5
    expected = a.astype(dtype) @ w
    rows = np.unique(np.r_[0 : min(m, 40), max(m - 40, 0) : m])
    tried = set()
    for rule in list(_RULES):
        lengths = split(k, *rule)
        if lengths in tried:
            continue
        tried.add(lengths)
        index = _block_index(lengths)
        if np.array_equal(product(a[rows], w, index), expected[rows]):
            _RULES.remove(rule)
            _RULES.insert(0, rule)  # most shapes of this process share it: tried first next
            return index
    return None


if AVAILABLE:

    @numba.njit(nogil=True, cache=True)
    def _dense_kernel(s, w, block, nblocks, out):  # pragma: no cover - compiled
        n, k = s.shape
        width = w.shape[1]
        acc = np.zeros((nblocks, width), w.dtype)
        for i in range(n):
            acc[:] = 0
            for j in range(k):
                if s[i, j]:
                    b = block[j]
                    for o in range(width):
                        acc[b, o] += w[j, o]
            for o in range(width):
                total = acc[0, o]
                for b in range(1, nblocks):
                    total = total + acc[b, o]
                out[i, o] = total

    @numba.njit(nogil=True, cache=True)
    def _conv_kernel(s, w, block, nblocks, geometry, out):  # pragma: no cover - compiled
        n, height, width, channels = s.shape
        kh, kw, _, c_out = w.shape
        oh, ow = out.shape[1], out.shape[2]
        sh, sw, dh, dw, ph, pw = geometry
        acc = np.zeros((nblocks, oh, ow, c_out), w.dtype)
        for i in range(n):
            acc[:] = 0
            for y in range(height):  # raster order: each output meets its taps in order
                for x in range(width):
                    for c in range(channels):
                        if not s[i, y, x, c]:
                            continue
                        for dy in range(kh):
                            t = y + ph - dy * dh
                            if t < 0 or t % sh != 0 or t // sh >= oh:
                                continue
                            oy = t // sh
                            for dx in range(kw):
                                u = x + pw - dx * dw
                                if u < 0 or u % sw != 0 or u // sw >= ow:
                                    continue
                                ox = u // sw
                                b = block[(dy * kw + dx) * channels + c]
                                for o in range(c_out):
                                    acc[b, oy, ox, o] += w[dy, dx, c, o]
            for oy in range(oh):
                for ox in range(ow):
                    for o in range(c_out):
                        total = acc[0, oy, ox, o]
                        for b in range(1, nblocks):
                            total = total + acc[b, oy, ox, o]
                        out[i, oy, ox, o] = total


if AVAILABLE:

    @numba.njit(nogil=True, cache=True)
    def _finish_kernel(pre, bias, theta, tolerance, spikes, ties):  # pragma: no cover
        for i in range(pre.shape[0]):
            count = 0
            for j in range(pre.shape[1]):
                diff = pre[i, j] + bias[j]
                diff = diff - theta
                spikes[i, j] = diff >= 0
                count += abs(diff) < tolerance
            ties[i] = count

    @numba.njit(nogil=True, cache=True)
    def _weighted_kernel(s, weights, out):  # pragma: no cover - compiled
        for i in range(s.shape[0]):
            total = 0
            for j in range(s.shape[1]):
                if s[i, j]:
                    total += weights[j]
            out[i] = total


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
    """``s @ w`` for 0/1 ``s`` of shape ``(n, k)``, summed in the blocks ``block``."""
    out = np.empty((len(s), w.shape[1]), w.dtype)
    nblocks = int(block[-1]) + 1 if len(block) else 1
    _dense_kernel(np.ascontiguousarray(s), np.ascontiguousarray(w), block, nblocks, out)
    return out


def conv_product(s: np.ndarray, stage, w: np.ndarray, block: np.ndarray) -> np.ndarray:
    """``im2col(s) @ w`` of a rank-1 or rank-2 conv stage for 0/1 ``s``, as ``(n, *out)``.

    ``w`` is the stage's kernel ``(*window, c_in, c_out)`` in the product's dtype.
    """
    from whetstone.geometry import paddings

    rank = len(stage.window)
    if rank == 1:  # a row of height one
        s, w = s[:, None], w[None]
    geometry = [1] * (2 - rank) + list(stage.strides)
    geometry += [1] * (2 - rank) + list(stage.dilation)
    geometry += [0] * (2 - rank) + [before for before, _ in paddings(stage)]
    out = np.empty((len(s), *((1,) * (2 - rank)), *stage.output_shape), w.dtype)
    nblocks = int(block[-1]) + 1
    _conv_kernel(
        np.ascontiguousarray(s), np.ascontiguousarray(w), block, nblocks,
        np.array(geometry, np.int64), out,
    )  # fmt: skip
    return out.reshape(len(out), *stage.output_shape)
