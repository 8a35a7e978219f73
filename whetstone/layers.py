"""Sharpenable activations and the N-hot output decoder.

A *spiking* activation is a bounded activation with a ``sharpness`` in [0, 1]. At
sharpness 0 it is an ordinary differentiable activation; as sharpness grows its
linear region narrows; at sharpness 1 it is exactly a step function, i.e. a neuron
that either fires one binary spike or stays silent. Sharpness is a non-trainable
scalar variable of the layer: it is saved in ``.keras`` files and can be changed
(``layer.set_sharpness(0.5)``) without recompiling the model.

Once fully sharp a layer can still be trained (*honing*): its forward pass is the
exact step and its backward pass is the slope of a surrogate, the smooth activation of
width ``surrogate_width`` (a straight-through estimator)::

    y = H(x - theta) + (s(x) - stop_gradient(s(x)))      s(x) = smooth(x, surrogate_width)

The bracket is exactly 0 in floating point, so ``y`` is the step to the bit, and
``dy/dx = s'(x)``.

Example:
    >>> import keras, numpy as np, whetstone as ws
    >>> act = ws.layers.SpikingBRelu(sharpness=1.0)
    >>> np.asarray(act(np.array([[0.2, 0.5, 0.9]], "float32"))).tolist()
    [[0.0, 1.0, 1.0]]
"""

from __future__ import annotations

import math

import keras
import numpy as np
from keras import ops

__all__ = ["SoftmaxDecode", "Spiking", "SpikingBRelu", "SpikingSigmoid"]

EPSILON = 1e-3
"""Added to the width of the linear region so it never divides by zero."""


def _check_sharpness(value: float, where: str) -> float:
    value = float(value)
    if not 0.0 <= value <= 1.0:
        raise ValueError(
            f"{where}: sharpness must be in [0, 1], got {value}. "
            "Use 0 for the smooth activation and 1 for a step function."
        )
    return value


class Spiking(keras.layers.Layer):
    """Base class of sharpenable activations.

    Subclasses define ``threshold`` (where the fully sharp step fires) and
    ``smooth(x, width)``, the activation whose linear region has the given width.

    Args:
        sharpness: initial sharpness in [0, 1].
        surrogate_width: width of the linear region whose slope is the gradient once
            the layer is fully sharp (honing); 0 turns that gradient off.
    """

    threshold: float = 0.5

    def __init__(self, sharpness: float = 0.0, surrogate_width: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        _check_sharpness(sharpness, f"{type(self).__name__}(sharpness=...)")
        if not (math.isfinite(surrogate_width) and surrogate_width >= 0):
            raise ValueError(
                f"{type(self).__name__}(surrogate_width=...) must be a finite number >= 0, "
                f"got {surrogate_width}. Use 1.0 (the default) or 0 for no gradient when sharp."
            )
        self.surrogate_width = float(surrogate_width)
        self.sharpness = self.add_weight(
            name="sharpness",
            shape=(),
            initializer=keras.initializers.Constant(sharpness),
            trainable=False,
            aggregation="only_first_replica",
        )
        self.supports_masking = True

    def smooth(self, x, width):
        raise NotImplementedError

    def call(self, x):
        sharpness = ops.cast(self.sharpness, x.dtype)
        step = ops.cast(ops.greater_equal(x, self.threshold), x.dtype)
        if self.surrogate_width > 0:
            surrogate = self.smooth(x, self.surrogate_width)
            step = step + (surrogate - ops.stop_gradient(surrogate))  # exactly + 0.0
        return ops.where(sharpness >= 1.0, step, self.smooth(x, 1.0 - sharpness))

    def set_sharpness(self, value: float) -> None:
        """Set the sharpness; takes effect at the next call, no recompiling needed."""
        self.sharpness.assign(_check_sharpness(value, f"layer {self.name!r}"))

    def get_sharpness(self) -> float:
        """The current sharpness as a Python float."""
        return float(ops.convert_to_numpy(self.sharpness))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {
            **super().get_config(),
            "sharpness": self.get_sharpness(),
            "surrogate_width": self.surrogate_width,
        }


@keras.saving.register_keras_serializable(package="whetstone")
class SpikingBRelu(Spiking):
    """Sharpenable bounded ReLU; a step at 0.5 when fully sharp.

    With width ``w = 1 - sharpness``::

        y = clip((x - 0.5) / (w + 1e-3) + 0.5, 0, 1)      if sharpness < 1
        y = 1 if x >= 0.5 else 0                          if sharpness == 1

    At sharpness 0 this is ``clip(x, 0, 1)`` to within 1e-3.

    Example:
        >>> import numpy as np, whetstone as ws
        >>> x = np.array([[0.0, 0.25, 0.5, 0.75, 1.0]], "float32")
        >>> y = ws.layers.SpikingBRelu(sharpness=0.5)(x)
        >>> np.asarray(y, "float64").round(3).tolist()
        [[0.0, 0.001, 0.5, 0.999, 1.0]]
    """

    threshold = 0.5

    def smooth(self, x, width):
        return ops.clip((x - 0.5) / (width + EPSILON) + 0.5, 0.0, 1.0)


@keras.saving.register_keras_serializable(package="whetstone")
class SpikingSigmoid(Spiking):
    """Sharpenable sigmoid; a step at 0 when fully sharp.

    With width ``w = 1 - sharpness``::

        y = sigmoid(x / (w + 1e-3))        if sharpness < 1
        y = 1 if x >= 0 else 0             if sharpness == 1

    At sharpness 0 this is the logistic sigmoid (its slope scaled by 1/1.001).

    Example:
        >>> import numpy as np, whetstone as ws
        >>> x = np.array([[-1.0, 0.0, 1.0]], "float32")
        >>> np.asarray(ws.layers.SpikingSigmoid(sharpness=1.0)(x)).tolist()
        [[0.0, 1.0, 1.0]]
    """

    threshold = 0.0

    def smooth(self, x, width):
        return ops.sigmoid(x / (width + EPSILON))


@keras.saving.register_keras_serializable(package="whetstone")
class SoftmaxDecode(keras.layers.Layer):
    """N-hot output decoder: a population vote turned into class probabilities.

    Each class owns a binary code (a row of ``key``, shape classes x width). The
    input ``a`` (the spikes of the last spiking layer, width units) votes for each
    class by agreement with its code::

        y = softmax((2a - 1) @ (2K - 1)^T)

    Train with ordinary categorical cross-entropy on one-hot labels. The key is
    fixed (non-trainable) and saved with the model.

    Args:
        key: array of shape (num_classes, width) with entries 0 or 1, e.g. from
            ``whetstone.encoding.key_generator``.

    Example:
        >>> import numpy as np, whetstone as ws
        >>> key = ws.encoding.key_generator(3, 6, overlapping=False, seed=0)
        >>> layer = ws.layers.SoftmaxDecode(key)
        >>> probs = np.asarray(layer(key.astype("float32")))  # each code votes for itself
        >>> probs.argmax(axis=1).tolist()
        [0, 1, 2]
    """

    def __init__(self, key, **kwargs):
        super().__init__(**kwargs)
        key = np.asarray(key)
        if key.ndim != 2 or not np.isin(key, (0, 1)).all():
            raise ValueError(
                f"SoftmaxDecode: key must be a 2-D array of 0s and 1s (classes x width), "
                f"got shape {key.shape} with values {np.unique(key)[:5].tolist()}. "
                "Use whetstone.encoding.key_generator(num_classes, width)."
            )
        self.key = key.astype("float32")
        self._signed_key_t = ops.convert_to_tensor((2.0 * self.key - 1.0).T)

    @property
    def num_classes(self) -> int:
        return self.key.shape[0]

    @property
    def width(self) -> int:
        return self.key.shape[1]

    def build(self, input_shape):
        if input_shape[-1] is not None and input_shape[-1] != self.width:
            raise ValueError(
                f"SoftmaxDecode {self.name!r}: its input has {input_shape[-1]} units but "
                f"the key is {self.width} wide. Make the layer before it "
                f"{self.width} units wide, or generate a key of width {input_shape[-1]}."
            )

    def call(self, a):
        signed_key_t = ops.cast(self._signed_key_t, a.dtype)
        return ops.softmax(ops.matmul(2.0 * a - 1.0, signed_key_t), axis=-1)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.num_classes)

    def get_config(self):
        return {**super().get_config(), "key": self.key.astype(int).tolist()}
