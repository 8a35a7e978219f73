"""SpikingNetwork: the backend-neutral description of a single-spike network.

A network is an ordered list of :class:`Stage` objects, each a layer of memoryless
threshold neurons ``s = H(W s_prev + b - theta)`` (``H(x) = 1`` if ``x >= 0``) fed by
one linear operator: a dense matrix, a convolution kernel (kept as a convolution), or
an OR-pool (sum of binary spikes over a window, threshold 0.5). Stages usually form a
chain (each reads the one before); a stage may also read several earlier stages
(``sources``), their spikes concatenated along the last axis, each edge with an extra
``delay`` in steps so that all of them carry the same input's spikes (a DAG: residual
``Add``, ``Concatenate``; see :attr:`SpikingNetwork.depths`). It also records how
the input is encoded (``"host"``: stage 0 runs on the host as the encoder;
``"binary"``: the inputs are spikes and every stage runs on chip), how the output is
decoded (:class:`KeyDecoder` or :class:`ReadoutDecoder`), and metadata. Shapes are per
sample and channels-last. This module knows no Keras.

Example:
    >>> import numpy as np
    >>> from whetstone.network import Stage, SpikingNetwork, KeyDecoder
    >>> stage = Stage("d", "dense", (2,), (2,), weights=np.eye(2, dtype="float32"),
    ...               bias=np.zeros(2, "float32"))
    >>> net = SpikingNetwork((2,), [stage], KeyDecoder(np.eye(2, dtype="float32")))
    >>> net.num_neurons, net.num_synapses, net.latency
    (2, 4, 1)
"""

from __future__ import annotations

import io
import json
import math
import os
from dataclasses import dataclass, field, replace

import h5py
import numpy as np

from whetstone import files
from whetstone.geometry import axes, axis_index, output_length, preactivation, same_padding

__all__ = [
    "FORMAT_VERSION",
    "INPUT",
    "KINDS",
    "KeyDecoder",
    "NetworkFileError",
    "ReadoutDecoder",
    "SpikingNetwork",
    "Stage",
    "check_finite",
    "load",
    "output_length",
    "same_padding",
]

FORMAT_VERSION = 2
"""Version of the HDF5 layout written by :meth:`SpikingNetwork.save` (2: stage sources and
edge delays; version 1 files, all chains, are still read)."""

FORMAT_NAME = "whetstone.SpikingNetwork"
KINDS = ("dense", "conv", "pool")
ENCODINGS = ("host", "binary")
ACTIVATIONS = ("linear", "softmax")
INPUT = -1
"""The source index of the network input (read by stage 0 only)."""


def check_finite(x: np.ndarray, where: str = "run") -> None:
    """A clear error naming ``where`` if ``x`` holds NaN or Inf (only floats can).

    Example:
        >>> check_finite(np.array([1.0, np.nan]), "demo")
        Traceback (most recent call last):
        ...
        ValueError: demo: x holds NaN or Inf values; pass finite inputs.
    """
    if x.dtype.kind in "fc" and not np.isfinite(x).all():
        raise ValueError(f"{where}: x holds NaN or Inf values; pass finite inputs.")


class NetworkFileError(ValueError):
    """A file that is not a (readable) whetstone network file."""


# ---------------------------------------------------------------- window geometry


def _axis_taps(n: int, k: int, s: int, d: int, padding: str) -> np.ndarray:
    """(outputs, k) boolean: which taps of each output position fall inside the input."""
    index = axis_index(n, k, s, d, padding)
    return (index >= 0) & (index < n)


def _axis_fan_out(n: int, k: int, s: int, d: int, padding: str) -> np.ndarray:
    """(n,) how many output positions of one axis read each input position."""
    index = axis_index(n, k, s, d, padding).ravel()
    return np.bincount(index[(index >= 0) & (index < n)], minlength=n)


# ---------------------------------------------------------------- stages


def _array(value, name: str, where: str) -> np.ndarray:
    array = np.ascontiguousarray(value, dtype=np.float32)
    if not np.isfinite(array).all():
        raise ValueError(f"{where}: {name} holds NaN or Inf values.")
    return array


@dataclass(eq=False)
class Stage:
    """One layer of threshold neurons and the linear operator feeding it.

    Args:
        name: name (usually the Keras layer it came from).
        kind: ``"dense"``, ``"conv"`` or ``"pool"`` (OR-pool of binary spikes).
        input_shape, output_shape: per-sample shapes, channels-last.
        weights: dense ``(n_in, n_out)`` acting on the row-major flattened input;
            conv ``(kh, kw, c_in, c_out)`` or ``(k, c_in, c_out)``; None for pool.
        bias: ``(n_out,)`` / ``(c_out,)``, or of ``output_shape`` when it depends on
            the position (a folded constant seen only by in-bounds taps); None: zero.
        threshold: ``theta``; a neuron fires when ``W s + b - theta >= 0``.
        strides, padding, dilation: window geometry of conv and pool
            (``padding`` is ``"valid"`` or Keras's ``"same"``).
        pool_size: window of a pool stage.
        sources: indices of the earlier stages it reads (:data:`INPUT` for the network
            input); their spikes, each reshaped to ``(*input_shape[:-1], -1)``, are
            concatenated along the last axis. None: the stage before (a chain).
        delays: extra steps on each source's edge (0: the usual one step); None: the
            delays that align all sources (filled in by :class:`SpikingNetwork`).

    Example:
        >>> import numpy as np
        >>> conv = Stage("c", "conv", (5, 5, 1), (5, 5, 2), np.ones((3, 3, 1, 2), "float32"),
        ...              np.zeros(2, "float32"), padding="same")
        >>> conv.num_neurons, conv.num_synapses, conv.fan_in, conv.fan_out
        (50, 338, 9, 18)
    """

    name: str
    kind: str
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    weights: np.ndarray | None = None
    bias: np.ndarray | None = None
    threshold: float = 0.5
    strides: tuple[int, ...] = ()
    padding: str = "valid"
    dilation: tuple[int, ...] = ()
    pool_size: tuple[int, ...] = ()
    sources: tuple[int, ...] | None = None
    delays: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        self.input_shape = tuple(int(n) for n in self.input_shape)
        self.output_shape = tuple(int(n) for n in self.output_shape)
        self.threshold = float(self.threshold)
        where = f"stage {self.name!r}"
        if not math.isfinite(self.threshold):
            raise ValueError(f"{where}: threshold must be finite, got {self.threshold}.")
        if min(self.input_shape + self.output_shape, default=0) < 0:
            raise ValueError(
                f"{where}: shapes must not be negative, got input {self.input_shape} and "
                f"output {self.output_shape}."
            )
        if self.kind not in KINDS:
            raise ValueError(f"{where}: kind must be one of {KINDS}, got {self.kind!r}.")
        if self.weights is not None:
            self.weights = _array(self.weights, "weights", where)
        if self.bias is not None:
            self.bias = _array(self.bias, "bias", where)
        if self.kind != "dense":
            rank = len(self.input_shape) - 1
            self.strides = tuple(int(s) for s in self.strides) or (1,) * rank
            self.dilation = tuple(int(d) for d in self.dilation) or (1,) * rank
            self.pool_size = tuple(int(p) for p in self.pool_size)
            if min(self.strides + self.dilation + self.pool_size, default=1) < 1:
                raise ValueError(
                    f"{where}: strides {self.strides}, dilation {self.dilation} and pool_size "
                    f"{self.pool_size} must be at least 1."
                )
        getattr(self, f"_check_{self.kind}")(where)
        self._check_edges(where)

    # -- validation
    def _check_edges(self, where: str) -> None:
        if self.sources is not None:
            self.sources = tuple(int(i) for i in self.sources)
            if not self.sources or len(set(self.sources)) != len(self.sources):
                raise ValueError(f"{where}: sources must be distinct, got {self.sources}.")
            if self.kind == "pool" and len(self.sources) > 1:
                raise ValueError(
                    f"{where}: an OR-pool reads one source, got {self.sources}; pool each "
                    "branch before they meet."
                )
        if self.delays is not None:
            self.delays = tuple(int(d) for d in self.delays)
            if min(self.delays, default=0) < 0 or (
                self.sources is not None and len(self.delays) != len(self.sources)
            ):
                raise ValueError(
                    f"{where}: delays must be one whole number >= 0 per source, got "
                    f"{self.delays} for sources {self.sources}."
                )

    def _check_dense(self, where: str) -> None:
        expected = (self.in_size, self.num_neurons)
        if self.weights is None or self.weights.shape != expected:
            got = None if self.weights is None else self.weights.shape
            raise ValueError(f"{where}: dense weights must have shape {expected}, got {got}.")
        self._check_bias(where, (self.num_neurons,))

    def _check_conv(self, where: str) -> None:
        rank = len(self.input_shape) - 1
        if self.weights is None or self.weights.ndim != rank + 2:
            raise ValueError(f"{where}: conv weights must be a rank-{rank + 2} kernel.")
        if self.weights.shape[-2] != self.input_shape[-1]:
            raise ValueError(
                f"{where}: kernel has {self.weights.shape[-2]} input channels, "
                f"input has {self.input_shape[-1]}."
            )
        self._check_geometry(where, self.weights.shape[:-2], self.weights.shape[-1])
        self._check_bias(where, (self.weights.shape[-1],))

    def _check_pool(self, where: str) -> None:
        if self.weights is not None or self.bias is not None:
            raise ValueError(f"{where}: a pool stage has no weights or bias.")
        if len(self.pool_size) != len(self.input_shape) - 1:
            raise ValueError(f"{where}: pool_size {self.pool_size} does not fit the input.")
        self._check_geometry(where, self.pool_size, self.input_shape[-1])

    def _check_geometry(self, where: str, window, channels: int) -> None:
        if self.padding not in ("valid", "same"):
            raise ValueError(f"{where}: padding must be 'valid' or 'same', got {self.padding!r}.")
        spatial = tuple(
            output_length(n, k, s, d, self.padding)
            for n, k, s, d in zip(
                self.input_shape[:-1], window, self.strides, self.dilation, strict=True
            )
        )
        if (*spatial, channels) != self.output_shape:
            raise ValueError(
                f"{where}: input {self.input_shape} with window {tuple(window)}, strides "
                f"{self.strides}, dilation {self.dilation}, padding {self.padding!r} gives "
                f"{(*spatial, channels)}, not the stated output {self.output_shape}."
            )

    def _check_bias(self, where: str, per_channel: tuple[int, ...]) -> None:
        if self.bias is not None and self.bias.shape not in (per_channel, self.output_shape):
            raise ValueError(
                f"{where}: bias must have shape {per_channel} or {self.output_shape}, "
                f"got {self.bias.shape}."
            )

    # -- sizes
    @property
    def in_size(self) -> int:
        """Number of input values (neurons of the previous stage)."""
        return math.prod(self.input_shape)

    @property
    def num_neurons(self) -> int:
        """Number of neurons of this stage."""
        return math.prod(self.output_shape)

    @property
    def window(self) -> tuple[int, ...]:
        """Spatial window of a conv (kernel size) or pool stage; () for dense."""
        if self.kind == "conv":
            return tuple(self.weights.shape[:-2])
        return self.pool_size if self.kind == "pool" else ()

    def _synapses_per_pair(self) -> int:
        """Connections per in-bounds tap (all channel pairs for conv, one per channel for pool)."""
        c_in, c_out = self.input_shape[-1], self.output_shape[-1]
        return c_in * c_out if self.kind == "conv" else c_in

    @property
    def num_synapses(self) -> int:
        """Number of connections (in-bounds taps only for conv and pool)."""
        if self.kind == "dense":
            return self.in_size * self.num_neurons
        taps = math.prod(
            int(_axis_taps(n, k, s, d, self.padding).sum()) for n, k, s, d in axes(self)
        )
        return taps * self._synapses_per_pair()

    @property
    def fan_in(self) -> int:
        """Largest number of inputs of one neuron."""
        if self.kind == "dense":
            return self.in_size
        taps = math.prod(
            int(_axis_taps(n, k, s, d, self.padding).sum(axis=1).max(initial=0))
            for n, k, s, d in axes(self)
        )
        return taps * (self.input_shape[-1] if self.kind == "conv" else 1)

    def fan_out_map(self) -> np.ndarray:
        """How many neurons of this stage each input value drives (shape ``input_shape``).

        Example:
            >>> pool = Stage("p", "pool", (4, 1), (2, 1), pool_size=(2,), strides=(2,))
            >>> pool.fan_out_map().ravel().tolist()
            [1, 1, 1, 1]
        """
        if self.kind == "dense":
            return np.full(self.input_shape, self.num_neurons, dtype=np.int64)
        counts = np.ones((), dtype=np.int64)
        for n, k, s, d in axes(self):
            counts = np.multiply.outer(counts, _axis_fan_out(n, k, s, d, self.padding))
        per_channel = self.output_shape[-1] if self.kind == "conv" else 1
        return np.repeat(counts[..., None] * per_channel, self.input_shape[-1], axis=-1)

    @property
    def fan_out(self) -> int:
        """Largest number of neurons of this stage driven by one input value."""
        return int(self.fan_out_map().max(initial=0))

    def dense_matrix(self) -> np.ndarray:
        """The ``(n_in, n_out)`` weight matrix of a dense stage (conv stays a convolution)."""
        if self.kind != "dense":
            raise ValueError(
                f"stage {self.name!r} is a {self.kind} stage; only dense stages have a matrix "
                "(convolutions are kept as kernels: use .weights and the window geometry)."
            )
        return self.weights

    def part(self, start: int, stop: int) -> Stage:
        """The operator on input channels ``start:stop`` alone (no bias): one source's edge.

        Example:
            >>> w = np.arange(6, dtype="float32").reshape(3, 2)
            >>> Stage("d", "dense", (3,), (2,), w).part(1, 3).weights.tolist()
            [[2.0, 3.0], [4.0, 5.0]]
        """
        if self.kind == "pool":
            return self
        shape = (*self.input_shape[:-1], stop - start)
        if self.kind == "dense":
            rows = self.weights.reshape(-1, self.input_shape[-1], self.num_neurons)
            weights = rows[:, start:stop].reshape(-1, self.num_neurons)
        else:
            weights = self.weights[..., start:stop, :]
        return Stage(f"{self.name}[{start}:{stop}]", self.kind, shape, self.output_shape,
                     weights, None, self.threshold, self.strides, self.padding, self.dilation,
                     sources=(0,))  # fmt: skip

    def full_bias(self) -> np.ndarray:
        """The bias broadcast to ``output_shape`` (zeros where there is none)."""
        bias = np.zeros(self.output_shape[-1:], np.float32) if self.bias is None else self.bias
        if self.kind == "dense":
            return bias.reshape(self.output_shape)
        return np.broadcast_to(bias, self.output_shape)

    def __eq__(self, other) -> bool:
        if not isinstance(other, Stage):
            return NotImplemented
        fields = ("name", "kind", "input_shape", "output_shape", "threshold", "strides")
        fields += ("padding", "dilation", "pool_size", "sources", "delays")
        return all(getattr(self, f) == getattr(other, f) for f in fields) and all(
            _same_array(getattr(self, f), getattr(other, f)) for f in ("weights", "bias")
        )


def _same_array(a, b) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b)


# ---------------------------------------------------------------- decoders


@dataclass(eq=False)
class KeyDecoder:
    """N-hot key vote: class ``argmax((2s - 1) @ (2K - 1)^T)`` (ties: lowest class).

    Example:
        >>> KeyDecoder([[1, 0], [0, 1]]).decode(np.array([[0, 1]])).tolist()
        [1]
    """

    key: np.ndarray

    def __post_init__(self) -> None:
        self.key = np.ascontiguousarray(self.key, dtype=np.float32)
        if self.key.ndim != 2 or not np.isin(self.key, (0, 1)).all():
            raise ValueError(
                f"KeyDecoder: key must be a 2-D 0/1 array, got shape {self.key.shape}."
            )

    @property
    def num_inputs(self) -> int:
        return self.key.shape[1]

    def scores(self, spikes: np.ndarray) -> np.ndarray:
        """Each class's vote (the logits of SoftmaxDecode)."""
        from whetstone.encoding import vote

        return vote(spikes, self.key)

    def decode(self, spikes: np.ndarray) -> np.ndarray:
        """Predicted class of each row of output spikes."""
        from whetstone.encoding import decode_from_key

        return decode_from_key(spikes, self.key)

    def __eq__(self, other) -> bool:
        return isinstance(other, KeyDecoder) and _same_array(self.key, other.key)


@dataclass(eq=False)
class ReadoutDecoder:
    """Non-spiking readout on the host: ``activation(s @ weights + bias)``; class = argmax.

    Example:
        >>> r = ReadoutDecoder(np.array([[1.0, 0.0], [0.0, 2.0]]), np.zeros(2), "softmax")
        >>> r.decode(np.array([[1, 1]])).tolist()
        [1]
    """

    weights: np.ndarray
    bias: np.ndarray
    activation: str = "linear"

    def __post_init__(self) -> None:
        self.weights = _array(self.weights, "weights", "ReadoutDecoder")
        self.bias = _array(self.bias, "bias", "ReadoutDecoder")
        if self.weights.ndim != 2 or self.bias.shape != self.weights.shape[1:]:
            raise ValueError(
                f"ReadoutDecoder: weights must be (n_in, n_out) and bias (n_out,), got "
                f"{self.weights.shape} and {self.bias.shape}."
            )
        if self.activation not in ACTIVATIONS:
            raise ValueError(
                f"ReadoutDecoder: activation must be one of {ACTIVATIONS}, got {self.activation!r}."
            )

    @property
    def num_inputs(self) -> int:
        return self.weights.shape[0]

    def scores(self, spikes: np.ndarray) -> np.ndarray:
        """The readout's logits (before the activation), float32."""
        spikes = np.asarray(spikes, np.float32).reshape(len(spikes), -1)
        return spikes @ self.weights + self.bias

    def outputs(self, spikes: np.ndarray) -> np.ndarray:
        """The readout's output (the activation applied), like the Keras layer's."""
        logits = self.scores(spikes)
        if self.activation == "linear":
            return logits
        e = np.exp(logits - logits.max(axis=-1, keepdims=True))
        return e / e.sum(axis=-1, keepdims=True)

    def decode(self, spikes: np.ndarray) -> np.ndarray:
        """Predicted class: the argmax of the logits."""
        return self.scores(spikes).argmax(axis=-1)

    def __eq__(self, other) -> bool:
        return (
            isinstance(other, ReadoutDecoder)
            and self.activation == other.activation
            and _same_array(self.weights, other.weights)
            and _same_array(self.bias, other.bias)
        )


Decoder = KeyDecoder | ReadoutDecoder


@dataclass(frozen=True)
class Edge:
    """An edge into a stage: its ``source`` (a stage index or :data:`INPUT`), the extra
    ``delay`` in steps, and the ``operator``: a stage holding the weights on that
    source's channels (:meth:`Stage.part`; the stage itself when it has one source)."""

    source: int
    delay: int
    operator: Stage


# ---------------------------------------------------------------- network


@dataclass(eq=False)
class SpikingNetwork:
    """Stages, input encoding, output decoder and metadata of a single-spike network.

    Args:
        input_shape: shape of one input sample (e.g. ``(28, 28)``).
        stages: the stages in order, each after the stages it reads (its ``sources``;
            by default the one before, the first one the input); a stage's input is its
            sources' spikes, concatenated along the last axis. Stages with ``sources``
            or ``delays`` left None get the defaults (copies; the caller's stay as given).
        decoder: :class:`KeyDecoder`, :class:`ReadoutDecoder`, or None (the output
            spikes are the output; class = first spiking neuron).
        input_encoding: ``"host"`` (stage 0 is the host-side encoder) or ``"binary"``.
        metadata: free-form strings (source model, versions, creation time).

    Attributes:
        depths: per stage, the step at which it fires for an input presented at step 0
            (``1 + delay`` after each of its sources; the input is at step 0).

    Example:
        >>> import numpy as np, tempfile, os
        >>> stage = Stage("d", "dense", (3,), (2,), np.ones((3, 2), "float32"))
        >>> net = SpikingNetwork((3,), [stage], input_encoding="binary")
        >>> path = os.path.join(tempfile.mkdtemp(), "net.h5")
        >>> net.save(path); SpikingNetwork.load(path) == net
        True
    """

    input_shape: tuple[int, ...]
    stages: list[Stage]
    decoder: Decoder | None = None
    input_encoding: str = "host"
    metadata: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.input_shape = tuple(int(n) for n in self.input_shape)
        self.stages = list(self.stages)
        self.metadata = {str(k): str(v) for k, v in self.metadata.items()}
        if self.input_encoding not in ENCODINGS:
            raise ValueError(
                f"input_encoding must be one of {ENCODINGS}, got {self.input_encoding!r}."
            )
        if not self.stages:
            raise ValueError("a SpikingNetwork needs at least one stage.")
        for index, stage in enumerate(self.stages):
            if stage.sources is None:  # a copy: the caller's stage may sit in other networks
                stage = self.stages[index] = replace(
                    stage, sources=(index - 1 if index else INPUT,)
                )
            self._link(index, stage)
        self.depths = self._depths()
        self._check_used()
        size = self.stages[-1].num_neurons
        if self.decoder is not None and self.decoder.num_inputs != size:
            raise ValueError(
                f"the decoder reads {self.decoder.num_inputs} spikes but the last stage "
                f"{self.stages[-1].name!r} has {size} neurons."
            )

    def _link(self, index: int, stage: Stage) -> None:
        """Default sources (the stage before) and check that the sources' shapes fit."""
        where = f"stage {stage.name!r}"
        if (index == 0 and stage.sources != (INPUT,)) or (index and INPUT in stage.sources):
            raise ValueError(
                f"{where}: only stage 0 reads the network input, and it reads nothing else; "
                f"got sources {stage.sources} for stage {index}."
            )
        if max(stage.sources) >= index:
            raise ValueError(
                f"{where}: sources {stage.sources} must be earlier stages (before {index}); "
                "list the stages in an order where each comes after those it reads."
            )
        widths = [self.source_width(stage, i) for i in stage.sources]
        if None in widths or sum(widths) != stage.input_shape[-1]:
            shapes = [self.source_shape(i) for i in stage.sources]
            before = "the stage before gives" if len(shapes) == 1 else "its sources give"
            raise ValueError(
                f"{where} expects {stage.in_size} inputs {stage.input_shape} but {before} "
                f"{', '.join(map(str, shapes))}: sources are concatenated along the last axis "
                f"after reshaping to {(*stage.input_shape[:-1], -1)}."
            )

    def source_shape(self, source: int) -> tuple[int, ...]:
        """Output shape of stage ``source``, or the input shape for :data:`INPUT`."""
        return self.input_shape if source == INPUT else self.stages[source].output_shape

    def source_width(self, stage: Stage, source: int) -> int | None:
        """Channels that ``source`` adds to ``stage``'s input, None if its size does not fit."""
        lead = math.prod(stage.input_shape[:-1])
        size = math.prod(self.source_shape(source))
        if stage.kind == "pool" or len(stage.sources) == 1:
            return stage.input_shape[-1] if size == stage.in_size else None
        return size // lead if lead and size % lead == 0 else None

    def _depths(self) -> list[int]:
        """Step at which each stage fires for an input presented at step 0; fills delays."""
        depths: list[int] = []
        for index, stage in enumerate(self.stages):
            arrive = [depths[i] + 1 if i != INPUT else 1 for i in stage.sources]
            if stage.delays is None:
                aligned = tuple(max(arrive) - a for a in arrive)
                stage = self.stages[index] = replace(stage, delays=aligned)
            elif len(stage.delays) != len(stage.sources):
                raise ValueError(
                    f"stage {stage.name!r}: {len(stage.delays)} delays for "
                    f"{len(stage.sources)} sources {stage.sources}."
                )
            steps = {a + d for a, d in zip(arrive, stage.delays, strict=True)}
            if len(steps) != 1 or (stage.sources == (INPUT,) and stage.delays != (0,)):
                raise ValueError(
                    f"stage {stage.name!r}: its sources {stage.sources} with delays "
                    f"{stage.delays} arrive at steps {sorted(steps)}, so it would mix inputs; "
                    f"use delays {tuple(max(arrive) - a for a in arrive)} (or delays=None), "
                    "and no delay on the network input."
                )
            depths.append(steps.pop())
        return depths

    def _check_used(self) -> None:
        read = {i for stage in self.stages for i in stage.sources}
        unused = [s.name for i, s in enumerate(self.stages[:-1]) if i not in read]
        if unused:
            raise ValueError(
                f"stages {unused} are read by no other stage (only the last stage is the "
                "output); remove them or connect them."
            )

    def edges(self, index: int) -> list[Edge]:
        """The edges into stage ``index``: source, delay and the operator on its channels.

        Example:
            >>> a = Stage("a", "dense", (1,), (2,), np.ones((1, 2), "float32"))
            >>> b = Stage("b", "dense", (2,), (1,), np.ones((2, 1), "float32"))
            >>> c = Stage("c", "dense", (3,), (1,), np.ones((3, 1), "float32"), sources=(0, 1))
            >>> net = SpikingNetwork((1,), [a, b, c])
            >>> [(e.source, e.delay, e.operator.input_shape) for e in net.edges(2)]
            [(0, 1, (2,)), (1, 0, (1,))]
        """
        stage = self.stages[index]
        if len(stage.sources) == 1:
            return [Edge(stage.sources[0], stage.delays[0], stage)]
        edges, start = [], 0
        for source, delay in zip(stage.sources, stage.delays, strict=True):
            stop = start + self.source_width(stage, source)
            edges.append(Edge(source, delay, stage.part(start, stop)))
            start = stop
        return edges

    def stage_input(self, index: int, x: np.ndarray, outputs: list) -> np.ndarray:
        """Stage ``index``'s input for a batch: its sources' spikes (``outputs[i]``, or the
        input ``x``) reshaped and concatenated along the last axis, as the stage reads them.

        Example:
            >>> a = Stage("a", "dense", (1,), (2,), np.ones((1, 2), "float32"))
            >>> c = Stage("c", "dense", (3,), (1,), np.ones((3, 1), "float32"), sources=(0, 1))
            >>> b = Stage("b", "dense", (2,), (1,), np.ones((2, 1), "float32"))
            >>> net = SpikingNetwork((1,), [a, b, c])
            >>> net.stage_input(2, None, [np.array([[1, 0]]), np.array([[1]])]).tolist()
            [[1, 0, 1]]
        """
        stage = self.stages[index]
        parts = [x if i == INPUT else outputs[i] for i in stage.sources]
        n = len(parts[0])
        if len(parts) == 1:
            return parts[0].reshape(n, *stage.input_shape)
        lead = stage.input_shape[:-1]
        return np.concatenate([p.reshape(n, *lead, -1) for p in parts], axis=-1)

    def last_reads(self) -> list[int]:
        """For each stage, the index of the last stage that reads it (the output: its own)."""
        last = list(range(len(self.stages)))
        for index, stage in enumerate(self.stages):
            for i in stage.sources:
                if i != INPUT:
                    last[i] = max(last[i], index)
        return last

    @property
    def is_chain(self) -> bool:
        """Whether every stage reads only the stage before, with no extra delay."""
        return all(
            s.sources == (i - 1 if i else INPUT,) and s.delays == (0,)
            for i, s in enumerate(self.stages)
        )

    @property
    def output_shape(self) -> tuple[int, ...]:
        return self.stages[-1].output_shape

    @property
    def num_neurons(self) -> int:
        return sum(stage.num_neurons for stage in self.stages)

    @property
    def num_synapses(self) -> int:
        return sum(stage.num_synapses for stage in self.stages)

    @property
    def latency(self) -> int:
        """Steps from an input to its output spikes: the longest path (one per stage of a chain)."""
        return self.depths[-1]

    # -- what every back end asks: host encoder, stages on chip, input, output

    @property
    def host_stage(self) -> Stage | None:
        """The stage that runs on the host as the encoder (``input_encoding="host"``), else None."""
        return self.stages[0] if self.input_encoding == "host" else None

    @property
    def chip_stages(self) -> list[Stage]:
        """The stages that run on the chip: all but the host encoder."""
        return self.stages[1:] if self.input_encoding == "host" else list(self.stages)

    def on_chip(self, where: str) -> list[Stage]:
        """:attr:`chip_stages`, or a clear error naming ``where`` when there are none.

        Example:
            >>> stage = Stage("e", "dense", (1,), (2,), np.ones((1, 2), "float32"))
            >>> SpikingNetwork((1,), [stage]).on_chip("loihi export")
            Traceback (most recent call last):
            ValueError: loihi export: this network's one stage is the host encoder ...
        """
        if not self.chip_stages:
            raise ValueError(
                f"{where}: this network's one stage is the host encoder "
                "(input_encoding='host'), so nothing would run on the chip; use a network with "
                "more stages, or one converted with input_encoding='binary'."
            )
        return self.chip_stages

    @property
    def encoded_size(self) -> int:
        """Spikes per input that enter the chip: the host encoder's neurons, or the inputs."""
        return self.stages[0].num_neurons if self.host_stage else math.prod(self.input_shape)

    def check_input(self, x, where: str = "run", finite: bool = True) -> np.ndarray:
        """``x`` as a float32 batch of ``input_shape``, or a clear error naming ``where``.

        Every back end and the simulator check inputs with this, so they all accept the
        same data: a non-empty batch of finite values (0/1 for a binary network).
        ``finite=False`` leaves a host-encoded batch's finiteness to the caller, who
        checks each part with :func:`check_finite` before it uses it (the simulator's
        workers, each on its own chunk).

        Example:
            >>> stage = Stage("d", "dense", (2,), (1,), np.ones((2, 1), "float32"))
            >>> SpikingNetwork((2,), [stage]).check_input([[1, 2]]).dtype
            dtype('float32')
        """
        x = np.asarray(x)
        size = math.prod(self.input_shape)
        if x.ndim >= 1 and len(x) == 0:
            raise ValueError(
                f"{where}: x is an empty batch (shape {x.shape}); pass at least one input."
            )
        if x.ndim < 2 or x[0].size != size:
            raise ValueError(
                f"{where}: x must be a batch of inputs of shape (n, *{self.input_shape}), "
                f"got shape {x.shape}; reshape the inputs to the network's input shape."
            )
        if x.dtype == np.uint8 and x.max() > 1:
            raise ValueError(
                f"{where}: x is uint8 with values up to {x.max()}, raw pixels it seems; scale "
                "them as in training (e.g. x / 255) and pass floats."
            )
        x = x.reshape(len(x), *self.input_shape).astype(np.float32, copy=False)
        if finite or self.input_encoding == "binary":
            check_finite(x, where)
        if self.input_encoding == "binary" and not np.isin(x, (0.0, 1.0)).all():
            raise ValueError(
                f"{where}: this network was converted with input_encoding='binary' but x holds "
                "values other than 0 and 1; binarize the inputs (as in training) or convert "
                "the model with input_encoding='host'."
            )
        return x

    def encode(self, x, where: str = "encode") -> np.ndarray:
        """``(n, encoded_size)`` uint8 spikes that inputs ``x`` send into the chip.

        The host encoder's spikes ``H(W x + b - theta)`` in the reference's float32
        arithmetic, or the 0/1 inputs of a binary network.

        Example:
            >>> w = np.array([[1.0, -1.0]], "float32")
            >>> net = SpikingNetwork((1,), [Stage("e", "dense", (1,), (2,), w),
            ...     Stage("d", "dense", (2,), (1,), np.ones((2, 1), "float32"))])
            >>> net.encode(np.array([[1.0], [-1.0]])).tolist()
            [[1, 0], [0, 1]]
        """
        x = self.check_input(x, where)
        if self.host_stage is None:
            return x.reshape(len(x), -1).astype(np.uint8)
        stage = self.host_stage
        pre = preactivation(stage, x) - np.float32(stage.threshold)
        return (pre >= 0).reshape(len(x), -1).astype(np.uint8)

    def decode(self, outputs) -> np.ndarray:
        """Classes (int64) of output spikes ``(n, *output_shape)`` or ``(n, width)``.

        The decoder's, or the first spiking output neuron when there is none.

        Example:
            >>> stage = Stage("d", "dense", (1,), (3,), np.ones((1, 3), "float32"))
            >>> SpikingNetwork((1,), [stage]).decode(np.array([[0, 1, 1], [0, 0, 0]])).tolist()
            [1, 0]
        """
        flat = np.asarray(outputs).reshape(len(outputs), -1)
        if self.decoder is None:
            return flat.argmax(axis=1).astype(np.int64)
        return np.asarray(self.decoder.decode(flat), np.int64)

    def summary(self) -> str:
        """A table: per stage kind, shapes, neurons, synapses, fan-in, fan-out; totals.

        Example:
            >>> stage = Stage("d", "dense", (3,), (2,), np.ones((3, 2), "float32"))
            >>> print(SpikingNetwork((3,), [stage]).summary())
            stage  kind   input  output  neurons  synapses  fan-in  fan-out
            ---------------------------------------------------------------
            d      dense  (3,)   (2,)    2        6         3       2
            total                        2        6
            input (3,) encoded on 'host'; decoder none
        """
        head = ("stage", "kind", "input", "output", "neurons", "synapses", "fan-in", "fan-out")
        rows = [
            (s.name, s.kind, str(s.input_shape), str(s.output_shape), s.num_neurons,
             s.num_synapses, s.fan_in, s.fan_out)
            for s in self.stages
        ]  # fmt: skip
        rows.append(("total", "", "", "", self.num_neurons, self.num_synapses, "", ""))
        widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]
        lines = [
            "  ".join(str(v).ljust(w) for v, w in zip(row, widths, strict=True)).rstrip()
            for row in [head, *rows]
        ]
        lines.insert(1, "-" * len(lines[0]))
        decoder = type(self.decoder).__name__ if self.decoder is not None else "none"
        lines.append(
            f"input {self.input_shape} encoded on {self.input_encoding!r}; decoder {decoder}"
        )
        return "\n".join(lines)

    def __eq__(self, other) -> bool:
        if not isinstance(other, SpikingNetwork):
            return NotImplemented
        return (
            self.input_shape == other.input_shape
            and self.input_encoding == other.input_encoding
            and self.metadata == other.metadata
            and self.stages == other.stages
            and self.decoder == other.decoder
        )

    def save(self, path: str | os.PathLike, force: bool = False) -> None:
        """Write an HDF5 file atomically (see :mod:`whetstone.files`).

        An existing file is replaced only with ``force=True``.
        """
        files.check_target(path, force)
        buffer = io.BytesIO()
        with h5py.File(buffer, "w") as f:
            _write(self, f)
        files.write_bytes(path, buffer.getvalue(), force)

    @classmethod
    def load(cls, path: str | os.PathLike) -> SpikingNetwork:
        """Read a file written by :meth:`save`; refuses newer or damaged files."""
        return load(path)


# ---------------------------------------------------------------- HDF5 layout

_STAGE_ATTRS = ("kind", "input_shape", "output_shape", "threshold", "strides", "padding")
_STAGE_ATTRS += ("dilation", "pool_size")
_EDGE_ATTRS = ("sources", "delays")  # format version 2; version 1 files are chains


def _write(net: SpikingNetwork, f: h5py.File) -> None:
    f.attrs["format"] = FORMAT_NAME
    f.attrs["format_version"] = FORMAT_VERSION
    f.attrs["input_shape"] = np.asarray(net.input_shape, np.int64)
    f.attrs["input_encoding"] = net.input_encoding
    f.attrs["metadata"] = json.dumps(net.metadata, sort_keys=True)
    f.attrs["num_stages"] = len(net.stages)
    for i, stage in enumerate(net.stages):
        g = f.create_group(f"stages/{i:04d}")
        g.attrs["name"] = stage.name
        for attr in _STAGE_ATTRS + _EDGE_ATTRS:
            value = getattr(stage, attr)
            g.attrs[attr] = np.asarray(value, np.int64) if isinstance(value, tuple) else value
        for name in ("weights", "bias"):
            if getattr(stage, name) is not None:
                g.create_dataset(name, data=getattr(stage, name))
    if net.decoder is not None:
        g = f.create_group("decoder")
        g.attrs["type"] = type(net.decoder).__name__
        if isinstance(net.decoder, KeyDecoder):
            g.create_dataset("key", data=net.decoder.key)
        else:
            g.attrs["activation"] = net.decoder.activation
            g.create_dataset("weights", data=net.decoder.weights)
            g.create_dataset("bias", data=net.decoder.bias)


def _attr(node, name: str):
    value = node.attrs[name]
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.ndarray):
        return tuple(int(v) for v in value)
    return value.item() if isinstance(value, np.generic) else value


MAX_VALUES = 1 << 25
"""Largest size a network file may declare for one shape or window (values, not bytes)."""


def _shape(node, name: str) -> tuple[int, ...]:
    """A declared shape or window, checked before anything is allocated from it."""
    shape = _attr(node, name)
    shape = (shape,) if isinstance(shape, int) else tuple(shape)
    if any(n < 0 for n in shape) or math.prod(shape) > MAX_VALUES:
        raise ValueError(
            f"{node.name}: declared {name} {shape} is negative or larger than {MAX_VALUES} values"
        )
    return shape


def _dataset(node, name: str) -> np.ndarray:
    """A dataset read only when the file really stores all of its bytes."""
    data = node[name]
    stored = data.id.get_storage_size()
    if data.size > MAX_VALUES or stored < data.nbytes:
        raise ValueError(
            f"{data.name}: declares shape {data.shape} ({data.nbytes} bytes) but the file "
            f"stores {stored} bytes"
        )
    return data[()]


def _read(f: h5py.File) -> SpikingNetwork:
    stages = []
    for i in range(int(_attr(f, "num_stages"))):
        g = f[f"stages/{i:04d}"]
        kwargs = {attr: _attr(g, attr) for attr in _STAGE_ATTRS}
        for attr in ("input_shape", "output_shape", "strides", "dilation", "pool_size"):
            kwargs[attr] = _shape(g, attr)
        for attr in _EDGE_ATTRS:
            if attr in g.attrs:
                kwargs[attr] = tuple(np.atleast_1d(g.attrs[attr][()]).astype(int).tolist())
        arrays = {name: _dataset(g, name) for name in ("weights", "bias") if name in g}
        stages.append(Stage(_attr(g, "name"), **kwargs, **arrays))
    decoder = None
    if "decoder" in f:
        g = f["decoder"]
        kind = _attr(g, "type")
        if kind == "KeyDecoder":
            decoder = KeyDecoder(_dataset(g, "key"))
        elif kind == "ReadoutDecoder":
            weights, bias = _dataset(g, "weights"), _dataset(g, "bias")
            decoder = ReadoutDecoder(weights, bias, _attr(g, "activation"))
        else:
            raise ValueError(f"unknown decoder type {kind!r}")
    return SpikingNetwork(
        _shape(f, "input_shape"),
        stages,
        decoder,
        _attr(f, "input_encoding"),
        json.loads(_attr(f, "metadata")),
    )


def load(path: str | os.PathLike) -> SpikingNetwork:
    """Read a SpikingNetwork written by :meth:`SpikingNetwork.save`.

    Raises:
        NetworkFileError: the file is missing, damaged, not a whetstone network
            file, or was written by a newer whetstone.
    """
    try:
        with h5py.File(path, "r") as f:
            if f.attrs.get("format") in (FORMAT_NAME, FORMAT_NAME.encode()):
                version = int(f.attrs["format_version"])
                if version < 1:
                    raise NetworkFileError(
                        f"{path}: network format version {version} is not valid (versions "
                        "start at 1); the file is damaged: save the network again."
                    )
                if version > FORMAT_VERSION:
                    raise NetworkFileError(
                        f"{path} was written by a newer whetstone (network format version "
                        f"{version}; this one reads up to {FORMAT_VERSION}); upgrade whetstone."
                    )
            else:
                raise ValueError(f"no '{FORMAT_NAME}' format attribute")
            return _read(f)
    except NetworkFileError:
        raise
    except (OSError, KeyError, ValueError, TypeError, OverflowError, MemoryError) as error:
        raise NetworkFileError(f"not a whetstone network file: {path}: {error}") from error
