"""NIR layout: the conventions shared by writing and reading a NIR graph.

Constants and node types, channels-first vs channels-last shapes, the flatten
order, and how a Keras window (padding, strides, dilation) maps onto NIR's
symmetric padding with square kernels and back.

Example:
    >>> _first((4, 5, 3)), _last((3, 4, 5))
    ((3, 4, 5), (4, 5, 3))
"""

from __future__ import annotations

import math
import re

import numpy as np

from whetstone.backends import require
from whetstone.geometry import axes, output_length, paddings, same_padding
from whetstone.network import SpikingNetwork, Stage

DT = 1e-4
"""Default timestep (seconds) the graph is memoryless at: ``tau`` of every LIF node.
snnTorch's NIR reader steps at 1e-4 s."""

FORMAT = "whetstone.nir"
FORMAT_VERSION = 1
LINEAR_OPS = ("Affine", "Linear", "Conv1d", "Conv2d", "SumPool2d")
NEURONS = ("LIF", "Threshold")
SUPPORTED = ("Input", "Output", "Flatten", "Delay", *LINEAR_OPS, *NEURONS)


class UnsupportedGraphError(ValueError):
    """A NIR graph outside what a SpikingNetwork can express (names node and type)."""


def _nir():
    return require("nir", "nir")


def _first(shape: tuple[int, ...]) -> tuple[int, ...]:
    """Channels-last ``(*spatial, C)`` -> NIR's channels-first ``(C, *spatial)``."""
    return (shape[-1], *shape[:-1])


def _last(shape) -> tuple[int, ...]:
    """NIR's ``(C, *spatial)`` -> channels-last ``(*spatial, C)``."""
    shape = tuple(int(n) for n in shape)
    return (*shape[1:], shape[0])


def _flat_order(shape: tuple[int, ...]) -> np.ndarray:
    """For each position of the flattened ``(C, *spatial)`` tensor, its index in the
    row-major flattening of the channels-last ``shape``."""
    return np.moveaxis(np.arange(math.prod(shape)).reshape(shape), -1, 0).ravel()


def nir_input(net: SpikingNetwork, x: np.ndarray) -> np.ndarray:
    """Inputs ``(n, *net.input_shape)`` in the layout of the graph's Input node.

    Example:
        >>> from whetstone.network import Stage, SpikingNetwork
        >>> pool = Stage("p", "pool", (2, 2, 3), (1, 1, 3), pool_size=(2, 2), strides=(2, 2))
        >>> nir_input(SpikingNetwork((2, 2, 3), [pool]), np.zeros((5, 2, 2, 3))).shape
        (5, 3, 2, 2)
    """
    first = net.stages[0]
    x = np.asarray(x, np.float32).reshape(len(x), *first.input_shape)
    if first.kind == "dense":
        return x.reshape(len(x), -1)
    return np.moveaxis(x, -1, 1)


def _node_names(net: SpikingNetwork) -> list[str]:
    names, taken = [], {"input", "output", "decoder"}
    for i, stage in enumerate(net.stages):
        base = re.sub(r"\W", "_", stage.name) or "stage"
        base = base if base[0].isalpha() else f"s_{base}"
        name = base if base not in taken else f"{base}_{i}"
        taken.add(name)
        names.append(name)
    return names


# ---------------------------------------------------------------- window padding, writing


def _axis_plan(n, k, s, d, pads, size):
    """Zero taps ``(before, after)`` and symmetric padding that give one axis of a
    window of ``k`` taps with Keras pads ``pads`` as a window of ``size`` taps."""
    before, after = pads
    rest = (n + before + after - d * (k - 1) - 1) % s
    for lead in range(size - k + 1):
        shift = before - after + (2 * lead - (size - k)) * d
        if -rest <= shift < s - rest:  # same number of outputs, taps aligned
            return lead, size - k - lead, before + lead * d
    return None


def _square_plan(stage: Stage) -> list[tuple[int, int, int]]:
    """Per axis: zero taps before, after, and the symmetric padding. NIR's padding is
    symmetric and nir 1.0's Conv2d type inference reads the kernel height as its
    width too, so the kernel is made square (exact: extra taps are zeros)."""
    windows = [(*axis, pads) for axis, pads in zip(axes(stage), paddings(stage), strict=True)]
    low = max(stage.window)
    for size in range(low, low + 4):
        sizes = [size if len(windows) == 2 else k for _, k, _, _, _ in windows]
        plan = [_axis_plan(*axis, m) for axis, m in zip(windows, sizes, strict=True)]
        if all(plan):
            return plan
    raise ValueError(
        f"stage {stage.name!r}: window {stage.window} with padding {paddings(stage)}, strides "
        f"{stage.strides} and dilation {stage.dilation} has no NIR equivalent: NIR pads "
        "symmetrically and nir 1.0 needs square kernels (it infers a Conv2d's width from the "
        "kernel height), and zero taps cannot make up the difference here. Use a square "
        "kernel, 'valid' padding or no dilation in this layer."
    )


# ---------------------------------------------------------------- window padding, reading


def _pads(padding, spatial, window, strides, dilation) -> list[tuple[int, int]]:
    """NIR padding (int, per axis, 'same' or 'valid') as per-axis (before, after)."""
    padding = padding.decode() if isinstance(padding, bytes) else padding
    if isinstance(padding, str):
        axes = zip(spatial, window, strides, dilation, strict=True)
        return [same_padding(*a) if padding == "same" else (0, 0) for a in axes]
    return [(int(p), int(p)) for p in np.broadcast_to(np.asarray(padding, int), (len(window),))]


def _zero_run(kernel: np.ndarray | None, axis: int, from_end: bool) -> int:
    """How many leading (or trailing) taps along ``axis`` are zero for every channel."""
    if kernel is None:
        return 0
    taps = np.moveaxis(kernel, axis, 0).reshape(kernel.shape[axis], -1).any(axis=1)
    taps = taps[::-1] if from_end else taps
    return int(np.argmax(taps)) if taps.any() else len(taps) - 1


def _axis_fit(n, size, s, d, pads, mode, lead_zeros, trail_zeros, window=None):
    """Least zero taps ``(lead, trail)`` to strip so that one axis is Keras ``mode``:
    the kept taps stay aligned and the number of outputs stays the same."""
    count = (n + sum(pads) - d * (size - 1) - 1) // s + 1
    fits = []
    for lead in range(lead_zeros + 1):
        for trail in range(trail_zeros + 1):
            k = size - lead - trail
            if k < 1 or (window is not None and k != window):
                continue
            before = 0 if mode == "valid" else same_padding(n, k, s, d)[0]
            if pads[0] - lead * d == before and output_length(n, k, s, d, mode) == count:
                fits.append((lead + trail, lead, trail))
    return min(fits)[1:] if fits else None


def _fit_window(name, kernel, size, spatial, strides, dilation, pads, hint, where):
    """Keras padding and per-axis zero taps to strip, for a NIR window of ``size``."""
    axes = list(zip(spatial, size, strides, dilation, pads, strict=True))
    zeros = [(_zero_run(kernel, i, False), _zero_run(kernel, i, True)) for i in range(len(axes))]
    windows = hint["window"] if hint else [None] * len(axes)
    best = None
    for mode in [hint["padding"]] if hint else ["valid", "same"]:
        plan = [
            _axis_fit(n, k, s, d, p, mode, *z, w)
            for (n, k, s, d, p), z, w in zip(axes, zeros, windows, strict=True)
        ]
        if all(f is not None for f in plan):
            candidate = (sum(a + b for a, b in plan), mode, plan)
            best = candidate if best is None else min(best, candidate)
    if best is None:
        raise UnsupportedGraphError(
            f"{where}: node {name!r} pads {pads} with window {tuple(size)}, which is neither "
            "'valid' nor Keras 'same' padding for its input, window and strides."
        )
    return best[1], best[2]
