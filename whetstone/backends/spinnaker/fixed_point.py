"""SpiNNaker fixed point: 16-bit weights with ring-buffer shifts, s16.15 thresholds.

Example:
    >>> _ring_buffer_shift(3.0), _ring_buffer_shift(4.0)
    (2, 3)
"""

from __future__ import annotations

import math

import numpy as np

from whetstone.backends.spinnaker.plan import Layer, build_plan
from whetstone.network import SpikingNetwork

__all__ = ["fixed_point_run", "quantisation"]

WEIGHT_BITS = 16
FRACTION_BITS = 15  # s16.15 (REAL) for thresholds and membrane voltage


def _ring_buffer_shift(max_summed: float) -> int:
    """sPyNNaker's shift for a largest summed weight (``get_ring_buffer_shifts``)."""
    if max_summed <= 0:
        return 0
    shift = max(0, math.ceil(math.log2(max_summed)))
    return shift + 1 if 2**shift <= max_summed else shift


def _quantise(rows: np.ndarray, shift: int) -> tuple[np.ndarray, np.ndarray]:
    """Stored 16-bit weight integers and the weights they stand for."""
    scale = 2.0 ** (WEIGHT_BITS - 1 - shift)
    stored = np.rint(rows[:, 2] * scale)
    return stored, np.minimum(stored, 2**WEIGHT_BITS - 1) / scale


def _quantised_layers(plan: list[Layer]) -> list[Layer]:
    out = []
    for layer in plan:
        rows = []
        for part, summed in zip((layer.exc, layer.inh), layer.max_summed, strict=True):
            q = part.copy()
            q[:, 2] = _quantise(part, _ring_buffer_shift(summed))[1]
            rows.append(q)
        thresholds = np.rint(layer.thresholds * 2.0**FRACTION_BITS) / 2.0**FRACTION_BITS
        out.append(Layer(layer.name, layer.size, thresholds, *rows, layer.inputs,
                         layer.channels, layer.depth))  # fmt: skip
    return out


def _layer_step(layer: Layer, source: np.ndarray, outputs: list[np.ndarray]) -> np.ndarray:
    """One population's spikes from its sources' (``source``: the spike source's)."""
    total = np.zeros((len(source), layer.size))
    for index, _, start, width in layer.inputs:
        spikes = source if index < 0 else outputs[index]
        exc, inh = layer.edge_rows(start, width)
        for rows, sign in ((exc, 1.0), (inh, -1.0)):
            pre, post = rows[:, 0].astype(np.int64), rows[:, 1].astype(np.int64)
            matrix = np.zeros((spikes.shape[1], layer.size))
            np.add.at(matrix, (pre, post), sign * rows[:, 2])
            total += spikes @ matrix
    return (total >= layer.thresholds).astype(np.uint8)


def layer_spikes(plan: list[Layer], source: np.ndarray) -> list[np.ndarray]:
    """Every population's spikes (quantised weights and thresholds) for the source's spikes."""
    outputs: list[np.ndarray] = []
    for layer in _quantised_layers(plan):
        outputs.append(_layer_step(layer, source, outputs))
    return outputs


def fixed_point_run(net: SpikingNetwork, x) -> tuple[np.ndarray, np.ndarray]:
    """Predictions and output spikes with SpiNNaker's 16-bit weights and s16.15 thresholds.

    Exact for what the chip computes: stored weights are multiples of ``2**(shift-15)``
    and their sums stay below the ring buffer's range, so the float64 sums are exact.
    """
    spikes = layer_spikes(build_plan(net), net.encode(x, "spinnaker back end"))[-1]
    return net.decode(spikes), spikes


def quantisation(net: SpikingNetwork, x=None, loss: float = 0.05) -> dict:
    """What SpiNNaker's weight storage does to ``net``: per population and in total.

    Reports each population's ring-buffer shifts, weights that round to zero, that
    saturate (none by construction), that lose more than ``loss`` of their value, and
    the largest error; with inputs ``x`` also how many predictions change.

    Example:
        >>> from whetstone.network import Stage
        >>> w = np.array([[1.0, 1e-6]], "float32")
        >>> net = SpikingNetwork((1,), [Stage("d", "dense", (1,), (2,), w)],
        ...                      input_encoding="binary")
        >>> report = quantisation(net)
        >>> report["synapses"], report["rounded_to_zero"], report["lossy_fraction"]
        (2, 1, 0.5)
    """
    layers, totals = [], {"synapses": 0, "rounded_to_zero": 0, "saturated": 0, "lossy": 0}
    for layer in build_plan(net):
        entry = {"name": layer.name, "neurons": layer.size, "max_abs_error": 0.0}
        for kind, rows, summed in zip(("exc", "inh"), (layer.exc, layer.inh), layer.max_summed,
                                      strict=True):  # fmt: skip
            shift = _ring_buffer_shift(summed)
            stored, value = _quantise(rows, shift)
            error = np.abs(value - rows[:, 2])
            counts = {
                "synapses": len(rows),
                "rounded_to_zero": int((stored == 0).sum()),
                "saturated": int((stored > 2**WEIGHT_BITS - 1).sum()),
                "lossy": int((error > loss * rows[:, 2]).sum()),
            }
            entry[kind] = {"shift": shift, "resolution": 2.0 ** (shift - 15), **counts}
            entry["max_abs_error"] = max(entry["max_abs_error"], float(error.max(initial=0)))
            for key, value_ in counts.items():
                totals[key] += value_
        layers.append(entry)
    report = {**totals, "lossy_fraction": totals["lossy"] / max(totals["synapses"], 1)}
    report.update(loss_threshold=loss, layers=layers)
    if x is not None:
        from whetstone import simulate  # imported here: numba stays out of ``whetstone --help``

        reference = simulate.run(net, x)
        fixed = fixed_point_run(net, x)[0]
        changed = fixed != reference.predictions
        report["predictions_changed"] = int(changed.sum())
        report["changed_samples"] = np.nonzero(changed)[0].tolist()[:50]
    return report
