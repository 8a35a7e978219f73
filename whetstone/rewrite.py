"""From a trained ReLU network to a sharpenable one: swap the activations, normalise, keep weights.

``rewrite(model, x)`` returns a clone of a trained Keras classifier (Sequential or
Functional chain; nested models are flattened) in which every hidden activation is a
whetstone spiking layer at sharpness 0, ready for a sharpener:

* ``relu`` (a layer's ``activation=``, ``Activation("relu")`` or ``ReLU()``) becomes a
  ``SpikingBRelu``, split off its Dense/Conv layer into a layer of its own;
* ``ReLU(max_value=m)`` and ``relu6`` map exactly (the clip at ``m`` becomes the clip at 1);
* ``hard_sigmoid`` (``clip(x / 6 + 0.5, 0, 1)``) maps exactly to a ``SpikingBRelu``, whose
  step then fires at ``x >= 0`` like a sigmoid's;
* ``sigmoid`` maps exactly to ``SpikingSigmoid``;
* any other activation is refused by layer name.

The softmax (or linear) head stays a Dense readout on the host, or becomes an N-hot key
(``head="key"``: a Dense layer fitted by ridge regression to the key codes of the ANN's
predictions on ``x``, a ``SpikingBRelu`` and a ``SoftmaxDecode``).

**Normalisation.** A bounded ReLU clips at 1 and a trained ReLU does not. Following the
data-based normalisation of Diehl et al. (2015, *Fast-classifying, high-accuracy spiking
deep networks through weight and threshold balancing*, IJCNN) with the robust percentile
of Rueckauer et al. (2017, *Conversion of continuous-valued deep networks to efficient
event-driven networks for image classification*, Front. Neurosci. 11:682), each ReLU's
output is divided by ``lambda``, the ``percentile``-th percentile of its non-zero
activations on ``x``, and the next layer's weights are multiplied by ``lambda``. The clone
then computes exactly what the ANN computes wherever no activation exceeds its
``lambda`` (with ``percentile=100``: everywhere on ``x``). The scale goes into the Dense/
Conv layer's weights, or into BatchNormalization's gamma and beta where one sits between
the linear layer and the activation; pooling, Dropout, Flatten and Reshape pass through.
The spiking layers' ``1e-3`` width margin is compensated in the same affine map, so at
sharpness 0 the clone is the ANN to floating-point rounding.

Example:
    >>> import keras, numpy as np, whetstone as ws
    >>> keras.utils.set_random_seed(0)
    >>> ann = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="relu"),
    ...     keras.layers.Dense(3, activation="softmax")])
    >>> x = np.random.default_rng(0).normal(size=(64, 4)).astype("float32")
    >>> result = ws.rewrite.rewrite(ann, x, percentile=100)
    >>> [type(layer).__name__ for layer in result.model.layers[1:]]
    ['Dense', 'SpikingBRelu', 'Dense']
    >>> bool(np.allclose(result.model.predict(x, verbose=0), ann.predict(x, verbose=0), atol=1e-5))
    True
"""

from __future__ import annotations

from dataclasses import dataclass, field

import keras
import numpy as np

from whetstone.convert import layer_chain
from whetstone.encoding import key_generator
from whetstone.layers import EPSILON, SoftmaxDecode, Spiking, SpikingBRelu, SpikingSigmoid

__all__ = ["Rewrite", "RewriteError", "rewrite", "sharpenable"]

L = keras.layers
LINEAR = (L.Dense, L.Conv1D, L.Conv2D)
PASSTHROUGH = (
    L.Dropout, L.GaussianNoise, L.GaussianDropout, L.AlphaDropout, L.SpatialDropout1D,
    L.SpatialDropout2D, L.MaxPooling1D, L.MaxPooling2D, L.AveragePooling1D, L.AveragePooling2D,
    L.GlobalAveragePooling1D, L.GlobalAveragePooling2D, L.Flatten, L.Reshape,
)  # fmt: skip
"""Layers that commute with a positive affine map ``a * x + c`` (at inference)."""


class RewriteError(ValueError):
    """The model cannot be rewritten; the message names the layer and what to do."""


@dataclass
class Rewrite:
    """What ``rewrite`` made: the clone and how it compares with the ANN on the sample.

    Attributes:
        model: the sharpenable clone (not compiled, every spiking layer at sharpness 0).
        scales: ``lambda`` per normalised ReLU (by the name of its spiking layer).
        clipped: per normalised ReLU, the fraction of its sample activations above ``lambda``.
        ann_accuracy: the ANN's accuracy on the sample (None without labels).
        accuracy: the clone's accuracy on the sample, after normalisation.
        agreement: fraction of sample inputs on which clone and ANN predict the same class.
    """

    model: keras.Model
    scales: dict[str, float] = field(default_factory=dict)
    clipped: dict[str, float] = field(default_factory=dict)
    ann_accuracy: float | None = None
    accuracy: float | None = None
    agreement: float = 1.0


@dataclass
class _Item:
    """One layer of the clone: its config, the weights to give it, its role."""

    cls: type
    config: dict
    role: str  # "linear", "norm", "pass", "act", "keep"
    weights: dict[str, np.ndarray] = field(default_factory=dict)
    activation: str = ""  # for "act": relu, bounded, hard_sigmoid, sigmoid
    bound: float = 0.0  # for "bounded": the ReLU's max_value
    source: int = -1  # index in the chain whose output is this activation


def _name(layer) -> str:
    return f"{layer.name!r} ({type(layer).__name__})"


def _act_name(function) -> str:
    name = keras.activations.serialize(function)
    return name if isinstance(name, str) else str(name.get("config", name))


ACTIVATIONS = {"relu": ("relu", 0.0), "relu6": ("bounded", 6.0)}
ACTIVATIONS |= {"hard_sigmoid": ("hard_sigmoid", 0.0), "sigmoid": ("sigmoid", 0.0)}
ACTIVATIONS |= {"linear": ("linear", 0.0), "softmax": ("softmax", 0.0)}


def _activation(layer, name: str, index: int, spiking_name: str) -> _Item:
    if name not in ACTIVATIONS:
        raise RewriteError(
            f"layer {_name(layer)} uses the activation {name!r}, which has no exact spiking "
            "counterpart. Supported: relu, relu6, ReLU(max_value=...), hard_sigmoid, sigmoid "
            "(hidden) and softmax/linear (head). Retrain with relu, or replace it by hand with "
            "whetstone.layers.SpikingBRelu()."
        )
    kind, bound = ACTIVATIONS[name]
    config = {"name": spiking_name}
    return _Item(L.Activation, config, "act", activation=kind, bound=bound, source=index)


def _relu_layer(layer, index: int) -> _Item:
    slope, threshold = float(layer.negative_slope), float(layer.threshold)
    if slope != 0.0 or threshold != 0.0:
        raise RewriteError(
            f"layer {_name(layer)} has negative_slope={slope}, threshold={threshold}; only a "
            "plain ReLU (optionally with max_value) maps to a spiking layer. Retrain with "
            "keras.layers.ReLU() or ReLU(max_value=...)."
        )
    config = {"name": layer.name}
    if layer.max_value is None:
        return _Item(L.Activation, config, "act", activation="relu", source=index)
    bound = float(layer.max_value)
    if not bound > 0:
        raise RewriteError(f"layer {_name(layer)} has max_value={bound}; it must be > 0.")
    return _Item(L.Activation, config, "act", activation="bounded", bound=bound, source=index)


def _plan(chain: list) -> list[_Item]:
    """The clone's layers, activations split off their linear layers."""
    items = []
    for index, layer in enumerate(chain):
        config = layer.get_config()
        if isinstance(layer, LINEAR):
            name = _act_name(layer.activation)
            bias = layer.bias.numpy() if layer.use_bias else np.zeros(layer.kernel.shape[-1])
            weights = {"kernel": layer.kernel.numpy().astype(np.float64), "bias": bias}
            config |= {"activation": "linear", "use_bias": True}
            items.append(_Item(type(layer), config, "linear", weights))
            if name != "linear":
                items.append(_activation(layer, name, index, f"{layer.name}_spiking"))
        elif isinstance(layer, L.BatchNormalization):
            items.append(_Item(type(layer), config | {"scale": True, "center": True}, "norm",
                               _norm_weights(layer)))  # fmt: skip
        elif isinstance(layer, L.ReLU):
            items.append(_relu_layer(layer, index))
        elif isinstance(layer, L.Softmax):
            items.append(_activation(layer, "softmax", index, layer.name))
        elif isinstance(layer, L.Activation):
            items.append(_activation(layer, _act_name(layer.activation), index, layer.name))
        elif isinstance(layer, (Spiking, SoftmaxDecode)):
            items.append(_Item(type(layer), config, "keep"))
        elif isinstance(layer, PASSTHROUGH):
            items.append(_Item(type(layer), config, "pass"))
        else:
            raise RewriteError(
                f"layer {_name(layer)} cannot be rewritten. Supported layers: Dense, Conv1D, "
                "Conv2D, BatchNormalization, pooling, Dropout, Flatten, Reshape and the "
                "activations relu, relu6, hard_sigmoid, sigmoid, softmax. Replace it, or "
                "build the spiking model by hand with whetstone.layers."
            )
    return [item for item in items if not (item.role == "act" and item.activation == "linear")]


def _norm_weights(layer) -> dict[str, np.ndarray]:
    n = layer.moving_mean.shape[0]
    return {
        "gamma": layer.gamma.numpy() if layer.scale else np.ones(n),
        "beta": layer.beta.numpy() if layer.center else np.zeros(n),
        "moving_mean": layer.moving_mean.numpy(),
        "moving_variance": layer.moving_variance.numpy(),
    }


def _split_head(items: list[_Item]) -> tuple[list[_Item], _Item | None, str]:
    """The body, the final Dense and its activation (softmax or linear)."""
    if items and items[-1].cls is SoftmaxDecode:
        return items, None, "key"
    activation = "linear"
    if items and items[-1].role == "act":
        activation = items.pop().activation
    if not items or items[-1].cls is not L.Dense or activation not in ("softmax", "linear"):
        raise RewriteError(
            "the model must end with a Dense classifier head (activation 'softmax' or linear "
            f"logits); it ends with {activation!r} after a "
            f"{items[-1].cls.__name__ if items else 'nothing'}. Add a Dense(classes, "
            "activation='softmax') head."
        )
    return items, items.pop(), activation


# ---------------------------------------------------------------- normalisation


def _run_chain(chain: list, x: np.ndarray, wanted: set[int], batch_size: int = 256):
    """The ANN's outputs, and the outputs of the chain layers in ``wanted``, on ``x``."""
    found: dict[int, list] = {i: [] for i in wanted}
    outputs = []
    for start in range(0, len(x), batch_size):
        h = x[start : start + batch_size]
        for i, layer in enumerate(chain):
            h = layer(h, training=False)
            if i in found:
                found[i].append(keras.ops.convert_to_numpy(h))
        outputs.append(keras.ops.convert_to_numpy(h))
    return np.concatenate(outputs), {i: np.concatenate(v) for i, v in found.items()}


def _lambda(values: np.ndarray, percentile: float | None) -> float:
    """Rueckauer et al.'s scale: a high percentile of the layer's non-zero activations."""
    positive = values[values > 0]
    if percentile is None or positive.size == 0:
        return 1.0
    return float(np.percentile(positive, percentile))


def _map(item: _Item, scale: float) -> tuple[float, float, float]:
    """``(a, c, s)``: the pre-activation becomes ``a * z + c``; the output is the ANN's / s."""
    if item.activation == "sigmoid":
        return 1.0 + EPSILON, 0.0, 1.0  # sigmoid(z * (1 + eps) / (1 + eps)) = sigmoid(z)
    if item.activation == "hard_sigmoid":
        alpha, beta, s = 1.0 / 6.0, 0.5, 1.0  # clip(z / 6 + 0.5, 0, 1)
    else:  # relu normalised by its scale, or ReLU(max_value=bound)
        bound = item.bound if item.activation == "bounded" else scale
        alpha, beta, s = 1.0 / bound, 0.0, bound
    # SpikingBRelu at sharpness 0 is clip((z' - 0.5) / (1 + eps) + 0.5); make it
    # clip(alpha z + beta)
    return (1.0 + EPSILON) * alpha, (1.0 + EPSILON) * beta - 0.5 * EPSILON, s


def _affine(target: _Item, a: float, c: float) -> None:
    w = target.weights
    if target.role == "linear":
        w["kernel"], w["bias"] = w["kernel"] * a, w["bias"] * a + c
    else:
        w["gamma"], w["beta"] = w["gamma"] * a, w["beta"] * a + c


def _normalise(items: list[_Item], scales: list[float]) -> float:
    """Fold each activation's map into the layer before it and ``s`` into the one after."""
    s, target, acts, open_linear = 1.0, None, iter(scales), None
    for item in items:
        name = item.config.get("name")
        if item.role == "linear":
            if open_linear is not None:
                raise RewriteError(
                    f"layer {name!r} follows {open_linear!r} with no activation between; "
                    "whetstone needs an activation after every hidden Dense/Conv layer. Merge "
                    "the two linear layers, or retrain with a relu between them."
                )
            item.weights["kernel"] = item.weights["kernel"] * s
            s, target, open_linear = 1.0, item, name
        elif item.role == "norm":
            item.weights["moving_mean"] = item.weights["moving_mean"] / s
            item.weights["moving_variance"] = item.weights["moving_variance"] / s**2
            item.config["epsilon"] = item.config["epsilon"] / s**2
            s, target = 1.0, item
        elif item.role in ("act", "keep") and item.cls is not SoftmaxDecode:
            if item.activation == "softmax":
                raise RewriteError(
                    f"layer {name!r} applies a softmax before the model's head; softmax has no "
                    "exact spiking counterpart and is only supported on the final Dense head."
                )
            if target is None:
                raise RewriteError(
                    f"activation {name!r} has no Dense/Conv layer before it (since the input "
                    "or the previous activation); every spiking layer needs its own linear "
                    "layer. Remove the extra activation or add a Dense/Conv layer."
                )
            if item.role == "act":
                a, c, s = _map(item, next(acts) if item.activation == "relu" else 1.0)
                _affine(target, a, c)
            target = open_linear = None
    return s


# ---------------------------------------------------------------- building the clone


def _layer(item: _Item) -> keras.layers.Layer:
    if item.role == "act":
        cls = SpikingSigmoid if item.activation == "sigmoid" else SpikingBRelu
        return cls(name=item.config["name"])
    return item.cls.from_config(item.config)


def _unique_names(items: list[_Item]) -> None:
    seen: set[str] = set()
    for item in items:
        name = base = item.config["name"]
        number = 1
        while name in seen:
            name, number = f"{base}_{number}", number + 1
        item.config["name"] = name
        seen.add(name)


def _build(inputs, items: list[_Item], name: str) -> keras.Model:
    h, layers = inputs, []
    for item in items:
        layers.append(_layer(item))
        h = layers[-1](h)
    model = keras.Model(inputs, h, name=name)
    for item, layer in zip(items, layers, strict=True):
        for weight, value in item.weights.items():
            variable = getattr(layer, weight)
            variable.assign(np.asarray(value, dtype=variable.dtype))
    return model


def _key_head(body: keras.Model, x, predicted, classes: int, width: int, seed: int) -> list:
    """Dense(width) fitted by ridge regression to the keys of ``predicted``, spikes, decode."""
    key = key_generator(classes, width, seed=seed)
    features = body.predict(x, verbose=0).reshape(len(x), -1).astype(np.float64)
    features = np.concatenate([features, np.ones((len(x), 1))], axis=1)
    gram = features.T @ features
    ridge = 1e-3 * np.trace(gram) / len(gram)
    solution = np.linalg.solve(gram + ridge * np.eye(len(gram)), features.T @ key[predicted])
    # SpikingBRelu at sharpness 0 is clip((z - 0.5) / (1 + eps) + 0.5): undo the margin
    solution = solution * (1.0 + EPSILON)
    solution[-1] -= 0.5 * EPSILON
    dense = L.Dense(width, name="key_dense")
    layers = [dense, SpikingBRelu(name="key_spiking"), SoftmaxDecode(key, name="decode")]
    h = body.outputs[0]
    for layer in layers:
        h = layer(h)
    dense.kernel.assign(solution[:-1].astype("float32"))
    dense.bias.assign(solution[-1].astype("float32"))
    return h


def rewrite(
    model: keras.Model,
    x: np.ndarray,
    y: np.ndarray | None = None,
    percentile: float | None = 99.9,
    head: str = "readout",
    key_width: int | None = None,
    seed: int = 0,
) -> Rewrite:
    """A sharpenable clone of a trained ReLU classifier, normalised on sample data ``x``.

    Args:
        model: a trained Keras classifier: a chain of Dense/Conv, BatchNormalization,
            pooling, Dropout, Flatten, Reshape and activation layers (nested models are
            flattened) ending in a Dense head with softmax (or linear logits).
        x: sample inputs (a few hundred to a few thousand training images) for the
            normalisation and, with ``head="key"``, for fitting the key layer.
        y: their integer labels, to report the accuracy before and after (optional).
        percentile: the percentile of each ReLU's non-zero activations that maps to 1
            (Rueckauer et al. 2017; 100 is Diehl et al. 2015's maximum); None: no scaling.
        head: ``"readout"`` keeps the Dense head on the host; ``"key"`` replaces it with a
            spiking N-hot key output (``key_width`` neurons, ``SoftmaxDecode``).
        key_width: neurons of the key output; by default 10 per class.
        seed: seed of the key.

    Raises:
        RewriteError: a layer or activation with no exact spiking counterpart, a model that
            branches or does not end with a Dense classifier head.

    Example:
        >>> import keras, numpy as np, whetstone as ws
        >>> ann = keras.Sequential([keras.Input((6,)), keras.layers.Dense(4),
        ...     keras.layers.ReLU(max_value=1.0), keras.layers.Dense(2, activation="softmax")])
        >>> result = ws.rewrite.rewrite(ann, np.ones((8, 6), "float32"), y=np.zeros(8))
        >>> [type(layer).__name__ for layer in result.model.layers[1:]], result.agreement
        (['Dense', 'SpikingBRelu', 'Dense'], 1.0)
    """
    if head not in ("readout", "key"):
        raise RewriteError(f"head must be 'readout' or 'key', got {head!r}.")
    if percentile is not None and not 0 < percentile <= 100:
        raise RewriteError(f"percentile must be in (0, 100] or None, got {percentile}.")
    try:
        chain = layer_chain(model)
    except ValueError as error:
        raise RewriteError(str(error)) from error
    items = _plan(chain)
    _unique_names(items)
    body, dense, activation = _split_head(items)
    relus = [item for item in body if item.role == "act" and item.activation == "relu"]
    outputs, values = _run_chain(chain, np.asarray(x), {item.source for item in relus})
    lambdas = [_lambda(values[item.source], percentile) for item in relus]
    s = _normalise(body, lambdas)
    names = [item.config["name"] for item in relus]
    result = Rewrite(
        None,
        scales=dict(zip(names, lambdas, strict=True)),
        clipped={
            n: float((values[i.source] > v).mean())
            for n, i, v in zip(names, relus, lambdas, strict=True)
        },
    )
    inputs = keras.Input(tuple(model.inputs[0].shape[1:]), name=model.inputs[0].name)
    clone_name = f"{model.name}_sharpenable"
    if dense is not None and head == "readout":
        dense.weights["kernel"] = dense.weights["kernel"] * s
        dense.config["activation"] = activation
        result.model = _build(inputs, [*body, dense], clone_name)
    elif dense is not None:
        trunk = _build(inputs, body, clone_name)
        classes = dense.weights["kernel"].shape[-1]
        top = _key_head(trunk, x, outputs.argmax(axis=1), classes, key_width or 10 * classes, seed)
        result.model = keras.Model(inputs, top, name=clone_name)
    else:
        result.model = _build(inputs, body, clone_name)
    predictions = result.model.predict(x, verbose=0).argmax(axis=1)
    result.agreement = float((predictions == outputs.argmax(axis=1)).mean())
    if y is not None:
        y = np.asarray(y).reshape(-1)
        result.ann_accuracy = float((outputs.argmax(axis=1) == y).mean())
        result.accuracy = float((predictions == y).mean())
    return result


def sharpenable(model: keras.Model, x: np.ndarray, **options) -> keras.Model:
    """``rewrite(model, x, **options).model``: the sharpenable clone alone.

    Example:
        >>> import keras, numpy as np, whetstone as ws
        >>> ann = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4, activation="relu"),
        ...     keras.layers.Dense(2, activation="softmax")])
        >>> clone = ws.rewrite.sharpenable(ann, np.ones((4, 3), "float32"))
        >>> [layer.name for layer in ws.sharpness.spiking_layers(clone)] == [
        ...     f"{ann.layers[0].name}_spiking"]
        True
    """
    return rewrite(model, x, **options).model
