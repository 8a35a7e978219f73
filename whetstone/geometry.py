"""Window geometry and stage arithmetic: the one home of what every back end asks of a stage.

A conv or pool stage slides a window over its channels-last input. Per spatial axis
the window has ``n`` inputs, ``k`` taps, stride ``s``, dilation ``d`` and padding
``"valid"`` or Keras's ``"same"``. :func:`axis_index` says which input each tap of each
output reads; everything else (padding, output sizes, fan-in and fan-out, connection
lists, im2col) follows from it. :func:`preactivation` is a stage's linear operator
``W s + b`` in the reference's own float32 arithmetic. This module knows only NumPy.

Example:
    >>> axis_index(5, 3, 2, 1, "same").tolist()
    [[-1, 0, 1], [1, 2, 3], [3, 4, 5]]
    >>> same_padding(5, 3, 2), output_length(5, 3, 2, padding="same")
    ((1, 1), 3)
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Iterator

import numpy as np
from threadpoolctl import ThreadpoolController

__all__ = [
    "axes",
    "axis_index",
    "im2col",
    "output_length",
    "pad",
    "paddings",
    "preactivation",
    "same_padding",
    "taps",
]


def same_padding(n: int, k: int, s: int = 1, d: int = 1) -> tuple[int, int]:
    """Keras's 'same' padding (before, after) of one axis; the extra one goes after.

    Example:
        >>> same_padding(28, 3), same_padding(5, 2, 2)
        ((1, 1), (0, 1))
    """
    total = max((math.ceil(n / s) - 1) * s + (k - 1) * d + 1 - n, 0)
    return total // 2, total - total // 2


def output_length(n: int, k: int, s: int = 1, d: int = 1, padding: str = "valid") -> int:
    """Output length of one axis of a window operation (convolution or pooling).

    Example:
        >>> output_length(28, 3), output_length(28, 3, padding="same"), output_length(5, 2, 2)
        (26, 28, 2)
    """
    if padding == "same":
        return math.ceil(n / s)
    return max((n - (k - 1) * d - 1) // s + 1, 0)


def axis_index(n: int, k: int, s: int = 1, d: int = 1, padding: str = "valid") -> np.ndarray:
    """``(outputs, k)`` input index read by each tap of each output (outside: padding).

    Example:
        >>> axis_index(4, 2, 2).tolist()
        [[0, 1], [2, 3]]
    """
    before = same_padding(n, k, s, d)[0] if padding == "same" else 0
    starts = np.arange(output_length(n, k, s, d, padding)) * s - before
    return starts[:, None] + np.arange(k)[None, :] * d


def axes(stage) -> list[tuple[int, int, int, int]]:
    """Per spatial axis of a conv or pool stage: ``(n, k, s, d)``.

    Example:
        >>> from whetstone.network import Stage
        >>> axes(Stage("p", "pool", (4, 6, 1), (2, 3, 1), pool_size=(2, 2), strides=(2, 2)))
        [(4, 2, 2, 1), (6, 2, 2, 1)]
    """
    spatial = stage.input_shape[:-1]
    return list(zip(spatial, stage.window, stage.strides, stage.dilation, strict=True))


def paddings(stage) -> list[tuple[int, int]]:
    """Per spatial axis, the zeros padded ``(before, after)`` (all zero for 'valid').

    Example:
        >>> from whetstone.network import Stage
        >>> paddings(Stage("p", "pool", (5, 1), (3, 1), pool_size=(2,), strides=(2,),
        ...                padding="same"))
        [(0, 1)]
    """
    if stage.padding != "same":
        return [(0, 0)] * len(stage.window)
    return [same_padding(*axis) for axis in axes(stage)]


def pad(x: np.ndarray, stage) -> np.ndarray:
    """A batch ``(B, *input_shape)`` with the stage's zero padding added."""
    if stage.padding != "same":
        return x
    return np.pad(x, [(0, 0), *paddings(stage), (0, 0)])


def taps(x: np.ndarray, stage) -> Iterator[np.ndarray]:
    """Per window tap (in kernel order), the strided view of the padded batch it reads."""
    x = pad(x, stage)
    out = stage.output_shape[:-1]
    for tap in itertools.product(*(range(k) for k in stage.window)):
        steps = zip(tap, stage.dilation, out, stage.strides, strict=True)
        yield x[(slice(None), *(slice(t * d, t * d + (m - 1) * s + 1, s) for t, d, m, s in steps))]


def im2col(x: np.ndarray, stage, dtype) -> np.ndarray:
    """The ``(positions, taps * c_in)`` im2col matrix of ``x`` in ``dtype`` (cast while gathered).

    The columns are gathered tap by tap (each a strided slice with the channels
    contiguous), in the kernel's own (taps..., c_in) order.
    """
    count = math.prod(stage.window)
    c_in = x.shape[-1]
    cols = np.empty((len(x), *stage.output_shape[:-1], count, c_in), dtype)
    for t, view in enumerate(taps(x, stage)):
        cols[..., t, :] = view
    return cols.reshape(-1, count * c_in)


@functools.cache
def _blas_controller() -> ThreadpoolController:
    """The process's thread pools (found once: finding them reads the loaded libraries)."""
    return ThreadpoolController()


def one_blas_thread():
    """A context in which the BLAS runs on one thread, as every reference product does.

    A BLAS tiles a product by its threads, and on some CPUs (OpenBLAS's Haswell/Zen
    SGEMM) a tile's kind sets the order of its sums: one thread gives the same bits on
    any number of cores.
    """
    return _blas_controller().limit(limits=1, user_api="blas")


def preactivation(stage, s: np.ndarray, dtype="float32") -> np.ndarray:
    """``W s + b`` of one stage for a batch ``s`` of shape ``(B, *input_shape)``.

    Convolutions are im2col + one matmul (Keras's cross-correlation and 'same'
    convention), on one BLAS thread (:func:`one_blas_thread`); an OR-pool is a sum-pool
    with zero padding (the step at 0.5 makes it an OR).

    Example:
        >>> from whetstone.network import Stage
        >>> pool = Stage("p", "pool", (4, 1), (2, 1), pool_size=(2,), strides=(2,))
        >>> preactivation(pool, np.array([[[1], [1], [0], [1]]], "float32")).ravel().tolist()
        [2.0, 1.0]
    """
    s = s.reshape(len(s), *stage.input_shape).astype(dtype, copy=False)
    if stage.kind == "pool":
        views = taps(s, stage)
        pre = next(views).copy()
        for view in views:
            pre += view
        return pre
    weights = stage.weights.astype(dtype, copy=False)
    with one_blas_thread():
        if stage.kind == "dense":
            pre = s.reshape(len(s), -1) @ weights
        else:
            pre = im2col(s, stage, s.dtype) @ weights.reshape(-1, weights.shape[-1])
    pre = pre.reshape(len(s), *stage.output_shape)
    if stage.bias is not None:
        pre += stage.bias.astype(dtype, copy=False).reshape(
            stage.bias.shape if stage.kind != "dense" else stage.output_shape
        )
    return pre
