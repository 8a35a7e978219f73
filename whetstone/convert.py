"""Keras model -> SpikingNetwork, one registered converter per Keras layer type.

The model has one input and one output (nested models are flattened) and is fully
sharpened; it may branch: a residual ``Add`` before a spiking activation and a
``Concatenate`` of spikes become stages that read several earlier stages (a DAG, the
shorter paths delayed to align). Dense and convolution layers (also depthwise, separable and grouped
ones) followed by a spiking activation become stages; BatchNormalization is folded into
the linear layer before the activation, or into the next linear layer when it follows
one; max pooling becomes an OR-pool stage (also when it sits between a convolution and
its activation, where it commutes with the step); average pooling, zero padding,
cropping, Flatten and Reshape fold into the next linear layer; Dropout and noise layers
vanish; ``SoftmaxDecode`` becomes a host key decoder and a final Dense (softmax or
linear) a host readout. Anything else is refused with a :class:`ConversionError` that
names the layer and says what to do.

To support your own layer type, register a converter (see the guide "Converting your
own layers")::

    @converter(MyLayer, convertible=lambda layer: None)
    def convert_my_layer(layer, builder: Builder) -> None: ...

Example:
    >>> import keras, whetstone as ws
    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3),
    ...     ws.layers.SpikingBRelu(sharpness=1.0)])
    >>> net = to_spiking(model)
    >>> [(s.kind, s.input_shape, s.output_shape, s.threshold) for s in net.stages]
    [('dense', (4,), (3,), 0.5)]
"""

from __future__ import annotations

import copy
import datetime
import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import keras
import numpy as np

from whetstone.geometry import axis_index, output_length, preactivation, same_padding
from whetstone.layers import SoftmaxDecode, Spiking
from whetstone.network import INPUT, KeyDecoder, ReadoutDecoder, SpikingNetwork, Stage
from whetstone.sharpness import get_sharpness

__all__ = [
    "CONVERTERS",
    "AffineOp",
    "AveragePool",
    "Branch",
    "Builder",
    "ChannelAffine",
    "ConversionError",
    "Converter",
    "GlobalAverage",
    "Pad",
    "Reshape",
    "block_diagonal",
    "converter",
    "find_converter",
    "layer_chain",
    "layer_graph",
    "logic_pool_stage",
    "separable_kernel",
    "supported_layers",
    "to_spiking",
]

L = keras.layers


class ConversionError(ValueError):
    """The model cannot be converted; the message names the layer and the remedy."""


# ---------------------------------------------------------------- the registry


@dataclass(frozen=True)
class Converter:
    """A registered layer converter.

    Args:
        convert: ``convert(layer, builder)`` reads the layer and calls :class:`Builder`
            methods; it raises through ``builder.fail`` where the layer's place in the
            model cannot be represented.
        convertible: ``convertible(layer)`` returns None when this converter handles the
            layer's configuration, or a sentence saying why not (e.g. an unsupported
            option). Every layer is asked before conversion starts, so one error lists
            them all.
    """

    convert: Callable[[keras.layers.Layer, Builder], None]
    convertible: Callable[[keras.layers.Layer], str | None] | None = None

    def __call__(self, layer: keras.layers.Layer, builder: Builder) -> None:
        self.convert(layer, builder)

    def why_not(self, layer: keras.layers.Layer) -> str | None:
        """None if this converter can convert ``layer``, else the reason it cannot."""
        return None if self.convertible is None else self.convertible(layer)


CONVERTERS: dict[type, Converter] = {}
"""Keras layer type -> :class:`Converter` (looked up along the class hierarchy)."""


def converter(
    *layer_types: type,
    convertible: Callable[[keras.layers.Layer], str | None] | None = None,
) -> Callable:
    """Register ``f(layer, builder)`` as the converter of these layer types.

    A later registration for the same type replaces the earlier one, and a converter
    registered for a subclass wins over its base class's (the lookup follows the MRO).
    The decorated function is returned unchanged.

    Args:
        layer_types: the Keras layer classes this function converts.
        convertible: optional ``f(layer) -> None | str``: None when the layer can be
            converted, otherwise the reason it cannot (shown in the ConversionError).

    Example:
        >>> import keras
        >>> class Halve(keras.layers.Layer):
        ...     def call(self, x):
        ...         return x / 2
        >>> @converter(Halve)
        ... def _halve(layer, builder):
        ...     n = builder.shape[-1]
        ...     builder.channel_affine(layer, np.full(n, 0.5), np.zeros(n))
        >>> "Halve" in supported_layers()
        True
        >>> _ = CONVERTERS.pop(Halve)
    """

    def register(function):
        for layer_type in layer_types:
            CONVERTERS[layer_type] = Converter(function, convertible)
        return function

    return register


def supported_layers() -> list[str]:
    """Names of the Keras layer types the converter knows.

    Example:
        >>> "Conv2D" in supported_layers()
        True
    """
    return sorted(t.__name__ for t in CONVERTERS)


def find_converter(layer: keras.layers.Layer) -> Converter | None:
    """The converter registered for ``layer``'s type or its nearest base class, or None.

    Example:
        >>> find_converter(keras.layers.Dropout(0.5)) is CONVERTERS[keras.layers.Dropout]
        True
    """
    return next((CONVERTERS[t] for t in type(layer).__mro__ if t in CONVERTERS), None)


def _name(layer) -> str:
    return f"{layer.name!r} ({type(layer).__name__})"


# ---------------------------------------------------------------- affine maps between stages


@dataclass
class AffineOp:
    """An affine map ``x -> A x + c`` of spikes (or inputs), folded into the next linear layer.

    Subclass it for a layer of your own that is linear at inference: implement
    :meth:`apply` (the map on a batch) and :meth:`adjoint` (``A^T`` on a batch), and
    give it a ``kind`` that error messages name. A following Dense layer ``W x + b``
    becomes ``(A^T W) s + (b + W c)``; a following convolution takes only the ops it
    knows how to compose (:class:`Reshape`, :class:`ChannelAffine`, :class:`Pad`,
    :class:`AveragePool`) and refuses the others, naming them.

    Args:
        layer: name of the Keras layer it came from (named in messages).
        in_shape, out_shape: per-sample shapes.
    """

    layer: str
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    kind = "affine map"

    def apply(self, x: np.ndarray) -> np.ndarray:
        """``A x + c`` for a batch ``(B, *in_shape) -> (B, *out_shape)``."""
        raise NotImplementedError(f"{type(self).__name__} must implement apply().")

    def adjoint(self, g: np.ndarray) -> np.ndarray:
        """``A^T g`` (the linear part only) for a batch ``(B, *out_shape) -> (B, *in_shape)``."""
        raise NotImplementedError(f"{type(self).__name__} must implement adjoint().")

    def describe(self) -> str:
        """What the op is, for messages: its kind and layer."""
        return f"{self.kind} {self.layer!r}"


@dataclass
class Reshape(AffineOp):
    """Flatten/Reshape: the values in row-major order are unchanged, only the shape."""

    kind = "reshape"

    def apply(self, x):
        return x.reshape(len(x), *self.out_shape)

    def adjoint(self, g):
        return g.reshape(len(g), *self.in_shape)


@dataclass
class ChannelAffine(AffineOp):
    """``x * scale + offset`` per channel (last axis): an inference BatchNormalization.

    ``scale`` and ``offset`` have one value per channel.
    """

    scale: np.ndarray = field(default_factory=lambda: np.ones(1))
    offset: np.ndarray = field(default_factory=lambda: np.zeros(1))
    kind = "per-channel affine map"

    def apply(self, x):
        return x * self.scale + self.offset

    def adjoint(self, g):
        return g * self.scale


@dataclass
class Pad(AffineOp):
    """Zero padding (positive widths) or cropping (negative widths) of the spatial axes.

    ``widths`` holds ``(before, after)`` per spatial axis. Folded into a following
    convolution it shifts the convolution's windows (see :meth:`Builder.start_linear`).

    Example:
        >>> pad = Pad("p", (2, 1), (5, 1), widths=((1, 2),))
        >>> pad.apply(np.ones((1, 2, 1))).ravel().tolist()
        [0.0, 1.0, 1.0, 0.0, 0.0]
    """

    widths: tuple[tuple[int, int], ...] = ()

    @property
    def kind(self) -> str:
        return "cropping" if min(min(w) for w in self.widths) < 0 else "zero padding"

    def _crop(self, x, widths):
        pads = [(0, 0), *((max(a, 0), max(b, 0)) for a, b in widths), (0, 0)]
        x = np.pad(x, pads)
        keep = (
            slice(max(-a, 0), n - max(-b, 0))
            for (a, b), n in zip(widths, x.shape[1:-1], strict=True)
        )
        return x[(slice(None), *keep)]

    def apply(self, x):
        return self._crop(x, self.widths)

    def adjoint(self, g):
        return self._crop(g, [(-a, -b) for a, b in self.widths])


@dataclass
class AveragePool(AffineOp):
    """Keras average pooling ('same' averages only the in-bounds values)."""

    pool_size: tuple[int, ...] = ()
    strides: tuple[int, ...] = ()
    padding: str = "valid"
    kind = "average pooling"

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

    def _tap_slices(self):
        for offsets in itertools.product(*(range(k) for k in self.pool_size)):
            axes = zip(offsets, self.out_shape[:-1], self.strides, strict=True)
            yield (slice(None), *(slice(o, o + (m - 1) * s + 1, s) for o, m, s in axes))

    def apply(self, x):
        pads, count = self._geometry()
        padded = np.pad(x, [(0, 0), *pads, (0, 0)])
        total = sum(padded[taps] for taps in self._tap_slices())
        return total / count

    def adjoint(self, g):
        pads, count = self._geometry()
        padded_shape = [n + a + b for n, (a, b) in zip(self.in_shape[:-1], pads, strict=True)]
        out = np.zeros((len(g), *padded_shape, self.in_shape[-1]))
        for taps in self._tap_slices():
            out[taps] += g / count
        crop = tuple(slice(a, a + n) for n, (a, _) in zip(self.in_shape[:-1], pads, strict=True))
        return out[(slice(None), *crop)]

    @property
    def padded(self) -> bool:
        """Whether some window reaches past the edge (then edge windows average fewer values)."""
        return self.padding == "same" and any(
            sum(same_padding(n, k, s))
            for n, k, s in zip(self.in_shape[:-1], self.pool_size, self.strides, strict=True)
        )


@dataclass
class GlobalAverage(AffineOp):
    """The mean over all positions per channel."""

    kind = "global average pooling"

    def apply(self, x):
        spatial = tuple(range(1, x.ndim - 1))
        return x.mean(axis=spatial).reshape(len(x), *self.out_shape)

    def adjoint(self, g):
        area = math.prod(self.in_shape[:-1])
        g = g.reshape(len(g), *([1] * (len(self.in_shape) - 1)), self.in_shape[-1])
        return np.broadcast_to(g / area, (len(g), *self.in_shape))


def _is_reshape(op: AffineOp) -> bool:
    return type(op) is Reshape


# ---------------------------------------------------------------- kernels of composite layers


def block_diagonal(kernel: np.ndarray, groups: int) -> np.ndarray:
    """A grouped convolution's kernel as one ordinary convolution kernel.

    Keras's grouped kernel ``(*window, c_in / groups, c_out)`` maps input channels of
    group ``g`` only to the output channels of group ``g``; the full kernel
    ``(*window, c_in, c_out)`` holds those blocks on its diagonal and zeros elsewhere,
    and computes the same sums.

    Example:
        >>> block_diagonal(np.arange(4.0).reshape(1, 1, 4), groups=2)[0].tolist()
        [[0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 2.0, 3.0]]
    """
    *window, c_group, c_out = kernel.shape
    out_group = c_out // groups
    full = np.zeros((*window, c_group * groups, c_out), kernel.dtype)
    for g in range(groups):
        rows, cols = (
            slice(g * c_group, (g + 1) * c_group),
            slice(g * out_group, (g + 1) * out_group),
        )
        full[..., rows, cols] = kernel[..., cols]
    return full


def depthwise_kernel(kernel: np.ndarray) -> np.ndarray:
    """A depthwise kernel ``(*window, c_in, m)`` as an ordinary kernel ``(*window, c_in, c_in m)``.

    Output channel ``c m + j`` of a depthwise convolution reads input channel ``c`` only,
    with ``kernel[..., c, j]``: a grouped convolution with ``c_in`` groups.

    Example:
        >>> depthwise_kernel(np.array([[[1.0], [2.0]]]))[0].tolist()   # 2 channels, m = 1
        [[1.0, 0.0], [0.0, 2.0]]
    """
    *window, c_in, multiplier = kernel.shape
    grouped = kernel.reshape(*window, 1, c_in * multiplier)
    return block_diagonal(grouped, groups=c_in)


def separable_kernel(depthwise: np.ndarray, pointwise: np.ndarray) -> np.ndarray:
    """A separable convolution as one convolution kernel.

    ``K[..., c, o] = sum_j D[..., c, j] P[c m + j, o]``: the depthwise part ``D``
    (``(*window, c_in, m)``) and the 1x1 pointwise part ``P``
    (``(1, ..., c_in m, c_out)``) are both linear with nothing between them, so they
    compose into one kernel of the depthwise window.

    Example:
        >>> d = np.array([[[2.0], [3.0]]])             # window 1, 2 channels, m = 1
        >>> p = np.array([[[1.0], [10.0]]])            # 1x1, 2 -> 1
        >>> separable_kernel(d, p)[..., 0].tolist()    # 2 * 1 and 3 * 10
        [[2.0, 30.0]]
    """
    c_in, multiplier = depthwise.shape[-2:]
    point = pointwise.reshape(c_in, multiplier, pointwise.shape[-1])
    return np.einsum("...cj,cjo->...co", depthwise, point)


# ---------------------------------------------------------------- window composition


@dataclass
class _Axis:
    """One spatial axis of a convolution: output ``i``, tap ``j`` reads input
    ``i * stride + j * dilation - pad`` (zero outside ``[0, n_in)``)."""

    taps: int
    stride: int
    dilation: int
    pad: int
    n_in: int
    n_out: int

    def reads(self) -> np.ndarray:
        """(n_out, taps) the input index each output and tap reads."""
        index = np.arange(self.n_out)[:, None] * self.stride - self.pad
        return index + np.arange(self.taps)[None, :] * self.dilation


def _axes(kernel, geometry, shape, out_shape) -> list[_Axis]:
    axes = []
    for i, n in enumerate(shape[:-1]):
        k, s, d = kernel.shape[i], geometry["strides"][i], geometry["dilation"][i]
        pad = same_padding(n, k, s, d)[0] if geometry["padding"] == "same" else 0
        axes.append(_Axis(k, s, d, pad, n, out_shape[i]))
    return axes


def _through_pad(axis: _Axis, before: int, after: int) -> bool:
    """Move ``axis`` back through padding (cropping when negative); False if not exact.

    Padding ``b`` before: the padded index ``u`` is input ``u - b``, so the pad grows
    by ``b``. Exact as long as every read the convolution itself pads with zeros
    (outside the padded input) also falls outside the original input, which
    padding guarantees and cropping may not.
    """
    reads = axis.reads()
    outside = (reads < 0) | (reads >= axis.n_in)
    shifted = reads - before
    n = axis.n_in - before - after
    if ((shifted >= 0) & (shifted < n) & outside).any():
        return False
    axis.pad += before
    axis.n_in = n
    return True


def _through_pool(axis: _Axis, kernel: np.ndarray, i: int, pool: int, stride: int, n: int):
    """Move ``axis`` (spatial axis ``i`` of ``kernel``) back through a 'valid' average pool.

    Pooled value ``y[u] = mean_a x[u t + a]`` (``a < p``), so tap ``j`` of the
    convolution, reading ``y[i s + j d - P]``, reads ``x[(i s + j d - P) t + a]``:
    the composed kernel has ``(k - 1) d t + p`` taps, ``K[j d t + a] += k[j] / p``,
    stride ``s t``, pad ``P t`` and dilation 1 (dilation ``d t`` when ``p = 1``).
    Exact if every read the convolution pads with zeros reads only zeros of ``x``.

    Example: a 2-tap kernel ``[1, 3]`` after a 2-wide, stride-2 average pool is the
    4-tap kernel ``[0.5, 0.5, 1.5, 1.5]`` with stride 2.

    Returns the composed kernel, or None if not exact.
    """
    reads = axis.reads()
    outside = (reads < 0) | (reads >= axis.n_in)
    x = reads[..., None] * stride + np.arange(pool)
    if (outside[..., None] & (x >= 0) & (x < n)).any():
        return None
    if pool == 1:
        axis.dilation *= stride
    else:
        step = axis.dilation * stride
        taps = (axis.taps - 1) * step + pool
        shape = list(kernel.shape)
        shape[i] = taps
        composed = np.zeros(shape)
        for a in range(pool):
            index = [slice(None)] * kernel.ndim
            index[i] = slice(a, a + (axis.taps - 1) * step + 1, step)
            composed[tuple(index)] += kernel / pool
        kernel, axis.taps, axis.dilation = composed, taps, 1
    axis.stride *= stride
    axis.pad *= stride
    axis.n_in = n
    return kernel


def _embed(axis: _Axis, padding: str) -> tuple[int, int] | None:
    """Taps and leading zero taps that give ``axis``'s reads with Keras ``padding``.

    A stage has only Keras's 'valid' or 'same' padding. Zero taps added before the
    kernel move its reads: with ``o`` leading zero taps and the same-padding ``q`` of
    the longer kernel, tap ``j`` reads ``i s + (j + o) d - q``, which is the wanted
    ``i s + j d - P`` when ``o d = q - P``; trailing zero taps adjust the length.
    """
    for taps in range(axis.taps, axis.taps + 2 * (abs(axis.pad) + axis.stride + axis.taps) + 2):
        n, s, d = axis.n_in, axis.stride, axis.dilation
        if output_length(n, taps, s, d, padding) != axis.n_out:
            continue
        q = same_padding(n, taps, s, d)[0] if padding == "same" else 0
        lead, rest = divmod(q - axis.pad, d)
        if rest == 0 and 0 <= lead <= taps - axis.taps:
            return taps, lead
    return None


def _place(kernel: np.ndarray, axes: list[_Axis], padding: str):
    """The kernel with zero taps added so that it runs as a 'valid'/'same' stage, or None."""
    fits = [_embed(axis, padding) for axis in axes]
    if None in fits:
        return None
    placed = np.zeros((*(taps for taps, _ in fits), *kernel.shape[-2:]))
    index = tuple(slice(lead, lead + a.taps) for (_, lead), a in zip(fits, axes, strict=True))
    placed[index] = kernel
    return placed


def logic_pool_stage(
    name: str,
    input_shape: tuple[int, ...],
    output_shape: tuple[int, ...],
    pool_size: tuple[int, ...],
    strides: tuple[int, ...],
    padding: str,
    and_channels: np.ndarray,
) -> Stage:
    """Max pooling of spikes with min (AND) on some channels, as an ordinary conv stage.

    Max pooling ``a s + b`` over binary spikes ``s`` is ``a OR(s) + b`` for a scale
    ``a >= 0`` and ``a AND(s) + b`` for ``a < 0`` (the max of a reversed order is the
    min). Both are one threshold neuron over the window's sum: each channel reads its
    own window with weight 1 (a depthwise kernel of ones), the threshold is 0.5, and the
    bias is 0 for OR (fires if any spike: ``sum >= 1``) and ``1 - count`` for AND (fires
    if all ``count`` in-bounds spikes are there: ``sum + 1 - count >= 0.5``). ``count``
    is the number of in-bounds window taps of each position ('same' pools have fewer at
    the edges), so the bias depends on the position there. The sums are integers, so no
    neuron ever sits within 0.5 of its threshold: no ties.

    Example:
        >>> stage = logic_pool_stage("p", (4, 2), (2, 2), (2,), (2,), "valid",
        ...                          np.array([False, True]))
        >>> s = np.array([[[1, 1], [0, 1], [1, 0], [1, 1]]], "float32")
        >>> (preactivation(stage, s) >= 0.5).astype(int)[0].tolist()   # OR, AND per channel
        [[1, 1], [1, 0]]
    """
    channels = input_shape[-1]
    kernel = np.zeros((*pool_size, channels, channels), np.float32)
    kernel[..., np.arange(channels), np.arange(channels)] = 1.0
    count = np.ones(())
    for n, k, s, m in zip(input_shape[:-1], pool_size, strides, output_shape[:-1], strict=True):
        before = same_padding(n, k, s)[0] if padding == "same" else 0
        index = (np.arange(m) * s - before)[:, None] + np.arange(k)[None, :]
        count = np.multiply.outer(count, ((index >= 0) & (index < n)).sum(axis=1))
    bias = np.where(np.asarray(and_channels, bool), 1.0 - count[..., None], 0.0)
    if (bias == bias.reshape(-1, channels)[:1]).all():
        bias = bias.reshape(-1, channels)[0]  # the same at every position
    return Stage(name, "conv", input_shape, output_shape, kernel, bias.astype(np.float32), 0.5,
                 strides=strides, padding=padding)  # fmt: skip


def _embedding(a, b) -> list[np.ndarray] | None:
    """Per spatial axis, the tap of ``a``'s window that each tap of ``b`` reads the same
    input through (for every output position), or None where some tap has none."""
    taps = []
    ga, gb = a.geometry, b.geometry
    for axis, n in enumerate(a.input_shape[:-1]):
        ka, kb = a.weights.shape[axis], b.weights.shape[axis]
        ia = axis_index(n, ka, ga["strides"][axis], ga["dilation"][axis], ga["padding"])
        ib = axis_index(n, kb, gb["strides"][axis], gb["dilation"][axis], gb["padding"])
        if ia.shape[0] != ib.shape[0]:
            return None
        found = []
        for j in range(kb):
            match = [t for t in range(ka) if np.array_equal(ia[:, t], ib[:, j])]
            if not match:
                return None
            found.append(match[0])
        taps.append(np.array(found))
    return taps


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
    pool_sign: np.ndarray | None = None  # per channel: -1 where a later scale made it a min
    reshaped: bool = False
    sources: tuple[int, ...] = (INPUT,)  # the stages whose spikes it reads, concatenated


@dataclass
class Branch:
    """What one Keras tensor holds: the spikes of ``sources`` (concatenated along the last
    axis at ``lead``), the affine ``ops`` applied to them since, or a pending ``linear``."""

    shape: tuple[int, ...]
    sources: tuple[int, ...] = (INPUT,)
    ops: list = field(default_factory=list)
    linear: _Linear | None = None
    lead: tuple[int, ...] | None = None  # leading dims of a concatenation of several sources


class Builder:
    """The state of one conversion: stages so far, and what waits to be folded.

    A converter reads :attr:`shape` (the current per-sample shape, channels last, as
    Keras sees it) and calls the methods below, each of which refuses what it cannot
    represent with a :class:`ConversionError` naming the layer:

    - linear maps of spikes that fold into the next linear layer: :meth:`reshape`,
      :meth:`channel_affine`, :meth:`add_op` (any :class:`AffineOp`);
    - a Dense or convolution layer: :meth:`start_linear` (it waits for its activation);
    - :meth:`max_pool`, :meth:`spiking` (a spiking activation closes a stage),
      :meth:`key_decoder`;
    - :meth:`fail` to refuse the layer with your own message.

    Attributes:
        shape: the per-sample shape after the layers converted so far.
        stages: the finished stages.
        ops: the affine maps after the last spikes (or the input), not yet folded.
    """

    def __init__(self, input_shape: tuple[int, ...]):
        self.input_shape = input_shape
        self.stages: list[Stage] = []
        self.decoder = None
        self.branches: list[Branch] = []  # the inputs of a merge layer (Add, Concatenate)
        self.load(Branch(input_shape))

    # -- the branch (Keras tensor) being converted
    def load(self, branch: Branch) -> None:
        """Continue from ``branch`` (a copy: other layers may read the same tensor)."""
        self.shape, self.sources, self.ops = branch.shape, branch.sources, list(branch.ops)
        self.linear = copy.copy(branch.linear)
        self.lead = branch.lead

    def save(self) -> Branch:
        """The current branch, after the layers converted so far."""
        return Branch(self.shape, self.sources, list(self.ops), self.linear, self.lead)

    # -- helpers for converters
    def fail(self, layer: keras.layers.Layer, message: str):
        """Refuse ``layer``: raise a ConversionError that starts with its name and type."""
        raise ConversionError(f"layer {_name(layer)}: {message}")

    def check_open(self, layer) -> None:
        """Refuse a layer after the decoder or after a readout's softmax/linear activation."""
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
            self.ops.append(Reshape(layer.name, self.shape, shape))
        self.shape = tuple(shape)

    def add_op(self, layer, op: AffineOp) -> None:
        """An affine map after spikes (or the input) that folds into the next linear layer."""
        self.check_open(layer)
        if self.linear is not None:
            self.fail(
                layer,
                f"is a {op.kind} between {_name(self.linear.layer)} and its spiking "
                "activation, which is not supported; put it after the activation.",
            )
        self.ops.append(op)
        self.shape = op.out_shape

    def channel_affine(self, layer, scale: np.ndarray, offset: np.ndarray) -> None:
        """``x * scale + offset`` per channel (a BatchNormalization at inference).

        Folded into the pending linear layer (``W' = W scale``, ``b' = b scale + offset``),
        or kept to fold into the next one. After a max pooling that sits between a
        convolution and its activation, a negative scale turns the max into a min: that
        channel's pooling becomes an AND (see :func:`logic_pool_stage`).
        """
        self.check_open(layer)
        scale, offset = np.asarray(scale, np.float64), np.asarray(offset, np.float64)
        lin = self.linear
        if lin is None:
            self.add_op(layer, ChannelAffine(layer.name, self.shape, self.shape, scale, offset))
            return
        if lin.reshaped:
            self.fail(
                layer,
                f"normalises a reshaped output of {_name(lin.layer)}; put the "
                "BatchNormalization directly after the Dense/Conv layer.",
            )
        if lin.pool is not None:
            lin.pool_sign = lin.pool_sign * np.sign(scale)
        lin.weights = lin.weights * scale
        lin.bias = lin.bias * scale + offset

    # -- linear layers
    def start_linear(
        self,
        layer,
        kind: str,
        weights: np.ndarray,
        bias: np.ndarray,
        output_shape: tuple[int, ...],
        activation: str = "linear",
        **geometry,
    ) -> None:
        """A Dense (``kind="dense"``) or convolution (``"conv"``) layer awaiting its activation.

        Folds the pending affine ops into it. ``weights`` is ``(n_in, n_out)`` for dense
        and ``(*window, c_in, c_out)`` for conv; ``geometry`` holds the conv's
        ``strides``, ``padding`` ('valid' or 'same') and ``dilation``. ``activation`` is
        'linear', or 'softmax' for a final readout.
        """
        self.check_open(layer)
        if self.linear is not None:
            self.fail(
                layer,
                f"follows {_name(self.linear.layer)} with no spiking activation between; "
                "add a whetstone.layers.SpikingBRelu() after each Dense/Conv layer.",
            )
        weights, bias = np.asarray(weights, np.float64), np.asarray(bias, np.float64)
        if kind == "dense":
            input_shape, weights, bias = self._fold_dense(weights, bias)
        else:
            rank = weights.ndim - 2
            geometry = {
                "strides": tuple(geometry.get("strides", (1,) * rank)),
                "padding": geometry.get("padding", "valid"),
                "dilation": tuple(geometry.get("dilation", (1,) * rank)),
            }
            input_shape, weights, bias, geometry = self._fold_conv(
                layer, weights, bias, tuple(output_shape), geometry
            )
        self.linear = _Linear(
            layer, kind, input_shape, tuple(output_shape), weights, bias, geometry, activation,
            sources=self.sources,
        )  # fmt: skip
        if len(self.sources) > 1 and input_shape[:-1] != self.lead:
            self.fail(
                layer,
                f"reads a concatenation of {len(self.sources)} branches reshaped from "
                f"{(*self.lead, '...')} to {input_shape}; reshape each branch before "
                "concatenating, or not at all.",
            )
        self.ops = []
        self.shape = tuple(output_shape)

    def _fold_dense(self, weights, bias):
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
        """Fold the pending ops into a convolution: it stays one convolution.

        Per-channel scales multiply the kernel's input channels; offsets become a bias
        (per position where the convolution's zero padding sees fewer of them); padding,
        cropping and 'valid' average pooling compose with the kernel's windows
        (:func:`_through_pad`, :func:`_through_pool`), and zero taps make the composed
        windows a Keras 'valid' or 'same' convolution (:func:`_embed`).
        """
        if not self.ops:
            return self.shape, kernel, bias, geometry
        for op in self.ops:
            self._check_conv_foldable(layer, op)
        first = next(
            (i for i, op in enumerate(self.ops) if isinstance(op, (Pad, AveragePool))),
            len(self.ops),
        )
        windowed = self.ops[first:]
        for op in windowed:
            if _is_reshape(op) and op.in_shape != op.out_shape:
                self.fail(
                    layer,
                    f"the {op.describe()} after the {windowed[0].describe()} cannot be folded "
                    "into this convolution; reshape before padding or pooling, or not at all.",
                )
        stage_input = windowed[0].in_shape if windowed else self.shape
        per_channel = self._channel_scale(layer, first, stage_input)
        offset = np.zeros((1, *self.ops[0].in_shape))
        for op in self.ops:
            offset = op.apply(offset)
        if offset.any():
            probe = Stage(layer.name, "conv", self.shape, output_shape, kernel, **geometry)
            offset_map = preactivation(probe, offset, "float64")[0]
            first_row = offset_map.reshape(-1, offset_map.shape[-1])[0]
            if np.array_equal(offset_map, np.broadcast_to(first_row, offset_map.shape)):
                offset_map = first_row  # every position sees the same constant
            bias = bias + offset_map
        if windowed:
            kernel, geometry = self._compose_windows(
                layer, kernel, geometry, windowed, output_shape
            )
        return stage_input, kernel * per_channel[:, None], bias, geometry

    def _check_conv_foldable(self, layer, op: AffineOp) -> None:
        if isinstance(op, AveragePool) and op.padded:
            self.fail(
                layer,
                f"the {op.describe()} before this convolution has 'same' padding that "
                "averages fewer values at the edges, which no convolution computes; use "
                "padding='valid' or an input size its strides divide.",
            )
        if type(op) not in (Reshape, ChannelAffine, Pad, AveragePool):
            self.fail(
                layer,
                f"the {op.describe()} before this convolution cannot be folded into it; "
                "fold it into a Dense layer instead (Flatten + Dense), or use pooling that "
                "does (MaxPooling, or 'valid' AveragePooling).",
            )

    def _channel_scale(self, layer, first: int, stage_input) -> np.ndarray:
        """The product of the pending per-channel scales, per input channel of the stage."""
        scale = np.ones((1, *self.ops[0].in_shape))
        for op in self.ops[:first]:
            scale = scale * op.scale if isinstance(op, ChannelAffine) else op.apply(scale)
        per_channel = scale.reshape(-1, stage_input[-1])[0]
        if not np.array_equal(scale[0], np.broadcast_to(per_channel, stage_input)):
            self.fail(
                layer,
                "a BatchNormalization whose channels are not this convolution's input channels "
                "(a Reshape between them) cannot be folded; normalise along the channel axis.",
            )
        for op in self.ops[first:]:
            if isinstance(op, ChannelAffine):
                per_channel = per_channel * op.scale
        return per_channel

    def _compose_windows(self, layer, kernel, geometry, windowed, output_shape):
        axes = _axes(kernel, geometry, self.shape, output_shape)
        for op in reversed(windowed):
            if isinstance(op, Pad):
                for axis, (before, after) in zip(axes, op.widths, strict=True):
                    if not _through_pad(axis, before, after):
                        self.fail(
                            layer,
                            f"the {op.describe()} before this convolution keeps values that "
                            "the convolution's 'same' padding replaces by zeros; use "
                            "padding='valid' in the convolution.",
                        )
            elif isinstance(op, AveragePool):
                spatial = zip(axes, op.pool_size, op.strides, op.in_shape[:-1], strict=True)
                for i, (axis, pool, stride, n) in enumerate(spatial):
                    kernel = _through_pool(axis, kernel, i, pool, stride, n)
                    if kernel is None:
                        why = (
                            f"its windows overlap (pool size {pool} > stride {stride})"
                            if pool > stride
                            else f"it drops the end of its input (length {n}, stride {stride})"
                        )
                        self.fail(
                            layer,
                            f"the {op.describe()} before this convolution does not fold into "
                            f"it exactly: {why}, so the convolution's 'same' padding would "
                            "read pooled inputs; use padding='valid' in the convolution, or "
                            "pool_size == strides dividing the input.",
                        )
        for padding in dict.fromkeys((geometry["padding"], "same", "valid")):
            placed = _place(kernel, axes, padding)
            if placed is not None:
                strides = tuple(a.stride for a in axes)
                return placed, {"strides": strides, "padding": padding,
                                "dilation": tuple(a.dilation for a in axes)}  # fmt: skip
        names = ", ".join(op.describe() for op in windowed)
        self.fail(
            layer,
            f"with the {names} before it, this convolution's windows are not those of one "
            "'valid' or 'same' convolution; use symmetric padding or padding='same' instead.",
        )

    # -- pooling and activations
    def _spike_affine(self, layer) -> tuple[np.ndarray, np.ndarray]:
        """The pending per-channel affine map of binary spikes, as one (scale, offset)."""
        channels = self.shape[-1]
        scale, offset = np.ones(channels), np.zeros(channels)
        for op in self.ops:
            if isinstance(op, ChannelAffine):
                scale, offset = scale * op.scale, offset * op.scale + op.offset
            elif not (_is_reshape(op) and op.in_shape == op.out_shape):
                self.fail(
                    layer,
                    f"max-pools the output of the {op.describe()}, which is no longer binary "
                    "spikes (or a per-channel affine map of them); put the pooling before it.",
                )
        return scale, offset

    def max_pool(self, layer, stage: Stage) -> None:
        """Max pooling: of spikes (an OR-pool stage) or between a conv and its activation.

        Of spikes after a per-channel affine map ``a s + b`` (a BatchNormalization after
        the activation): ``max(a s + b) = a OR(s) + b`` for ``a >= 0`` and
        ``a AND(s) + b`` for ``a < 0``, so the pooling becomes a stage of OR (and AND)
        neurons and the affine map moves after it, into the next linear layer.
        """
        self.check_open(layer)
        lin = self.linear
        if lin is not None:
            if lin.pool is not None or lin.reshaped:
                self.fail(
                    layer, "cannot follow another pooling or a reshape before the activation."
                )
            lin.pool, lin.pool_sign = stage, np.ones(stage.output_shape[-1])
        elif not self.stages:
            self.fail(
                layer,
                "max-pools the real-valued input; max pooling is only exact on spikes. "
                "Move it after the first spiking layer.",
            )
        else:
            scale, offset = self._spike_affine(layer)
            self._append(self._pool_stage(stage, scale < 0), layer)
            out = stage.output_shape
            keep = (scale != 1).any() or (offset != 0).any()
            self.ops = [ChannelAffine(layer.name, out, out, scale, offset)] if keep else []
        self.shape = stage.output_shape

    def _append(self, stage: Stage, layer) -> None:
        """A finished stage reading the current sources; the branch now carries its spikes."""
        if INPUT in self.sources and (self.stages or len(self.sources) > 1):
            self.fail(
                layer,
                "reads the model input together with, or after, other spiking layers; only "
                "the first spiking layer may read the input (start skip connections after it).",
            )
        if len(self.sources) > 1 and stage.kind == "pool":
            self.fail(layer, "max-pools a concatenation of branches; pool each branch first.")
        stage.sources = self.sources
        self.stages.append(stage)
        self.sources, self.lead = (len(self.stages) - 1,), None

    @staticmethod
    def _pool_stage(pool: Stage, and_channels: np.ndarray) -> Stage:
        if not and_channels.any():
            return pool
        return logic_pool_stage(pool.name, pool.input_shape, pool.output_shape, pool.pool_size,
                                pool.strides, pool.padding, and_channels)  # fmt: skip

    def spiking(self, layer, threshold: float) -> None:
        """A spiking activation ``H(x - threshold)`` closes the pending linear layer (a stage)."""
        self.check_open(layer)
        lin = self.linear
        if lin is None:
            before = "the input" if not self.stages else "the previous spiking layer"
            self.fail(
                layer,
                f"has no Dense or Conv layer between it and {before}; every spiking layer "
                "needs its own linear layer.",
            )
        self.sources = lin.sources
        self._append(
            Stage(
                lin.layer.name,
                lin.kind,
                lin.input_shape,
                lin.output_shape,
                lin.weights.astype(np.float32),
                lin.bias.astype(np.float32),
                threshold,
                **lin.geometry,
            ),
            layer,
        )
        if lin.pool is not None:
            pool = lin.pool
            self._append(self._pool_stage(
                Stage(pool.name, "pool", pool.input_shape, pool.output_shape, threshold=0.5,
                      strides=pool.strides, padding=pool.padding, pool_size=pool.pool_size),
                lin.pool_sign < 0,
            ), layer)  # fmt: skip
        self.linear = None
        self.ops = []
        if self.shape != self.stages[-1].output_shape:
            self.ops = [Reshape(layer.name, self.stages[-1].output_shape, self.shape)]

    # -- where branches meet
    def concatenate(self, layer) -> None:
        """Concatenate the branches' spikes along the last axis: the next stage reads all
        of their sources (delayed to align, see :class:`~whetstone.network.SpikingNetwork`)."""
        lead = self.branches[0].shape[:-1]
        sources: tuple[int, ...] = ()
        for branch in self.branches:
            self._check_spikes(layer, branch, "concatenates")
            if branch.shape[:-1] != lead or (branch.lead not in (None, lead)):
                self.fail(
                    layer,
                    f"concatenates shapes {[b.shape for b in self.branches]} (after reshapes "
                    "of the spikes); only concatenation along the last axis of equally shaped "
                    "branches is supported.",
                )
            sources += branch.sources
        if len(set(sources)) != len(sources):
            self.fail(layer, "concatenates the same spikes twice; concatenate each branch once.")
        channels = sum(branch.shape[-1] for branch in self.branches)
        self.load(Branch((*lead, channels), sources, lead=lead))

    def _check_spikes(self, layer, branch: Branch, verb: str) -> None:
        if branch.linear is not None or not all(
            _is_reshape(op) for op in branch.ops
        ):  # fmt: skip
            self.fail(
                layer,
                f"{verb} a branch that is not spikes (a Dense/Conv without its spiking "
                "activation, or a BatchNormalization/pooling after it); let each branch end "
                "with a spiking activation (or a Flatten/Reshape of one).",
            )
        if INPUT in branch.sources and self.input_shape and self.stages:
            self.fail(
                layer,
                f"{verb} the model input with other branches; only the first spiking layer "
                "may read the input (start skip connections after it).",
            )

    def add(self, layer) -> None:
        """Add branches before a spiking activation: ``W_1 s_1 + W_2 s_2 + ... + b``.

        Each branch is a pending Dense/Conv (with its BatchNorm) or spikes (an identity
        skip, optionally scaled per channel); the sum becomes one stage that reads all of
        their sources, with a kernel that holds each branch's kernel on its channels
        (convolutions: embedded in the largest window, where their taps line up).
        """
        parts = [self._as_linear(layer, branch) for branch in self.branches]
        kinds = {lin.kind for lin in parts}
        if len(kinds) > 1:
            self.fail(layer, f"adds Dense and convolution branches ({sorted(kinds)}).")
        merged: dict[tuple[int, ...], _Linear] = {}
        for lin in parts:
            if lin.pool is not None or lin.reshaped or lin.activation != "linear":
                self.fail(
                    layer,
                    f"adds the output of {_name(lin.layer)} after a pooling, reshape or "
                    "activation that is not spiking; add the Dense/Conv outputs directly.",
                )
            if lin.sources in merged:
                merged[lin.sources] = self._sum(layer, merged[lin.sources], lin, same=True)
            elif any(set(lin.sources) & set(other) for other in merged):
                self.fail(layer, "adds branches that read overlapping sets of spikes.")
            else:
                merged[lin.sources] = lin
        total = None
        for lin in merged.values():
            total = lin if total is None else self._sum(layer, total, lin, same=False)
        self.load(Branch(total.output_shape, total.sources, linear=total))

    def _as_linear(self, layer, branch: Branch) -> _Linear:
        """A branch as a pending linear layer: its own, or a (scaled) identity of spikes."""
        if branch.linear is not None:
            return branch.linear
        self.load(branch)
        if INPUT in branch.sources and self.stages:
            self._check_spikes(layer, branch, "adds")
        scale, offset = self._spike_affine(layer)
        c, shape = branch.shape[-1], branch.shape
        if len(shape) == 1:
            weights, kind, geometry = np.diag(scale), "dense", {}
        else:
            weights, kind = np.diag(scale).reshape(*(1,) * (len(shape) - 1), c, c), "conv"
            rank = len(shape) - 1
            geometry = {"strides": (1,) * rank, "padding": "valid", "dilation": (1,) * rank}
        return _Linear(layer, kind, shape, shape, weights, offset, geometry,
                       sources=branch.sources)  # fmt: skip

    def _sum(self, layer, a: _Linear, b: _Linear, same: bool) -> _Linear:
        """``a + b``: one kernel over ``a``'s and ``b``'s inputs (the same inputs: added)."""
        bias = (
            a.bias + b.bias
            if a.bias.shape == b.bias.shape
            else (np.broadcast_to(a.bias, a.output_shape) + np.broadcast_to(b.bias, b.output_shape))
        )
        if a.kind == "dense":
            flat = a.input_shape if same else (a.weights.shape[0] + b.weights.shape[0],)
            for lin in (a, b):
                if len(lin.sources) > 1 and len(lin.input_shape) > 1 and not same:
                    self.fail(layer, "adds a Dense over a reshaped concatenation; flatten "
                              "each branch before concatenating.")  # fmt: skip
            weights = a.weights + b.weights if same else np.concatenate([a.weights, b.weights])
            sources = a.sources if same else a.sources + b.sources
            return _Linear(a.layer, "dense", tuple(flat), a.output_shape, weights, bias,
                           sources=sources)  # fmt: skip
        if a.input_shape[:-1] != b.input_shape[:-1]:
            self.fail(
                layer,
                f"adds convolutions of inputs {a.input_shape} and {b.input_shape}; the "
                "branches must read inputs of the same size (e.g. downsample with a max "
                "pooling before the block, not a strided convolution inside it).",
            )
        if math.prod(b.weights.shape[:-2]) > math.prod(a.weights.shape[:-2]):
            a, b = b, a
        taps = _embedding(a, b)
        if taps is None:
            self.fail(
                layer,
                f"adds convolutions whose windows do not line up ({_name(a.layer)}: window "
                f"{a.weights.shape[:-2]}, {a.geometry}; {_name(b.layer)}: window "
                f"{b.weights.shape[:-2]}, {b.geometry}); use equal strides and 'same' padding "
                "with odd windows (a 1x1 skip sits in the centre of a 3x3).",
            )
        placed = np.zeros((*a.weights.shape[:-2], *b.weights.shape[-2:]))
        placed[np.ix_(*taps)] = b.weights
        if same:
            weights, sources, shape = a.weights + placed, a.sources, a.input_shape
        else:
            weights = np.concatenate([a.weights, placed], axis=-2)
            sources = a.sources + b.sources
            shape = (*a.input_shape[:-1], a.input_shape[-1] + b.input_shape[-1])
        return _Linear(a.layer, "conv", shape, a.output_shape, weights, bias, a.geometry,
                       sources=sources)  # fmt: skip

    def key_decoder(self, layer, key: np.ndarray) -> None:
        """SoftmaxDecode: the N-hot key vote on the host."""
        self.check_open(layer)
        if self.linear is not None or not all(_is_reshape(op) for op in self.ops):
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
        elif self.decoder is None and not all(_is_reshape(op) for op in self.ops):
            names = [op.layer for op in self.ops if not _is_reshape(op)]
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


def _channels_last(layer) -> str | None:
    if getattr(layer, "data_format", "channels_last") != "channels_last":
        return (
            f"data_format={layer.data_format!r}; only channels_last is supported. Build the "
            "model with data_format='channels_last'."
        )
    return None


def _builtin_activation(layer, allowed=("linear", "softmax")) -> str | None:
    name = _activation(layer)
    if name in allowed:
        return None
    if name == "softmax":
        return "a convolution cannot be the softmax readout; add Flatten + Dense."
    return (
        f"has the built-in activation {name!r}. Use activation=None followed by "
        "whetstone.layers.SpikingBRelu() (or SpikingSigmoid()), or 'softmax'/'linear' "
        "on a final readout layer."
    )


def _convertible_conv(layer) -> str | None:
    if getattr(layer, "padding", "valid") not in ("valid", "same", "causal"):
        return f"has padding={layer.padding!r}; only 'valid', 'same' and 'causal' are supported."
    return _channels_last(layer) or _builtin_activation(layer, ("linear",))


def _output_shape(layer, shape) -> tuple[int, ...]:
    return _tuple(layer.compute_output_shape((None, *shape))[1:])


def _bias(layer, n: int) -> np.ndarray:
    return layer.bias.numpy() if layer.use_bias else np.zeros(n, np.float32)


@converter(L.InputLayer, L.Dropout, L.GaussianNoise, L.GaussianDropout, L.AlphaDropout)
@converter(L.SpatialDropout1D, L.SpatialDropout2D, L.SpatialDropout3D)
def _identity(layer, builder: Builder) -> None:
    """Layers that do nothing at inference."""


@converter(L.Dense, convertible=_builtin_activation)
def _dense(layer, builder: Builder) -> None:
    if len(builder.shape) != 1:
        builder.fail(
            layer,
            f"receives a {builder.shape} input (Dense then acts per position); "
            "add a Flatten before it.",
        )
    kernel = layer.kernel.numpy()
    builder.start_linear(
        layer, "dense", kernel, _bias(layer, kernel.shape[1]), (kernel.shape[1],),
        _activation(layer),
    )  # fmt: skip


def _convolution(layer, builder: Builder, kernel: np.ndarray) -> None:
    """Any convolution as one stage; 'causal' padding is zero padding before the input."""
    output_shape = _output_shape(layer, builder.shape)
    dilation = _tuple(layer.dilation_rate)
    padding = layer.padding
    if padding == "causal":  # Conv1D: (k - 1) d zeros before, then 'valid'
        before = (kernel.shape[0] - 1) * dilation[0]
        padded = (builder.shape[0] + before, builder.shape[-1])
        builder.add_op(layer, Pad(layer.name, builder.shape, padded, widths=((before, 0),)))
        padding = "valid"
    builder.start_linear(
        layer, "conv", kernel, _bias(layer, kernel.shape[-1]), output_shape,
        strides=_tuple(layer.strides), padding=padding, dilation=dilation,
    )  # fmt: skip


@converter(L.Conv1D, L.Conv2D, convertible=_convertible_conv)
def _conv(layer, builder: Builder) -> None:
    """A (grouped) convolution: groups become a block-diagonal kernel."""
    _convolution(layer, builder, block_diagonal(layer.kernel.numpy(), layer.groups))


@converter(L.DepthwiseConv1D, L.DepthwiseConv2D, convertible=_convertible_conv)
def _depthwise_conv(layer, builder: Builder) -> None:
    _convolution(layer, builder, depthwise_kernel(layer.kernel.numpy()))


@converter(L.SeparableConv1D, L.SeparableConv2D, convertible=_convertible_conv)
def _separable_conv(layer, builder: Builder) -> None:
    kernel = separable_kernel(layer.depthwise_kernel.numpy(), layer.pointwise_kernel.numpy())
    _convolution(layer, builder, kernel)


@converter(L.MaxPooling1D, L.MaxPooling2D, convertible=_channels_last)
def _max_pool(layer, builder: Builder) -> None:
    stage = Stage(
        layer.name, "pool", builder.shape, _output_shape(layer, builder.shape),
        strides=_tuple(layer.strides), padding=layer.padding, pool_size=_tuple(layer.pool_size),
    )  # fmt: skip
    builder.max_pool(layer, stage)


@converter(L.AveragePooling1D, L.AveragePooling2D, convertible=_channels_last)
def _average_pool(layer, builder: Builder) -> None:
    op = AveragePool(
        layer.name, builder.shape, _output_shape(layer, builder.shape),
        _tuple(layer.pool_size), _tuple(layer.strides), layer.padding,
    )  # fmt: skip
    builder.add_op(layer, op)


@converter(L.GlobalAveragePooling1D, L.GlobalAveragePooling2D, convertible=_channels_last)
def _global_average(layer, builder: Builder) -> None:
    shape = builder.shape
    if layer.keepdims:  # one window over everything: also folds into a convolution
        window = shape[:-1]
        op = AveragePool(layer.name, shape, (*(1,) * len(window), shape[-1]), window, window)
    else:
        op = GlobalAverage(layer.name, shape, _output_shape(layer, shape))
    builder.add_op(layer, op)


def _widths(value, negative: bool = False) -> tuple[tuple[int, int], ...]:
    """Keras's padding/cropping argument as ``((before, after), ...)`` per spatial axis."""
    pairs = (value,) if isinstance(value[0], int) else value
    sign = -1 if negative else 1
    return tuple((sign * int(a), sign * int(b)) for a, b in pairs)


@converter(L.ZeroPadding1D, L.ZeroPadding2D, convertible=_channels_last)
def _zero_padding(layer, builder: Builder) -> None:
    out = _output_shape(layer, builder.shape)
    builder.add_op(layer, Pad(layer.name, builder.shape, out, widths=_widths(layer.padding)))


@converter(L.Cropping1D, L.Cropping2D, convertible=_channels_last)
def _cropping(layer, builder: Builder) -> None:
    widths = _widths(layer.cropping, negative=True)
    out = _output_shape(layer, builder.shape)
    builder.add_op(layer, Pad(layer.name, builder.shape, out, widths=widths))


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
    builder.channel_affine(layer, scale, beta - mean * scale)


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


@converter(L.Add)
def _add(layer, builder: Builder) -> None:
    """Residual sums: branches added before a spiking activation (see :meth:`Builder.add`)."""
    builder.add(layer)


@converter(L.Concatenate)
def _concatenate(layer, builder: Builder) -> None:
    if layer.axis not in (-1, len(builder.shape)):
        builder.fail(layer, f"concatenates along axis {layer.axis}; only the last (channel) "
                     "axis is supported.")  # fmt: skip
    builder.concatenate(layer)


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


def _functional_graph(model: keras.Model) -> list[tuple]:
    """``(layer, input tensors, output tensor)`` of a functional model, in an order where
    every layer comes after those it reads; nested models are flattened when they are
    chains."""
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ConversionError(
            f"model {model.name!r} has {len(model.inputs)} inputs and {len(model.outputs)} "
            "outputs; only single-input, single-output models can be converted."
        )
    order, seen = [], set()

    def visit(tensor) -> None:
        if id(tensor) in seen:
            return
        seen.add(id(tensor))
        layer, node_index, _ = _history(tensor)
        if isinstance(layer, L.InputLayer):
            return
        inputs = keras.tree.flatten(layer._inbound_nodes[node_index].input_tensors)
        for t in inputs:
            visit(t)
        order.append((layer, inputs, tensor))

    visit(model.outputs[0])
    used = {id(layer) for layer, _, _ in order}
    unused = [
        _name(layer)
        for layer in model.layers
        if not isinstance(layer, L.InputLayer) and id(layer) not in used
    ]
    if unused:
        raise ConversionError(
            f"model {model.name!r} branches: {', '.join(unused)} are not on a path from the "
            "input to the output; remove them."
        )
    graph = []
    for layer, inputs, tensor in order:
        if isinstance(layer, keras.Model):
            if len(inputs) != 1:
                raise ConversionError(f"nested model {_name(layer)} has several inputs.")
            chain = layer_chain(layer)
            tensors = [inputs[0], *(object() for _ in chain[:-1]), tensor]
            graph += [(sub, [tensors[i]], tensors[i + 1]) for i, sub in enumerate(chain)]
        else:
            graph.append((layer, inputs, tensor))
    return graph


def layer_graph(model: keras.Model) -> list[tuple]:
    """The model as ``(layer, input tensors, output tensor)``, every layer after those it
    reads; nested chains flattened (tensors are compared by identity)."""
    if isinstance(model, keras.Sequential):
        tensors = [model.inputs[0] if model.inputs else object()]
        graph = []
        for layer in layer_chain(model):
            tensors.append(object())
            graph.append((layer, [tensors[-2]], tensors[-1]))
        return graph
    return _functional_graph(model)


def layer_chain(model: keras.Model) -> list[keras.layers.Layer]:
    """The model's layers from input to output, nested models flattened.

    Example:
        >>> import keras
        >>> inner = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name="d")])
        >>> outer = keras.Sequential([keras.Input((3,)), inner, keras.layers.Flatten(name="f")])
        >>> [layer.name for layer in layer_chain(outer)]
        ['d', 'f']
    """
    if isinstance(model, keras.Sequential):
        layers = model.layers
    else:
        graph = _functional_graph(model)
        merges = [_name(layer) for layer, inputs, _ in graph if len(inputs) != 1]
        if merges:
            raise ConversionError(
                f"model {model.name!r} is not a chain: {', '.join(merges)} merge branches."
            )
        return [layer for layer, _, _ in graph]
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
    unknown = [_name(layer) for layer in chain if find_converter(layer) is None]
    if unknown:
        raise ConversionError(
            f"unsupported layer(s): {', '.join(unknown)}. Supported layer types: "
            f"{', '.join(supported_layers())}. Replace them, or register a converter "
            "with @whetstone.convert.converter(LayerType) (guide: Converting your own layers)."
        )
    refused = [
        f"layer {_name(layer)}: {reason}"
        for layer in chain
        if (reason := find_converter(layer).why_not(layer)) is not None
    ]
    if refused:
        raise ConversionError(" ".join(refused))
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
        model: a Sequential or Functional model (nested chains are flattened); branches
            meet in ``Add`` (before a spiking activation) or ``Concatenate`` (of spikes).
        input_encoding: ``"host"``: the first stage runs on the host and encodes the
            real-valued input into spikes; ``"binary"``: the model was trained on 0/1
            inputs and every stage runs on chip.
        require_sharp: refuse a model that is not fully sharpened (False: convert its
            weights anyway, e.g. to read the stages a weight sharpener quantises).

    Raises:
        ConversionError: the model is not fully sharpened, has unsupported layers or
            activations, branches that meet elsewhere, several inputs, or NaN/Inf weights.
    """
    if input_encoding not in ("host", "binary"):
        raise ConversionError(f"input_encoding must be 'host' or 'binary', got {input_encoding!r}.")
    graph = layer_graph(model)
    _check_layers([layer for layer, _, _ in graph])
    if require_sharp:
        _check_sharp(model)
    input_shape = _tuple(model.inputs[0].shape[1:])
    if any(n is None or n <= 0 for n in input_shape):
        raise ConversionError(
            f"model {model.name!r} has input shape {input_shape}; give keras.Input a fully "
            "defined shape."
        )
    builder = Builder(input_shape)
    start = builder.save()
    tensors = {}  # id(Keras tensor) -> the Branch it holds
    for layer, inputs, output in graph:
        builder.branches = [tensors.get(id(t), start) for t in inputs]
        builder.load(builder.branches[0])
        find_converter(layer)(layer, builder)
        tensors[id(output)] = builder.save()
    if graph:
        builder.load(tensors[id(graph[-1][2])])
    stages, decoder = builder.finish(model.name)
    return SpikingNetwork(input_shape, stages, decoder, input_encoding, _metadata(model))
