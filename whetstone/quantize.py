"""Target weight formats: the grid on which a back end stores a stage's weights and bias.

A chip does not store float32 weights. Each target here describes the values it *can*
store for one stage (``grid(stage, ...)`` returns the stage's weights and bias moved to
the nearest of them), and :func:`project` moves every on-chip stage of a network there.
A network already on the grid is unchanged by :func:`project` (the grids are idempotent),
and the target then computes exactly what the float network computes: every weight it
stores equals the float weight, up to one positive scale per neuron that it applies to
the bias and threshold too. ``whetstone.weight_sharpening.WeightSharpener`` trains a
Keras model onto a grid.

Targets (``get(name)``):

* ``"loihi"``: nengo-loihi's discretisation for the block partition the back end builds
  (:func:`whetstone.backends.loihi.plan`). A block's largest weight ``M`` sets its scale;
  weights are stored as 8-bit signed integers ``k`` with ``|k| <= 127`` (nengo-loihi's
  ``round(w * 255 / (2 M))``, clipped). The grid is ``w = k * M / 127`` and the bias
  ``b = theta + (K + 1/2) * M / 127`` (integer ``-4094 <= K < 4094``: the bias is one more
  weight, from an always-active input, set half a step off so that no sum ever lands on
  the threshold).
  On it, nengo-loihi stores exactly ``k`` (for every synapse, whatever its weight
  exponent) and the Loihi back end sets the compartment so that it fires iff
  ``sum(k s) + K + 1/2 > 0`` (see ``whetstone.backends.loihi``): float32 Keras, which is
  at least half a step from the threshold, makes the same decision; there are no ties.
* ``"spinnaker"``: sPyNNaker's 16-bit weights: a population's excitatory (inhibitory)
  weights are multiples of ``2**(shift - 15)``, ``shift`` its ring-buffer shift (the
  smallest with ``2**shift >`` the largest summed excitatory (inhibitory) input of one
  neuron), and ``theta - b`` a multiple of ``2**-15`` (s16.15).
* ``"bits=n"`` (:class:`Bits`): plain n-bit fixed point per stage: ``w = k * 2**e``,
  ``|k| <= 2**(n-1) - 1``, ``e`` the smallest exponent that holds the largest weight;
  ``b - theta`` a multiple of ``2**e`` too.

The host encoder (stage 0 with ``input_encoding="host"``) and the host decoder compute
in float on the host, so they are left alone. OR-pools have no weights to train.

BatchNormalization: a stage's weights are the *folded* ones (``W * gamma / sigma``), a
product that changes with every batch while BatchNorm trains. A grid is only kept by
weights that are themselves trained, so fold first: :func:`fold_batch_norm` returns the
same function with every BatchNormalization folded into the Dense/Conv layer before it.

Example:
    >>> import numpy as np
    >>> from whetstone.network import Stage
    >>> stage = Stage("d", "dense", (3,), (1,), np.array([[0.3], [-0.05], [0.1]], "f4"))
    >>> w, b = Bits(4).grid(stage)        # e = -4: multiples of 1/16, |k| <= 7
    >>> (w.ravel() * 16).tolist(), float(b[0] - stage.threshold) * 16
    ([5.0, -1.0, 2.0], -8.0)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from whetstone.network import SpikingNetwork, Stage

__all__ = ["Bits", "Format", "Loihi", "SpiNNaker", "fold_batch_norm", "get", "off_grid", "project"]

LOIHI_STEPS = 127
"""Largest stored Loihi weight magnitude (8-bit signed, nengo-loihi's ``shift_bits = 1``)."""
LOIHI_BIAS_STEPS = 4094
"""Largest Loihi bias in weight steps: nengo-loihi's ``BIAS_MAX = 4095 * 2**7`` voltage units
with one weight step = 128 units (beyond it nengo-loihi lowers every weight's exponent)."""
SPINNAKER_FRACTION = 15
"""SpiNNaker weights: ``rint(w * 2**(15 - shift))`` in 16 bits; thresholds s16.15."""


def _bias(stage: Stage) -> np.ndarray:
    if stage.bias is None:
        return np.zeros(stage.output_shape[-1], np.float64)
    if stage.bias.shape != stage.output_shape[-1:]:
        raise ValueError(
            f"stage {stage.name!r} has a bias per position {stage.bias.shape} (a BatchNorm "
            "folded through 'same' padding); a grid needs one bias per channel: fold the "
            "BatchNormalization into the convolution before it (fold_batch_norm)."
        )
    return stage.bias.astype(np.float64)


def _round_to(values: np.ndarray, step) -> np.ndarray:
    """``values`` to the nearest multiple of ``step`` (float64 in, float32 out)."""
    return (np.round(values / step) * step).astype(np.float32)


def _out_axis(stage: Stage, per_output: np.ndarray) -> np.ndarray:
    """A value per output channel broadcast against the stage's weights."""
    return per_output.reshape((1,) * (stage.weights.ndim - 1) + (-1,))


class Format:
    """A target's weight format: ``grid(stage, ...)`` gives the weights and bias on it."""

    name = "format"

    def grid(self, stage: Stage, **context) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def contexts(self, net: SpikingNetwork) -> dict[str, dict]:
        """Per on-chip stage name, the keyword arguments ``grid`` needs for it."""
        return {stage.name: {} for stage in _on_chip(net)}


@dataclass(frozen=True)
class Bits(Format):
    """Plain ``bits``-bit signed fixed point per stage, power-of-two scale.

    ``w = k * 2**e`` with ``|k| <= 2**(bits-1) - 1`` and ``e`` the smallest exponent whose
    range holds ``max |W|``; ``b - theta`` on the same step (no range limit).
    """

    bits: int = 8

    def __post_init__(self):
        if not isinstance(self.bits, int) or self.bits < 2:
            raise ValueError(f"bits must be an integer >= 2, got {self.bits!r}.")

    @property
    def name(self) -> str:
        return f"bits={self.bits}"

    def step(self, weights: np.ndarray) -> float:
        """``2**e``, the grid step of a stage whose largest weight is ``max |weights|``."""
        largest = float(np.abs(weights).max(initial=0.0))
        if largest == 0.0:
            return 1.0
        return 2.0 ** math.ceil(math.log2(largest / (2 ** (self.bits - 1) - 1)))

    def grid(self, stage: Stage, **context) -> tuple[np.ndarray, np.ndarray]:
        step = self.step(stage.weights)
        theta = np.float64(stage.threshold)
        bias = theta + np.round((_bias(stage) - theta) / step) * step
        return _round_to(stage.weights.astype(np.float64), step), bias.astype(np.float32)


@dataclass(frozen=True)
class Loihi(Format):
    """nengo-loihi's 8-bit weights, one scale per block (the back end's partition).

    ``block_shapes``: pinned block shapes, as for ``get("loihi").run``; the rest are
    partitioned as the back end does.
    """

    block_shapes: tuple = ()
    name = "loihi"

    def contexts(self, net: SpikingNetwork) -> dict[str, dict]:
        from whetstone.backends.loihi import plan

        parts = plan(net, dict(self.block_shapes) or None)
        weighted = {stage.name for stage in _on_chip(net)}  # not the OR-pools
        return {p.name: {"block_shape": p.block_shape} for p in parts if p.name in weighted}

    @staticmethod
    def block_max(stage: Stage, block_shape: tuple[int, ...]) -> np.ndarray:
        """Per output neuron, the largest weight magnitude of its block (nengo-loihi's
        ``w_max``, which sets the block's scale), shaped like the stage's output."""
        magnitude = np.abs(stage.weights.astype(np.float64))
        per_channel = magnitude.reshape(-1, magnitude.shape[-1]).max(axis=0)
        if stage.kind == "dense":
            neuron_max = per_channel
        else:  # every position of a channel sees the whole kernel of that channel
            neuron_max = np.broadcast_to(per_channel, stage.output_shape).ravel()
        index = np.indices(stage.output_shape).reshape(len(stage.output_shape), -1)
        tiles = [math.ceil(n / b) for n, b in zip(stage.output_shape, block_shape, strict=True)]
        block = np.ravel_multi_index(
            tuple(i // b for i, b in zip(index, block_shape, strict=True)), tiles
        )
        largest = np.zeros(math.prod(tiles))
        np.maximum.at(largest, block, neuron_max)
        return largest[block].reshape(stage.output_shape)

    def steps(self, stage: Stage, block_shape: tuple[int, ...]) -> np.ndarray:
        """The grid step per output channel, ``M / 127`` (1 where a block has no weights).

        Raises ValueError when a convolution's channel is split over blocks of different
        scales (pin a block shape with whole channel groups on every position).
        """
        largest = self.block_max(stage, block_shape)
        per_channel = largest.reshape(-1, stage.output_shape[-1])
        if stage.kind != "dense" and not (per_channel == per_channel[0]).all():
            raise ValueError(
                f"stage {stage.name!r}: block shape {block_shape} gives one channel "
                "different weight scales; use block shapes whose channel groups are the same "
                "at every position."
            )
        steps = per_channel[0] if stage.kind != "dense" else largest.ravel()
        return np.where(steps > 0, steps / LOIHI_STEPS, 1.0)

    def grid(self, stage: Stage, block_shape=None, **context) -> tuple[np.ndarray, np.ndarray]:
        block_shape = tuple(block_shape or stage.output_shape)
        step = self.steps(stage, block_shape)
        theta = np.float64(stage.threshold)
        weights = _round_to(stage.weights.astype(np.float64), _out_axis(stage, step))
        steps = np.clip(
            np.floor((_bias(stage) - theta) / step), -LOIHI_BIAS_STEPS, LOIHI_BIAS_STEPS - 1
        )
        bias = theta + (steps + 0.5) * step  # half a step off the sums: never a tie
        return weights, bias.astype(np.float32)


@dataclass(frozen=True)
class SpiNNaker(Format):
    """sPyNNaker's 16-bit weights with each population's ring-buffer shifts."""

    name = "spinnaker"

    @staticmethod
    def shifts(stage: Stage) -> tuple[int, int]:
        """Ring-buffer shifts (excitatory, inhibitory) of a stage, as sPyNNaker picks them."""
        from whetstone.backends.spinnaker import _ring_buffer_shift, connections

        rows = connections(stage)
        post = rows[:, 1].astype(np.int64)
        sums = [
            np.bincount(post, np.clip(sign * rows[:, 2], 0, None), stage.num_neurons).max(initial=0)
            for sign in (1.0, -1.0)
        ]
        return _ring_buffer_shift(float(sums[0])), _ring_buffer_shift(float(sums[1]))

    def grid(self, stage: Stage, **context) -> tuple[np.ndarray, np.ndarray]:
        weights = stage.weights.astype(np.float64)
        shifts = (-100, -100)
        for _ in range(8):  # rounding up may raise a summed input over a power of two
            found = self.shifts(replace(stage, weights=weights.astype(np.float32)))
            shifts = tuple(max(a, b) for a, b in zip(shifts, found, strict=True))
            exc, inh = (2.0 ** (s - SPINNAKER_FRACTION) for s in shifts)
            new = np.where(
                weights >= 0, np.round(weights / exc) * exc, np.round(weights / inh) * inh
            )
            if np.array_equal(new, weights) and found == shifts:
                break
            weights = new
        theta = np.float64(stage.threshold)
        unit = 2.0**-SPINNAKER_FRACTION
        bias = theta - np.round((theta - _bias(stage)) / unit) * unit
        return weights.astype(np.float32), bias.astype(np.float32)


FORMATS = {"loihi": Loihi, "spinnaker": SpiNNaker}


def get(target: str | Format) -> Format:
    """The format of ``target``: ``"loihi"``, ``"spinnaker"``, ``"bits=n"`` or a Format.

    Example:
        >>> get("bits=6"), get("loihi").name
        (Bits(bits=6), 'loihi')
    """
    if isinstance(target, Format):
        return target
    if isinstance(target, str) and target.startswith("bits="):
        try:
            return Bits(int(target[5:]))
        except ValueError as error:
            raise ValueError(f"target {target!r}: write bits=N with an integer N >= 2.") from error
    if target not in FORMATS:
        raise ValueError(
            f"unknown weight format {target!r}; choose 'loihi', 'spinnaker' or 'bits=N' "
            "(e.g. 'bits=8')."
        )
    return FORMATS[target]()


def _on_chip(net: SpikingNetwork) -> list[Stage]:
    stages = net.stages[1:] if net.input_encoding == "host" else net.stages
    return [stage for stage in stages if stage.kind != "pool"]


def grids(net: SpikingNetwork, target: str | Format) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per on-chip stage name, its weights and bias on ``target``'s grid."""
    fmt = get(target)
    contexts = fmt.contexts(net)
    return {s.name: fmt.grid(s, **contexts.get(s.name, {})) for s in _on_chip(net)}


def project(net: SpikingNetwork, target: str | Format) -> SpikingNetwork:
    """``net`` with every on-chip stage's weights and bias moved onto ``target``'s grid.

    Example:
        >>> import numpy as np
        >>> from whetstone.network import Stage, SpikingNetwork
        >>> stage = Stage("d", "dense", (2,), (1,), np.array([[0.3], [0.1001]], "f4"))
        >>> net = SpikingNetwork((2,), [stage], input_encoding="binary")
        >>> on = project(net, "loihi")
        >>> (on.stages[0].weights.ravel() * 127 / 0.3).round(3).tolist()
        [127.0, 42.0]
        >>> off_grid(on, "loihi"), off_grid(net, "loihi")
        ([], ['d'])
    """
    on = grids(net, target)
    stages = [
        replace(s, weights=on[s.name][0], bias=on[s.name][1]) if s.name in on else s
        for s in net.stages
    ]
    return replace(net, stages=stages)


def off_grid(net: SpikingNetwork, target: str | Format) -> list[str]:
    """Names of the on-chip stages whose weights or bias ``target`` would change."""
    changed = []
    for stage in _on_chip(net):
        weights, bias = grids(net, target)[stage.name]
        if not (np.array_equal(weights, stage.weights) and np.array_equal(bias, _bias(stage))):
            changed.append(stage.name)
    return changed


# ---------------------------------------------------------------- BatchNorm folding


def fold_batch_norm(model):
    """A copy of ``model`` with each BatchNormalization folded into the layer before it.

    ``W' = W * gamma / sigma``, ``b' = (b - mean) * gamma / sigma + beta`` per channel,
    with ``sigma = sqrt(moving_variance + epsilon)``. Every BatchNormalization must follow a
    Dense or Conv layer (a MaxPooling between them is allowed when its scales are
    positive). The copy (a Sequential) computes the same function at inference, and its
    trainable weights *are* the effective weights, so a weight sharpener can put them on a
    grid. Compile the copy before training it.

    Example:
        >>> import keras, numpy as np, whetstone as ws
        >>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2),
        ...     keras.layers.BatchNormalization(), ws.layers.SpikingBRelu()])
        >>> folded = fold_batch_norm(model)
        >>> [type(layer).__name__ for layer in folded.layers]
        ['Dense', 'SpikingBRelu']
    """
    import keras

    from whetstone.convert import layer_chain

    linear_types = (keras.layers.Dense, keras.layers.Conv1D, keras.layers.Conv2D)
    pool_types = (keras.layers.MaxPooling1D, keras.layers.MaxPooling2D)
    kept: list[tuple[keras.layers.Layer, list[np.ndarray]]] = []
    linear, pooled = None, False
    for layer in layer_chain(model):
        if isinstance(layer, keras.layers.BatchNormalization):
            _fold_into(linear, layer, pooled)
            continue
        kept.append((type(layer).from_config(layer.get_config()), layer.get_weights()))
        if isinstance(layer, linear_types):
            linear, pooled = kept[-1], False
        elif isinstance(layer, pool_types):
            pooled = True
        elif not isinstance(layer, keras.layers.Dropout):
            linear = None
    layers = [keras.Input(model.inputs[0].shape[1:])] + [clone for clone, _ in kept]
    copy = keras.Sequential(layers, name=model.name)
    for clone, weights in kept:
        if weights:
            clone.set_weights(weights)
    return copy


def _fold_into(linear, norm, pooled: bool) -> None:
    """Fold ``norm`` into the pending ``(clone, [kernel, bias])`` of the layer before it."""
    from whetstone.convert import ConversionError

    if linear is None:
        raise ConversionError(
            f"BatchNormalization {norm.name!r} does not follow a Dense/Conv layer, so it "
            "cannot be folded into trained weights; move it directly after the Dense/Conv."
        )
    clone, weights = linear
    if len(weights) != 2:
        raise ConversionError(
            f"layer {clone.name!r} has use_bias=False, so BatchNormalization {norm.name!r} "
            "cannot fold into it; build it with use_bias=True."
        )
    n = norm.moving_mean.shape[0]
    gamma = np.asarray(norm.gamma.numpy(), np.float64) if norm.scale else np.ones(n)
    beta = np.asarray(norm.beta.numpy(), np.float64) if norm.center else np.zeros(n)
    mean = np.asarray(norm.moving_mean.numpy(), np.float64)
    variance = np.asarray(norm.moving_variance.numpy(), np.float64)
    scale = gamma / np.sqrt(variance + norm.epsilon)
    if pooled and (scale < 0).any():
        raise ConversionError(
            f"BatchNormalization {norm.name!r} has negative scales after a max pooling, so "
            "max and scale do not commute; put it before the pooling."
        )
    kernel, bias = (np.asarray(w, np.float64) for w in weights)
    weights[:] = [(kernel * scale).astype(np.float32), ((bias - mean) * scale + beta).astype("f4")]
