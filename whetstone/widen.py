"""Widen a spiking layer into staggered copies before sharpening (Net2Net-style).

A sharp neuron says one bit. Where a layer loses too much when its bounded ReLUs become
steps, ``widen(model, "dense_1", copies=4)`` gives the next layer more levels instead:
every unit of the named Dense or Conv layer becomes ``copies`` units with the same
weights, each with its activation's input shifted by

    offset_k = spread * (k - (copies - 1) / 2) / copies,      k = 0 .. copies - 1,

and the next linear layer's weights from the unit are shared among its copies (divided
by ``copies``). While the activations are bounded ReLUs (``clip(x, 0, 1)``, sharpness 0)
the widened network computes

    mean_k clip(x + offset_k, 0, 1),

which equals ``clip(x, 0, 1)`` wherever ``x`` is more than ``spread / 2 - spread / (2 *
copies)`` away from both ends of the clip (with the default ``spread=1``: on
``[3/8, 5/8]`` for four copies), and differs from it by at most ``spread / 8`` elsewhere.
Once sharp, the copies fire at the staggered thresholds ``0.5 - offset_k``, so the next
layer reads each unit's value on ``copies + 1`` levels instead of two (Chen, Goodfellow
and Shlens 2016, *Net2Net: accelerating learning via knowledge transfer*, ICLR, widen a
layer by replicating units and splitting their outgoing weights).

The bound holds per unit; the next layer sums it over its fan-in. Widen the last hidden
layer (a few hundred inputs per readout neuron, small weights); an early convolution's
neurons read every channel of a window through large weights, so check the widened
ANN's accuracy there, and lower ``spread`` if it dropped.

The offset goes into the BatchNormalization's beta where one sits between the linear
layer and its activation, else into the linear layer's bias. Between the activation
and the next linear layer only per-channel layers may sit (Dropout, noise, pooling,
Flatten), channels last.

Example:
    >>> import keras, numpy as np, whetstone as ws
    >>> keras.utils.set_random_seed(0)
    >>> model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(5, name="hidden"),
    ...     ws.layers.SpikingBRelu(), keras.layers.Dense(3, name="readout")])
    >>> wide = ws.widen.widen(model, "hidden", copies=4)
    >>> wide.get_layer("hidden").units, tuple(wide.get_layer("readout").kernel.shape)
    (20, (20, 3))
    >>> x = np.random.default_rng(0).uniform(-1, 1, size=(256, 6)).astype("float32")
    >>> gap = np.abs(wide.predict(x, verbose=0) - model.predict(x, verbose=0)).max()
    >>> bool(gap < 0.125 * np.abs(model.get_layer("readout").kernel.numpy()).sum(axis=0).max())
    True
"""

from __future__ import annotations

import keras
import numpy as np

from whetstone.convert import layer_graph
from whetstone.layers import Spiking

__all__ = ["WidenError", "offsets", "widen"]

L = keras.layers
LINEAR = (L.Dense, L.Conv1D, L.Conv2D)
PER_CHANNEL = (
    L.Dropout, L.GaussianNoise, L.GaussianDropout, L.AlphaDropout, L.SpatialDropout1D,
    L.SpatialDropout2D, L.MaxPooling1D, L.MaxPooling2D, L.AveragePooling1D, L.AveragePooling2D,
    L.GlobalAveragePooling1D, L.GlobalAveragePooling2D, L.GlobalMaxPooling1D,
    L.GlobalMaxPooling2D, L.Flatten,
)  # fmt: skip
"""Layers that act on each channel alone (channels last), so copies of a channel stay
copies; after a Flatten, the next layer's rows are read per position and channel."""


class WidenError(ValueError):
    """The layer cannot be widened; the message names the layer and what to do."""


def offsets(copies: int, spread: float = 1.0) -> np.ndarray:
    """The input shift of each copy: ``spread * (k - (copies - 1) / 2) / copies``.

    Example:
        >>> offsets(4).tolist()
        [-0.375, -0.125, 0.125, 0.375]
    """
    if copies < 1:
        raise WidenError(f"copies must be at least 1, got {copies}.")
    return (spread * (np.arange(copies) - (copies - 1) / 2) / copies).astype("float32")


def _units(layer) -> int:
    return layer.units if isinstance(layer, L.Dense) else layer.filters


def _path(model: keras.Model, name: str) -> tuple[list, keras.layers.Layer]:
    """The layers from ``name`` up to (without) the next linear layer, and that layer."""
    graph = layer_graph(model)
    layers = {layer.name: layer for layer, _, _ in graph}
    if name not in layers or not isinstance(layers[name], LINEAR):
        names = [lay.name for lay, _, _ in graph if isinstance(lay, LINEAR)]
        raise WidenError(f"no Dense or Conv layer {name!r} in the model; it has {names}.")
    readers: dict[int, list] = {}
    for layer, inputs, _ in graph:
        for tensor in inputs:
            readers.setdefault(id(tensor), []).append(layer)
    outputs = {id(layer): output for layer, _, output in graph}
    path = [layers[name]]
    while True:
        users = readers.get(id(outputs[id(path[-1])]), [])
        if not users:
            raise WidenError(
                f"layer {path[-1].name!r} is the model's output, with no layer after "
                f"{name!r} to share the copies; widen a hidden spiking layer."
            )
        if len(users) != 1:
            raise WidenError(
                f"layer {path[-1].name!r} feeds {len(users)} layers; widening needs one "
                "path from the widened layer to the next Dense or Conv layer."
            )
        (user,) = users
        if isinstance(user, LINEAR):
            return path, user
        if not isinstance(user, (L.BatchNormalization, Spiking, *PER_CHANNEL)):
            raise WidenError(
                f"layer {user.name!r} ({type(user).__name__}) sits between {name!r} and the "
                "next linear layer; only BatchNormalization, one spiking activation and "
                "per-channel layers (Dropout, noise, pooling, Flatten) may."
            )
        path.append(user)


def _offset_slot(path: list, name: str) -> tuple[keras.layers.Layer, int]:
    """Where the copies' offsets go: the layer and the index of its bias or beta."""
    spiking = [layer for layer in path if isinstance(layer, Spiking)]
    norms = [layer for layer in path if isinstance(layer, L.BatchNormalization)]
    if len(spiking) != 1:
        raise WidenError(
            f"layer {name!r} must be followed by one spiking activation before the next "
            f"linear layer; found {len(spiking)}. Rewrite a ReLU model with "
            "ws.rewrite.sharpenable first."
        )
    if len(norms) > 1 or (norms and path.index(norms[0]) > path.index(spiking[0])):
        raise WidenError(
            f"widening {name!r} needs at most one BatchNormalization, before its activation."
        )
    if norms and not norms[0].center:
        raise WidenError(
            f"BatchNormalization {norms[0].name!r} has no beta (center=False) to take the "
            "copies' offsets; build it with center=True."
        )
    if norms:
        return norms[0], int(norms[0].scale)  # weights: [gamma], beta, mean, variance
    if not path[0].use_bias:
        raise WidenError(
            f"layer {name!r} has no bias and no BatchNormalization to take the copies' "
            "offsets; build it with use_bias=True."
        )
    return path[0], 1


def _shared(kernel: np.ndarray, copies: int, width: int) -> np.ndarray:
    """The next layer's kernel reading ``copies`` blocks of ``width`` channels, each unit's
    weight divided among its copies (input rows by position, then channel, as Flatten
    lays them out)."""
    if kernel.ndim > 2:  # a convolution: (..., channels, filters)
        return np.concatenate([kernel] * copies, axis=-2) / copies
    by_position = kernel.reshape(-1, width, kernel.shape[-1])
    return np.concatenate([by_position] * copies, axis=1).reshape(-1, kernel.shape[-1]) / copies


def widen(model: keras.Model, name: str, copies: int, spread: float = 1.0) -> keras.Model:
    """A clone of ``model`` with each unit of layer ``name`` as ``copies`` staggered copies.

    ``spread`` is the range the offsets cover, in units of the activation's input (1: the
    bounded ReLU's linear region). The clone is not compiled; weights of every other
    layer are copied unchanged. See the module docstring for the maths.
    """
    shift = offsets(copies, spread)
    path, consumer = _path(model, name)
    slot, index = _offset_slot(path, name)
    top = {id(layer) for layer in model.layers}
    if any(id(layer) not in top for layer in (*path, consumer)):
        raise WidenError(
            f"layer {name!r} or the layers after it sit inside a nested model; widen the "
            "nested model itself."
        )
    first = [
        lay.name
        for lay in (*path, consumer)
        if getattr(lay, "data_format", None) == "channels_first"
    ]
    if first:
        raise WidenError(f"layers {first} are channels_first; widening needs channels_last.")
    target, width = path[0], _units(path[0])

    def clone(layer):
        config = layer.get_config()
        if layer is target:
            config["units" if isinstance(layer, L.Dense) else "filters"] = copies * width
        return type(layer).from_config(config)

    wide = keras.models.clone_model(model, clone_function=clone)
    for old in (layer for layer in model.layers if layer.weights):
        weights = old.get_weights()
        if old is target:
            weights = [np.concatenate([w] * copies, axis=-1) for w in weights]
        elif old is slot:  # the BatchNormalization (a bias slot is the target, above)
            weights = [np.tile(w, copies) for w in weights]
        elif old is consumer:
            weights = [_shared(weights[0], copies, width), *weights[1:]]
        if old is slot:
            weights[index] = weights[index] + np.repeat(shift, width)
        wide.get_layer(old.name).set_weights(weights)
    return wide
