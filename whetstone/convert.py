"""Keras model -> SpikingNetwork, one registered converter per Keras layer type.

The model must be a chain (one input, no branches; nested models are flattened) and
fully sharpened. Dense/Conv layers followed by a spiking activation become stages;
BatchNormalization is folded into the linear layer before the activation, or into the
next linear layer when it follows one; max pooling becomes an OR-pool stage (also
when it sits between a convolution and its activation, where it commutes with the
step); average pooling, Flatten and Reshape fold into the next linear layer; Dropout
and noise layers vanish; ``SoftmaxDecode`` becomes a host key decoder and a final
Dense (softmax or linear) a host readout. Anything else is refused with a
:class:`ConversionError` that names the layer and says what to do.

To support a new layer type, register one function::

    @converter(keras.layers.MyLayer)
    def _my_layer(layer, builder: Builder) -> None: ...

Example:
    >>> import keras, whetstone as ws
    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3),
    ...     ws.layers.SpikingBRelu(sharpness=1.0)])
    >>> net = to_spiking(model)
    >>> [(s.kind, s.input_shape, s.output_shape, s.threshold) for s in net.stages]
    [('dense', (4,), (3,), 0.5)]
"""

from __future__ import annotations

import datetime
import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import keras
import numpy as np

from whetstone.layers import SoftmaxDecode, Spiking
from whetstone.network import KeyDecoder, ReadoutDecoder, SpikingNetwork, Stage, same_padding
from whetstone.sharpness import get_sharpness
from whetstone.simulate import preactivation

__all__ = [
    "CONVERTERS",
    "Builder",
    "ConversionError",
    "converter",
    "supported_layers",
    "to_spiking",
]

L = keras.layers


class ConversionError(ValueError):
    """The model cannot be converted; the message names the layer and the remedy."""


CONVERTERS: dict[type, Callable[[keras.layers.Layer, Builder], None]] = {}
"""Keras layer type -> converter function (looked up along the class hierarchy)."""


def converter(*layer_types: type):
    """Register a function ``f(layer, builder)`` as the converter of these layer types."""

    def register(function):
        for layer_type in layer_types:
            CONVERTERS[layer_type] = function
        return function

    return register


def supported_layers() -> list[str]:
    """Names of the Keras layer types the converter knows.

    Example:
        >>> "Conv2D" in supported_layers()
        True
    """
    return sorted(t.__name__ for t in CONVERTERS)


def _lookup(layer) -> Callable | None:
    return next((CONVERTERS[t] for t in type(layer).__mro__ if t in CONVERTERS), None)


def _name(layer) -> str:
    return f"{layer.name!r} ({type(layer).__name__})"


# ---------------------------------------------------------------- affine passthrough ops


@dataclass
class _Op:
    """An affine map between spikes (or inputs) and the next linear layer."""

    layer: str
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]

    def apply(self, x: np.ndarray) -> np.ndarray:  # (B, *in) -> (B, *out)
        return x.reshape(len(x), *self.out_shape)

    def adjoint(self, g: np.ndarray) -> np.ndarray:  # (B, *out) -> (B, *in), linear part
        return g.reshape(len(g), *self.in_shape)


@dataclass
class _ChannelAffine(_Op):
    """``x * scale + offset`` per channel (last axis): an inference BatchNormalization."""

    scale: np.ndarray = field(default_factory=lambda: np.ones(1))
    offset: np.ndarray = field(default_factory=lambda: np.zeros(1))

    def apply(self, x):
        return x * self.scale + self.offset

    def adjoint(self, g):
        return g * self.scale


@dataclass
class _AveragePool(_Op):
    """Keras average pooling ('same' averages only the in-bounds values)."""

    pool_size: tuple[int, ...] = ()
    strides: tuple[int, ...] = ()
    padding: str = "valid"

    def _geometry(self):
        """Padding per axis and the number of in-bounds values of each window."""
        pads, count = [], np.ones(())
        axes = zip(self.in_shape[:-1], self.pool_size, self.strides, self.out_shape, strict=False)
        for n, k, s, m in axes:
            pad = same_padding(n, k, s) if self.padding == "same" else (0, 0)
            index = (np.arange(m) * s - pad[0])[:, None] + np.arange(k)[None, :]
            count = np.multiply.outer(count, ((index >= 0) & (index < n)).sum(axis=1))
            pads.append(pad)
        return pads, count[..., None]

    def _tap_slices(self, pads):
        for offsets in itertools.product(*(range(k) for k in self.pool_size)):
            axes = zip(offsets, self.out_shape[:-1], self.strides, strict=True)
            yield (slice(None), *(slice(o, o + (m - 1) * s + 1, s) for o, m, s in axes))

    def apply(self, x):
        pads, count = self._geometry()
        padded = np.pad(x, [(0, 0), *pads, (0, 0)])
        total = sum(padded[taps] for taps in self._tap_slices(pads))
        return total / count

    def adjoint(self, g):
        pads, count = self._geometry()
        padded_shape = [n + a + b for n, (a, b) in zip(self.in_shape[:-1], pads, strict=True)]
        out = np.zeros((len(g), *padded_shape, self.in_shape[-1]))
        for taps in self._tap_slices(pads):
            out[taps] += g / count
        crop = tuple(slice(a, a + n) for n, (a, _) in zip(self.in_shape[:-1], pads, strict=True))
        return out[(slice(None), *crop)]


@dataclass
class _GlobalAverage(_Op):
    def apply(self, x):
        spatial = tuple(range(1, x.ndim - 1))
        return x.mean(axis=spatial).reshape(len(x), *self.out_shape)

    def adjoint(self, g):
        area = math.prod(self.in_shape[:-1])
        g = g.reshape(len(g), *([1] * (len(self.in_shape) - 1)), self.in_shape[-1])
        return np.broadcast_to(g / area, (len(g), *self.in_shape))


# ---------------------------------------------------------------- conversion state


@dataclass
class _Linear:
    """A Dense or Conv layer (with folded BatchNorm) waiting for its spiking activation."""

    layer: keras.layers.Layer
    kind: str
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    weights: np.ndarray  # float64
    bias: np.ndarray  # float64, (c_out,) or output_shape
    geometry: dict = field(default_factory=dict)
    activation: str = "linear"
    pool: Stage | None = None  # max pooling between the operator and its activation
    pool_layer: str = ""
    reshaped: bool = False


class Builder:
    """The state of one conversion: stages so far, and what waits to be folded.

    Converters read ``shape`` (the current per-sample shape as Keras sees it) and call
    the methods below; each method refuses what it cannot represent.
    """

    def __init__(self, input_shape: tuple[int, ...]):
        self.input_shape = input_shape
        self.shape = input_shape
        self.stages: list[Stage] = []
        self.ops: list[_Op] = []  # affine maps after the last spikes (or the input)
        self.linear: _Linear | None = None
        self.decoder = None

    # -- helpers for converters
    def fail(self, layer, message: str):
        raise ConversionError(f"layer {_name(layer)}: {message}")

    def check_open(self, layer) -> None:
        if self.decoder is not None:
            self.fail(layer, "comes after the output decoder; the decoder must be last.")
        if self.linear is not None and self.linear.activation != "linear":
            self.fail(
                layer,
                f"follows {_name(self.linear.layer)} whose {self.linear.activation!r} activation "
                "is only allowed on the model's last layer (a host readout).",
            )

    def reshape(self, layer, shape: tuple[int, ...]) -> None:
        """Flatten/Reshape: the values are unchanged, only the shape."""
        self.check_open(layer)
        if self.linear is not None:
            self.linear.reshaped = True
        else:
            self.ops.append(_Op(layer.name, self.shape, shape))
        self.shape = shape

    def add_op(self, layer, op: _Op) -> None:
        """An affine map after spikes (or the input) that folds into the next linear layer."""
        self.check_open(layer)
        self.ops.append(op)
        self.shape = op.out_shape

    # -- linear layers
    def start_linear(self, layer, kind, weights, bias, output_shape, activation, **geometry):
        """A Dense or Conv layer: fold the pending affine ops into it; await its activation."""
        self.check_open(layer)
        if self.linear is not None:
            self.fail(
                layer,
                f"follows {_name(self.linear.layer)} with no spiking activation between; "
                "add a whetstone.layers.SpikingBRelu() after each Dense/Conv layer.",
            )
        weights, bias = weights.astype(np.float64), bias.astype(np.float64)
        fold = self._fold_dense if kind == "dense" else self._fold_conv
        input_shape, weights, bias = fold(layer, weights, bias, output_shape, geometry)
        self.linear = _Linear(
            layer, kind, input_shape, output_shape, weights, bias, geometry, activation
        )
        self.ops = []
        self.shape = output_shape

    def _fold_dense(self, layer, weights, bias, output_shape, geometry):
        """``W (P s) + b`` for the affine chain ``P``: ``W' = P^T W``, ``b' = b + W P(0)``."""
        if not self.ops:
            return self.shape, weights, bias
        start = self.ops[0].in_shape
        g = weights.T.reshape(weights.shape[1], *self.shape)
        offset = np.zeros((1, *start))
        for op in self.ops:
            offset = op.apply(offset)
        for op in reversed(self.ops):
            g = op.adjoint(g)
        return start, g.reshape(len(g), -1).T, bias + offset.reshape(-1) @ weights

    def _fold_conv(self, layer, kernel, bias, output_shape, geometry):
        """Fold per-channel affine maps into the kernel; offsets into a (positional) bias."""
        if not self.ops:
            return self.shape, kernel, bias
        scale, offset = np.ones((1, *self.ops[0].in_shape)), np.zeros((1, *self.ops[0].in_shape))
        for op in self.ops:
            if isinstance(op, _ChannelAffine):
                scale, offset = scale * op.scale, op.apply(offset)
            elif type(op) is _Op:
                scale, offset = op.apply(scale), op.apply(offset)
            else:
                self.fail(
                    layer,
                    f"the {op.layer!r} pooling before this convolution cannot be folded into "
                    "it; use MaxPooling (an OR-pool of spikes) or pool before Flatten + Dense.",
                )
        per_channel = scale.reshape(-1, self.shape[-1])[0]
        if not np.array_equal(scale[0], np.broadcast_to(per_channel, self.shape)):
            self.fail(
                layer,
                "a BatchNormalization whose channels are not this convolution's input channels "
                "(a Reshape between them) cannot be folded; normalise along the channel axis.",
            )
        probe = Stage(layer.name, "conv", self.shape, output_shape, kernel, **geometry)
        offset_map = preactivation(probe, offset, "float64")[0]
        first = offset_map.reshape(-1, offset_map.shape[-1])[0]
        if np.array_equal(offset_map, np.broadcast_to(first, offset_map.shape)):
            offset_map = first  # 'valid' padding: every position sees the same constant
        return self.shape, kernel * per_channel[:, None], bias + offset_map

    def batch_norm(self, layer, scale: np.ndarray, offset: np.ndarray) -> None:
        """BatchNormalization: into the pending linear layer, or kept to fold into the next."""
        self.check_open(layer)
        lin = self.linear
        if lin is None:
            self.add_op(layer, _ChannelAffine(layer.name, self.shape, self.shape, scale, offset))
            return
        if lin.reshaped:
            self.fail(
                layer,
                f"normalises a reshaped output of {_name(lin.layer)}; put the "
                "BatchNormalization directly after the Dense/Conv layer.",
            )
        if lin.pool is not None and (scale < 0).any():
            self.fail(
                layer,
                f"has negative scales (gamma) after the max pooling {lin.pool_layer!r}, so max "
                "and the step do not commute; put the BatchNormalization before the pooling.",
            )
        lin.weights = lin.weights * scale
        lin.bias = lin.bias * scale + offset

    def max_pool(self, layer, stage: Stage) -> None:
        """Max pooling of spikes (an OR-pool stage) or between a conv and its activation."""
        self.check_open(layer)
        lin = self.linear
        if lin is not None:
            if lin.pool is not None or lin.reshaped:
                self.fail(
                    layer, "cannot follow another pooling or a reshape before the activation."
                )
            lin.pool, lin.pool_layer = stage, layer.name
        elif not self.stages:
            self.fail(
                layer,
                "max-pools the real-valued input; max pooling is only exact on spikes. "
                "Move it after the first spiking layer.",
            )
        elif any(type(op) is not _Op for op in self.ops):
            names = [op.layer for op in self.ops if type(op) is not _Op]
            self.fail(
                layer,
                f"max-pools the output of {names}, which is no longer binary spikes; "
                "put the pooling before those layers (directly after the spiking layer).",
            )
        else:
            self.stages.append(stage)
            self.ops = []
        self.shape = stage.output_shape

    def spiking(self, layer, threshold: float) -> None:
        """A spiking activation closes the pending linear layer into a stage."""
        self.check_open(layer)
        lin = self.linear
        if lin is None:
            before = "the input" if not self.stages else "the previous spiking layer"
            self.fail(
                layer,
                f"has no Dense or Conv layer between it and {before}; every spiking layer "
                "needs its own linear layer.",
            )
        self.stages.append(
            Stage(
                lin.layer.name,
                lin.kind,
                lin.input_shape,
                lin.output_shape,
                lin.weights.astype(np.float32),
                lin.bias.astype(np.float32),
                threshold,
                **lin.geometry,
            )
        )
        if lin.pool is not None:
            pool = lin.pool
            self.stages.append(
                Stage(
                    pool.name, "pool", pool.input_shape, pool.output_shape,
                    threshold=0.5, strides=pool.strides, padding=pool.padding,
                    pool_size=pool.pool_size,
                )
            )  # fmt: skip
        self.linear = None
        self.ops = []
        if self.shape != self.stages[-1].output_shape:
            self.ops = [_Op(layer.name, self.stages[-1].output_shape, self.shape)]

    def key_decoder(self, layer, key: np.ndarray) -> None:
        """SoftmaxDecode: the N-hot key vote on the host."""
        self.check_open(layer)
        if self.linear is not None or any(type(op) is not _Op for op in self.ops):
            self.fail(layer, "must read the spikes of a spiking layer directly.")
        if not self.stages:
            self.fail(layer, "has no spiking layer before it.")
        self.decoder = KeyDecoder(key)

    def finish(self, model_name: str) -> tuple[list[Stage], object]:
        """Close the chain: a pending Dense becomes the host readout."""
        lin = self.linear
        if lin is not None:
            if lin.kind != "dense" or lin.pool is not None or lin.reshaped:
                self.fail(
                    lin.layer,
                    "ends the model without a spiking activation; only a final Dense "
                    "(softmax or linear) can be a host readout.",
                )
            if not self.stages:
                self.fail(lin.layer, "is the only linear layer; the model has no spiking stage.")
            self.decoder = ReadoutDecoder(
                lin.weights.astype(np.float32), lin.bias.astype(np.float32), lin.activation
            )
        elif self.decoder is None and any(type(op) is not _Op for op in self.ops):
            names = [op.layer for op in self.ops if type(op) is not _Op]
            raise ConversionError(
                f"model {model_name!r} ends with {names} after its last spiking layer; "
                "end with a spiking layer, SoftmaxDecode, or a Dense readout."
            )
        if not self.stages:
            raise ConversionError(f"model {model_name!r} has no Dense/Conv + spiking stage.")
        return self.stages, self.decoder


# ---------------------------------------------------------------- layer converters


def _tuple(value) -> tuple[int, ...]:
    return tuple(int(v) for v in (value if isinstance(value, (tuple, list)) else (value,)))


def _activation(layer) -> str:
    return keras.activations.serialize(layer.activation) if hasattr(layer, "activation") else ""


def _check_channels_last(layer) -> None:
    if getattr(layer, "data_format", "channels_last") != "channels_last":
        raise ConversionError(
            f"layer {_name(layer)}: data_format={layer.data_format!r}; only channels_last "
            "is supported. Build the model with data_format='channels_last'."
        )


def _output_shape(layer, shape) -> tuple[int, ...]:
    return _tuple(layer.compute_output_shape((None, *shape))[1:])


def _linear_activation(layer, builder: Builder) -> str:
    name = _activation(layer)
    if name in ("linear", "softmax"):
        return name
    builder.fail(
        layer,
        f"has the built-in activation {name!r}. Use activation=None followed by "
        "whetstone.layers.SpikingBRelu() (or SpikingSigmoid()), or 'softmax'/'linear' "
        "on a final readout layer.",
    )


def _bias(layer, n: int) -> np.ndarray:
    return layer.bias.numpy() if layer.use_bias else np.zeros(n, np.float32)


@converter(L.InputLayer, L.Dropout, L.GaussianNoise, L.GaussianDropout, L.AlphaDropout)
@converter(L.SpatialDropout1D, L.SpatialDropout2D, L.SpatialDropout3D)
def _identity(layer, builder: Builder) -> None:
    """Layers that do nothing at inference."""


@converter(L.Dense)
def _dense(layer, builder: Builder) -> None:
    if len(builder.shape) != 1:
        builder.fail(
            layer,
            f"receives a {builder.shape} input (Dense then acts per position); "
            "add a Flatten before it.",
        )
    activation = _linear_activation(layer, builder)
    kernel = layer.kernel.numpy()
    builder.start_linear(
        layer, "dense", kernel, _bias(layer, kernel.shape[1]), (kernel.shape[1],), activation
    )


@converter(L.Conv1D, L.Conv2D)
def _conv(layer, builder: Builder) -> None:
    _check_channels_last(layer)
    if layer.groups != 1 or layer.padding not in ("valid", "same"):
        builder.fail(
            layer,
            f"has groups={layer.groups}, padding={layer.padding!r}; only groups=1 with "
            "'valid' or 'same' padding is supported.",
        )
    activation = _linear_activation(layer, builder)
    if activation != "linear":
        builder.fail(layer, "a convolution cannot be the softmax readout; add Flatten + Dense.")
    kernel = layer.kernel.numpy()
    builder.start_linear(
        layer, "conv", kernel, _bias(layer, kernel.shape[-1]),
        _output_shape(layer, builder.shape), activation,
        strides=_tuple(layer.strides), padding=layer.padding, dilation=_tuple(layer.dilation_rate),
    )  # fmt: skip


@converter(L.MaxPooling1D, L.MaxPooling2D)
def _max_pool(layer, builder: Builder) -> None:
    _check_channels_last(layer)
    stage = Stage(
        layer.name, "pool", builder.shape, _output_shape(layer, builder.shape),
        strides=_tuple(layer.strides), padding=layer.padding, pool_size=_tuple(layer.pool_size),
    )  # fmt: skip
    builder.max_pool(layer, stage)


@converter(L.AveragePooling1D, L.AveragePooling2D)
def _average_pool(layer, builder: Builder) -> None:
    _check_channels_last(layer)
    if builder.linear is not None:
        builder.fail(layer, "average pooling before the spiking activation is not supported; "
                     "put it after the activation or use MaxPooling.")  # fmt: skip
    op = _AveragePool(
        layer.name, builder.shape, _output_shape(layer, builder.shape),
        _tuple(layer.pool_size), _tuple(layer.strides), layer.padding,
    )  # fmt: skip
    builder.add_op(layer, op)


@converter(L.GlobalAveragePooling1D, L.GlobalAveragePooling2D)
def _global_average(layer, builder: Builder) -> None:
    _check_channels_last(layer)
    if builder.linear is not None:
        builder.fail(layer, "global pooling before the spiking activation is not supported; "
                     "put it after the activation.")  # fmt: skip
    builder.add_op(
        layer, _GlobalAverage(layer.name, builder.shape, _output_shape(layer, builder.shape))
    )


@converter(L.Flatten, L.Reshape)
def _reshape(layer, builder: Builder) -> None:
    builder.reshape(layer, _output_shape(layer, builder.shape))


@converter(L.BatchNormalization)
def _batch_norm(layer, builder: Builder) -> None:
    if layer.axis not in (-1, len(builder.shape)):
        builder.fail(layer, f"normalises axis {layer.axis}; only the last (channel) axis is "
                     "supported.")  # fmt: skip
    n = builder.shape[-1]
    gamma = layer.gamma.numpy().astype(np.float64) if layer.scale else np.ones(n)
    beta = layer.beta.numpy().astype(np.float64) if layer.center else np.zeros(n)
    mean = layer.moving_mean.numpy().astype(np.float64)
    variance = layer.moving_variance.numpy().astype(np.float64)
    scale = gamma / np.sqrt(variance + layer.epsilon)  # the layer's own epsilon
    builder.batch_norm(layer, scale, beta - mean * scale)


@converter(L.Activation, L.Softmax)
def _activation_layer(layer, builder: Builder) -> None:
    name = "softmax" if isinstance(layer, L.Softmax) else _activation(layer)
    lin = builder.linear
    if name == "linear":
        return
    if name != "softmax" or lin is None or lin.kind != "dense" or lin.activation != "linear":
        builder.fail(
            layer,
            f"applies {name!r}; only a softmax right after the final Dense readout is "
            "supported. Use whetstone.layers.SpikingBRelu() for hidden activations.",
        )
    lin.activation = "softmax"


@converter(Spiking)
def _spiking(layer, builder: Builder) -> None:
    builder.spiking(layer, float(type(layer).threshold))


@converter(SoftmaxDecode)
def _softmax_decode(layer, builder: Builder) -> None:
    if math.prod(builder.shape) != layer.key.shape[1]:
        builder.fail(layer, f"expects {layer.key.shape[1]} spikes, gets {builder.shape}.")
    builder.key_decoder(layer, layer.key)


# ---------------------------------------------------------------- the model as a chain


def _history(tensor):
    history = getattr(tensor, "_keras_history", None)
    if history is None:
        raise ConversionError(f"cannot trace tensor {tensor} back to a layer.")
    return history


def _functional_chain(model: keras.Model) -> list:
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ConversionError(
            f"model {model.name!r} has {len(model.inputs)} inputs and {len(model.outputs)} "
            "outputs; only single-input, single-output chains can be converted."
        )
    chain, tensor = [], model.outputs[0]
    while True:
        layer, node_index, _ = _history(tensor)
        if isinstance(layer, L.InputLayer):
            break
        inputs = keras.tree.flatten(layer._inbound_nodes[node_index].input_tensors)
        if len(inputs) != 1:
            raise ConversionError(
                f"layer {_name(layer)} merges {len(inputs)} branches; only chains of "
                "layers (no branches, no skip connections) can be converted."
            )
        chain.append(layer)
        tensor = inputs[0]
    chain.reverse()
    off_chain = [
        _name(layer)
        for layer in model.layers
        if not isinstance(layer, L.InputLayer) and all(layer is not c for c in chain)
    ]
    if off_chain:
        raise ConversionError(
            f"model {model.name!r} branches: {', '.join(off_chain)} are not on the path from "
            "the input to the output; only chains of layers can be converted."
        )
    return chain


def layer_chain(model: keras.Model) -> list[keras.layers.Layer]:
    """The model's layers from input to output, nested models flattened.

    Example:
        >>> import keras
        >>> inner = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name="d")])
        >>> outer = keras.Sequential([keras.Input((3,)), inner, keras.layers.Flatten(name="f")])
        >>> [layer.name for layer in layer_chain(outer)]
        ['d', 'f']
    """
    layers = model.layers if isinstance(model, keras.Sequential) else _functional_chain(model)
    chain = []
    for layer in layers:
        chain.extend(layer_chain(layer) if isinstance(layer, keras.Model) else [layer])
    return [layer for layer in chain if not isinstance(layer, L.InputLayer)]


# ---------------------------------------------------------------- checks and entry point


def _check_sharp(model: keras.Model) -> None:
    try:
        sharpness = get_sharpness(model)
    except ValueError as error:
        raise ConversionError(str(error)) from error
    soft = {name: value for name, value in sharpness.items() if value != 1.0}
    if soft:
        listed = ", ".join(f"{name!r} at {value:g}" for name, value in soft.items())
        raise ConversionError(
            f"model {model.name!r} is not fully sharpened: {listed}. Train with a sharpener "
            "(whetstone.callbacks.SimpleSharpener) until every spiking layer reaches "
            "sharpness 1 (whetstone.sharpness.is_fully_sharpened(model) is True)."
        )


def _check_layers(chain: list) -> None:
    unknown = [_name(layer) for layer in chain if _lookup(layer) is None]
    if unknown:
        raise ConversionError(
            f"unsupported layer(s): {', '.join(unknown)}. Supported layer types: "
            f"{', '.join(supported_layers())}. Replace them, or register a converter "
            "with @whetstone.convert.converter(LayerType)."
        )
    for layer in chain:
        for weight in layer.weights:
            if not np.isfinite(weight.numpy()).all():
                raise ConversionError(
                    f"layer {_name(layer)}: weight {weight.path!r} holds NaN or Inf values; "
                    "the training diverged. Retrain (e.g. with a lower learning rate)."
                )


def _metadata(model: keras.Model) -> dict[str, str]:
    import whetstone

    return {
        "source_model": model.name,
        "whetstone_version": whetstone.__version__,
        "keras_version": keras.__version__,
        "keras_backend": keras.backend.backend(),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def to_spiking(
    model: keras.Model, input_encoding: str = "host", require_sharp: bool = True
) -> SpikingNetwork:
    """Convert a fully sharpened Keras model into a :class:`SpikingNetwork`.

    Args:
        model: a Sequential or Functional chain (nested models are flattened).
        input_encoding: ``"host"``: the first stage runs on the host and encodes the
            real-valued input into spikes; ``"binary"``: the model was trained on 0/1
            inputs and every stage runs on chip.
        require_sharp: refuse a model that is not fully sharpened (False: convert its
            weights anyway, e.g. to read the stages a weight sharpener quantises).

    Raises:
        ConversionError: the model is not fully sharpened, has unsupported layers or
            activations, branches, several inputs, or NaN/Inf weights.
    """
    if input_encoding not in ("host", "binary"):
        raise ConversionError(f"input_encoding must be 'host' or 'binary', got {input_encoding!r}.")
    chain = layer_chain(model)
    _check_layers(chain)
    if require_sharp:
        _check_sharp(model)
    input_shape = _tuple(model.inputs[0].shape[1:])
    if any(n is None or n <= 0 for n in input_shape):
        raise ConversionError(
            f"model {model.name!r} has input shape {input_shape}; give keras.Input a fully "
            "defined shape."
        )
    builder = Builder(input_shape)
    for layer in chain:
        _lookup(layer)(layer, builder)
    stages, decoder = builder.finish(model.name)
    return SpikingNetwork(input_shape, stages, decoder, input_encoding, _metadata(model))
