"""Read and set the sharpness of a model's spiking layers.

A model's spiking layers are listed bottom-up (from the input), nested models
included. A single *model sharpness* ``v`` in [0, 1] maps onto the layers either
uniformly (every layer at ``v``) or bottom-up: with ``L`` layers, the first
``int(v * L)`` layers are fully sharp and the next holds the remainder.

Example:
    >>> import keras, whetstone as ws
    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3),
    ...     ws.layers.SpikingBRelu(name="a"), keras.layers.Dense(2),
    ...     ws.layers.SpikingBRelu(name="b")])
    >>> ws.sharpness.set_model_sharpness(model, 0.75)
    >>> ws.sharpness.get_sharpness(model)
    {'a': 1.0, 'b': 0.5}
    >>> ws.sharpness.is_fully_sharpened(model)
    False
"""

from __future__ import annotations

import math

import keras

from whetstone.layers import Spiking

__all__ = [
    "bottom_up_split",
    "get_model_sharpness",
    "get_sharpness",
    "is_fully_sharpened",
    "require_spiking_layers",
    "set_model_sharpness",
    "set_sharpness",
    "spiking_layers",
]


def spiking_layers(model: keras.Model) -> list[Spiking]:
    """The model's spiking layers bottom-up, descending into nested models.

    Example:
        >>> import keras, whetstone as ws
        >>> inner = keras.Sequential([keras.Input((2,)), ws.layers.SpikingBRelu(name="x")])
        >>> outer = keras.Sequential([keras.Input((2,)), inner, ws.layers.SpikingSigmoid(name="y")])
        >>> [layer.name for layer in ws.sharpness.spiking_layers(outer)]
        ['x', 'y']
    """
    found = []
    for layer in model.layers:
        if isinstance(layer, Spiking):
            found.append(layer)
        elif isinstance(layer, keras.Model):
            found.extend(spiking_layers(layer))
    return found


def require_spiking_layers(model: keras.Model) -> list[Spiking]:
    """``spiking_layers(model)``, or a clear error when there are none."""
    layers = spiking_layers(model)
    if not layers:
        raise ValueError(
            f"model {model.name!r} has no spiking layers to sharpen. Replace its hidden "
            "activations with whetstone.layers.SpikingBRelu() (or SpikingSigmoid())."
        )
    return layers


def _layers_by_name(model: keras.Model) -> dict[str, Spiking]:
    layers = require_spiking_layers(model)
    names = [layer.name for layer in layers]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ValueError(
            f"model {model.name!r} has several spiking layers named {repeated} (nested "
            "models can repeat a name), so they cannot be told apart by name. Give each "
            "spiking layer a unique name=..., or use set_model_sharpness / spiking_layers."
        )
    return dict(zip(names, layers, strict=True))


def get_sharpness(model: keras.Model) -> dict[str, float]:
    """Per-layer sharpness, bottom-up, as ``{layer name: sharpness}``."""
    return {name: layer.get_sharpness() for name, layer in _layers_by_name(model).items()}


def set_sharpness(model: keras.Model, values: dict[str, float]) -> None:
    """Set the sharpness of the named spiking layers (``{layer name: value}``).

    Example:
        >>> import keras, whetstone as ws
        >>> m = keras.Sequential([keras.Input((2,)), ws.layers.SpikingBRelu(name="a")])
        >>> ws.sharpness.set_sharpness(m, {"a": 0.3}); round(ws.sharpness.get_sharpness(m)["a"], 3)
        0.3
    """
    layers = _layers_by_name(model)
    unknown = sorted(set(values) - set(layers))
    if unknown:
        raise ValueError(
            f"model {model.name!r} has no spiking layer named {unknown}; "
            f"its spiking layers are {list(layers)}."
        )
    for name, value in values.items():
        layers[name].set_sharpness(value)


def bottom_up_split(value: float, num_layers: int) -> list[float]:
    """Split a model sharpness over ``num_layers`` layers, bottom-up.

    Example:
        >>> bottom_up_split(0.5, 3)
        [1.0, 0.5, 0.0]
    """
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"model sharpness must be in [0, 1], got {value}.")
    scaled = value * num_layers
    full = math.floor(scaled + 1e-9)  # 2.9999999999999996 counts as 3 layers
    remainder = 0.0 if scaled - full < 1e-9 else scaled - full
    return [1.0 if i < full else remainder if i == full else 0.0 for i in range(num_layers)]


def set_model_sharpness(model: keras.Model, value: float, bottom_up: bool = True) -> None:
    """Set the whole model's sharpness, bottom-up (default) or uniformly."""
    layers = require_spiking_layers(model)
    split = bottom_up_split(value, len(layers)) if bottom_up else [value] * len(layers)
    for layer, layer_value in zip(layers, split, strict=True):
        layer.set_sharpness(layer_value)


def get_model_sharpness(model: keras.Model) -> float:
    """The mean sharpness of the spiking layers (inverse of the bottom-up split)."""
    values = [layer.get_sharpness() for layer in require_spiking_layers(model)]
    return sum(values) / len(values)


def is_fully_sharpened(model: keras.Model) -> bool:
    """True when every spiking layer is exactly at sharpness 1."""
    return all(layer.get_sharpness() == 1.0 for layer in require_spiking_layers(model))
