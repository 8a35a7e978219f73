"""A spike budget: an activity regularizer that trains a sharp network to spike less.

Every spike costs energy on a chip: a spike of stage ``l`` triggers one synaptic
operation per synapse it reaches (``whetstone.energy``). :class:`SpikeBudget` adds to
the loss, per spiking layer with ``n`` neurons and outputs ``y_b`` of sample ``b``::

    R(y) = strength * mean_b max(0, r_b - rate)        r_b = sum_i y_bi / n

``r_b`` is the fraction of the layer's neurons that fire for sample ``b``; ``rate`` is
the budget (0: every spike costs), ``strength`` its weight against the task loss. The
hinge leaves a layer alone once it fires within its budget.

A fully sharp layer's forward pass is a step, whose true gradient is zero; the budget
acts through the honing surrogate (``whetstone.layers.Spiking``): with the bounded
ReLU's surrogate of width ``w`` around the threshold ``theta``::

    dR/dx_bi = strength / (n B) * [r_b > rate] * (1/w) [|x_bi - theta| < w/2]

for a batch of ``B``. It lowers the pre-activations of the neurons near their threshold,
where the task loss, pushing the other way, decides which spikes are worth keeping.
So the budget belongs in honing or in a fine-tune of a sharp model (a few epochs at a
low learning rate); before a layer is sharp it penalises the smooth activation instead.

:func:`set_spike_budget` puts one on every spiking layer of a model (compile after it).
The regularizer is a Keras object: it is saved with the model (the layer's
``activity_regularizer``) and restored on loading.

Example:
    >>> import keras, numpy as np, whetstone as ws
    >>> budget = SpikeBudget(strength=2.0, rate=0.25)
    >>> y = np.array([[1, 1, 0, 0], [1, 0, 0, 0]], "float32")   # rates 0.5 and 0.25
    >>> float(budget(y))          # summed over the batch: Keras divides by its size
    0.5
    >>> keras.regularizers.deserialize(keras.regularizers.serialize(budget)).get_config()
    {'strength': 2.0, 'rate': 0.25}
"""

from __future__ import annotations

import math

import keras
from keras import ops

from whetstone.layers import Spiking

__all__ = ["SpikeBudget", "set_spike_budget"]


@keras.saving.register_keras_serializable(package="whetstone")
class SpikeBudget(keras.regularizers.Regularizer):
    """Penalise a spiking layer's firing rate above ``rate`` with weight ``strength``.

    Args:
        strength: weight of the penalty (loss per unit of firing rate above budget), >= 0.
        rate: the budget, the fraction of the layer's neurons allowed to fire per
            inference, in [0, 1].

    Returns, for a batch ``y`` of shape ``(B, ...)``, ``strength * sum_b max(0, r_b -
    rate)``; Keras divides an activity regularizer by the batch size, so the loss term is
    the batch mean.
    """

    def __init__(self, strength: float = 1.0, rate: float = 0.0):
        if not (math.isfinite(strength) and strength >= 0):
            raise ValueError(f"SpikeBudget: strength must be a finite number >= 0, got {strength}.")
        if not 0.0 <= rate <= 1.0:
            raise ValueError(
                f"SpikeBudget: rate is the fraction of neurons allowed to fire, in [0, 1]; "
                f"got {rate}."
            )
        self.strength, self.rate = float(strength), float(rate)

    def __call__(self, y):
        y = ops.reshape(y, (ops.shape(y)[0], -1))
        rates = ops.mean(y, axis=1)
        return self.strength * ops.sum(ops.relu(rates - self.rate))

    def get_config(self) -> dict:
        return {"strength": self.strength, "rate": self.rate}


def set_spike_budget(
    model: keras.Model, strength: float, rate: float = 0.0, layers: list[str] | None = None
) -> list[str]:
    """Give layers of ``model`` a :class:`SpikeBudget` (strength 0 removes it).

    ``layers``: names of layers whose outputs are spikes: spiking layers, or a max
    pooling of one (an OR-pool, whose spikes are what the next stage receives); default:
    every spiking layer. Returns the names. Compile the model afterwards: a compiled
    training step keeps the regularizers it was traced with.

    Example:
        >>> import whetstone as ws
        >>> model = ws.models.dense_mnist(head="readout")
        >>> set_spike_budget(model, strength=0.5)
        ['spiking_1', 'spiking_2']
        >>> model.get_layer("spiking_1").activity_regularizer.get_config()
        {'strength': 0.5, 'rate': 0.0}
    """
    budget = SpikeBudget(strength, rate) if strength > 0 else None
    if layers is None:
        chosen = [
            lay for lay in model._flatten_layers(include_self=False) if isinstance(lay, Spiking)
        ]
    else:
        known = {lay.name: lay for lay in model._flatten_layers(include_self=False)}
        missing = [name for name in layers if name not in known]
        if missing:
            raise ValueError(f"set_spike_budget: model {model.name!r} has no layer {missing}.")
        chosen = [known[name] for name in layers]
    if not chosen:
        raise ValueError(
            f"set_spike_budget: model {model.name!r} has no spiking layer "
            "(whetstone.layers.SpikingBRelu or SpikingSigmoid) to give a budget."
        )
    for layer in chosen:
        layer.activity_regularizer = budget
    return [layer.name for layer in chosen]
