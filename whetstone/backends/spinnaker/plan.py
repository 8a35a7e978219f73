"""SpiNNaker plan: the on-chip populations of a SpikingNetwork and how they fill cores.

Connection lists built with NumPy from dense weights, convolution kernels and OR-pool
windows (the same lists on NEST and on sPyNNaker), each population's thresholds, and
the neurons per core that keep every synapse row within sPyNNaker's limit.

Example:
    >>> from whetstone.network import Stage, SpikingNetwork
    >>> w = np.array([[1.0, -1.0], [0.5, 0.25]], "float32")
    >>> net = SpikingNetwork((2,), [Stage("d", "dense", (2,), (2,), w)],
    ...                      input_encoding="binary")
    >>> plan = build_plan(net)
    >>> plan[0].thresholds.tolist(), plan[0].exc[:, 2].tolist(), plan[0].inh[:, 2].tolist()
    ([0.5, 0.5], [1.0, 0.5, 0.25], [1.0])
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from whetstone.geometry import axes, axis_index
from whetstone.network import SpikingNetwork, Stage

__all__ = [
    "MAX_POPULATION",
    "NEURONS_PER_CORE",
    "ROW_LIMIT",
    "Layer",
    "MappingError",
    "build_plan",
    "connections",
    "core_plan",
    "encode",
    "longest_row",
    "piece_starts",
]

ROW_LIMIT = 256
"""sPyNNaker's longest synapse row (``POP_TABLE_MAX_ROW_LENGTH``): the synapses of one
projection from one source neuron onto the neurons of one core."""
NEURONS_PER_CORE = 256
"""sPyNNaker's default, and largest, number of ``IF_curr_delta`` neurons per core."""
MAX_POPULATION = 65_280
"""Most neurons in one PyNN population. sPyNNaker's master population table holds a
presynaptic population's size in 16 bits (at most 65,535); 65,280 = 255 x 256 keeps
every piece on a core boundary. Larger sources and populations (a host-encoded
32 x 32 x 64 convolution has 65,536 neurons) are built as several pieces."""
CHIPS_PER_BOARD = 48  # SpiNN-5


class MappingError(RuntimeError, ValueError):
    """sPyNNaker could not (or would not) partition, place or route the network.

    A ``ValueError`` too: a network too large for the target is bad input (the command
    line exits with status 2, as for Loihi's partition errors).
    """


# ---------------------------------------------------------------- connection lists


def _window_pairs(stage: Stage) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Flat input position, output position and tap of every in-bounds window tap."""
    rank = len(stage.window)
    pre, post, tap, valid = 0, 0, 0, True
    for axis, (n, k, s, d) in enumerate(axes(stage)):
        index = axis_index(n, k, s, d, stage.padding)  # (outputs, k)
        shape = [1] * (2 * rank)
        shape[2 * axis : 2 * axis + 2] = index.shape
        outputs, taps = np.indices(index.shape)
        valid = valid & (index >= 0).reshape(shape) & (index < n).reshape(shape)
        pre = pre * n + index.reshape(shape)
        post = post * index.shape[0] + outputs.reshape(shape)
        tap = tap * k + taps.reshape(shape)
    pre, post, tap, valid = np.broadcast_arrays(pre, post, tap, valid)
    return pre[valid], post[valid], tap[valid]


def connections(stage: Stage) -> np.ndarray:
    """``(m, 3)`` float64 rows ``(pre, post, weight)`` of a stage's non-zero synapses.

    Indices are into the row-major flattened input and output. Built with NumPy from
    the dense matrix, the convolution kernel (Keras's cross-correlation and 'same'
    padding) or the OR-pool window. Rows are sorted by ``pre``, then ``post``:
    sPyNNaker's ``FromListConnector`` groups an unsorted list wrongly when it sizes
    synapse rows, and then refuses rows that are in fact short enough.

    Example:
        >>> pool = Stage("p", "pool", (4, 1), (2, 1), pool_size=(2,), strides=(2,))
        >>> connections(pool).tolist()
        [[0.0, 0.0, 1.0], [1.0, 0.0, 1.0], [2.0, 1.0, 1.0], [3.0, 1.0, 1.0]]
    """
    if stage.kind == "dense":
        pre, post = np.nonzero(stage.weights)
        weight = stage.weights[pre, post]
    else:
        ipos, opos, tap = _window_pairs(stage)
        c_in, c_out = stage.input_shape[-1], stage.output_shape[-1]
        if stage.kind == "pool":
            channel = np.arange(c_in)
            pre = (ipos[:, None] * c_in + channel).ravel()
            post = (opos[:, None] * c_out + channel).ravel()
            weight = np.ones(len(pre), np.float32)
        else:
            kernel = stage.weights.reshape(-1, c_in, c_out)
            ci, co = np.arange(c_in)[:, None], np.arange(c_out)[None, :]
            pre = (ipos[:, None, None] * c_in + ci + 0 * co).ravel()
            post = (opos[:, None, None] * c_out + co + 0 * ci).ravel()
            weight = kernel[tap].ravel()
    keep = np.flatnonzero(weight != 0)
    keep = keep[np.lexsort((post[keep], pre[keep]))]  # sorted: see the docstring
    return np.stack([pre[keep], post[keep], weight[keep]], axis=1).astype(np.float64)


# ---------------------------------------------------------------- the plan


@dataclass
class Layer:
    """One on-chip population: its neurons' thresholds and incoming synapses.

    ``exc`` and ``inh`` are ``(m, 3)`` rows ``(pre, post, weight >= 0)``; ``pre``
    indexes the previous population (the input source for the first one).
    """

    name: str
    size: int
    thresholds: np.ndarray  # float64, theta - b per neuron
    exc: np.ndarray
    inh: np.ndarray
    inputs: tuple = ((-1, 0, 0, 0),)  # (population or -1 for the source, delay, start, width)
    channels: int = 0  # the last axis of the stage's input: rows' pre = position * channels + c
    depth: int = 1  # steps from the source's spikes to this population's

    def edge_rows(self, start: int, width: int) -> tuple[np.ndarray, np.ndarray]:
        """``exc`` and ``inh`` rows of one source (input channels ``start:start + width``),
        ``pre`` indexing that source's own neurons (all rows where it is the only source)."""
        if len(self.inputs) == 1:
            return self.exc, self.inh
        out = []
        for rows in (self.exc, self.inh):
            position, channel = np.divmod(rows[:, 0].astype(np.int64), self.channels)
            mine = (channel >= start) & (channel < start + width)
            rows = rows[mine].copy()
            rows[:, 0] = position[mine] * width + channel[mine] - start
            out.append(rows[np.lexsort((rows[:, 1], rows[:, 0]))])
        return out[0], out[1]

    @property
    def max_summed(self) -> tuple[float, float]:
        """Largest total excitatory and inhibitory input one neuron can receive."""
        return tuple(
            float(np.bincount(rows[:, 1].astype(np.int64), rows[:, 2], self.size).max(initial=0))
            for rows in (self.exc, self.inh)
        )


def build_plan(net: SpikingNetwork) -> list[Layer]:
    """The on-chip populations of ``net`` (stage 0 stays on the host when encoded there)."""
    layers = []
    host = net.host_stage is not None  # stage 0 is then the spike source, not a population
    for index, stage in enumerate(net.stages[1:] if host else net.stages, start=int(host)):
        rows = connections(stage)
        negative = rows[:, 2] < 0
        inh = rows[negative]
        inh[:, 2] *= -1
        bias = stage.full_bias().ravel().astype(np.float64)
        thresholds = np.float64(stage.threshold) - bias
        inputs, start = [], 0
        for edge in net.edges(index):
            width = edge.operator.input_shape[-1]
            inputs.append((max(edge.source - host, -1), edge.delay, start, width))
            start += width
        depth = net.depths[index] - host
        layers.append(Layer(stage.name, stage.num_neurons, thresholds, rows[~negative], inh,
                            tuple(inputs), stage.input_shape[-1], depth))  # fmt: skip
    return layers


def encode(net: SpikingNetwork, x) -> np.ndarray:
    """``(n, width)`` uint8 spikes that images ``x`` send into the first on-chip population.

    The host encoder's spikes (stage 0 on the host), or the 0/1 inputs of a binary network;
    what an export's ``inputs.npz["spikes"]`` holds.

    Example:
        >>> w = np.array([[1.0, -1.0]], "float32")
        >>> net = SpikingNetwork((1,), [Stage("e", "dense", (1,), (2,), w),
        ...     Stage("d", "dense", (2,), (1,), np.ones((2, 1), "float32"))])
        >>> encode(net, np.array([[1.0], [-1.0]])).tolist()
        [[1, 0], [0, 1]]
    """
    return net.encode(x, "spinnaker back end")


def piece_starts(size: int) -> np.ndarray:
    """First neuron of each PyNN population that ``size`` neurons are built as, then ``size``.

    Example:
        >>> piece_starts(10).tolist(), piece_starts(65_536).tolist()
        ([0, 10], [0, 65280, 65536])
    """
    return np.append(np.arange(0, size, MAX_POPULATION), size)


# ---------------------------------------------------------------- mapping report


def longest_row(rows: np.ndarray, neurons_per_core: int) -> int:
    """Longest synapse row of a projection whose target holds ``neurons_per_core`` per core.

    Example:
        >>> rows = np.array([[0, 0, 1.0], [0, 1, 1.0], [0, 2, 1.0], [1, 2, 1.0]])
        >>> longest_row(rows, 4), longest_row(rows, 2), longest_row(rows, 1)
        (3, 2, 1)
    """
    if not len(rows):
        return 0
    piece, neuron = np.divmod(rows[:, 1].astype(np.int64), MAX_POPULATION)  # piece_starts
    core = piece * -(-MAX_POPULATION // neurons_per_core) + neuron // neurons_per_core
    key = rows[:, 0].astype(np.int64) * (int(core.max()) + 1) + core
    return int(np.unique(key, return_counts=True)[1].max())


def core_plan(plan: list[Layer], neurons_per_core: int | None = None) -> list[dict]:
    """Neurons per core, cores and longest synapse row of every on-chip population.

    Each population takes ``neurons_per_core`` (default sPyNNaker's 256) per core, halved
    while a synapse row would exceed :data:`ROW_LIMIT`. A row holds each target neuron
    at most once and the lists are sorted (:func:`connections`), so up to 256 neurons
    per core every row fits; a larger requested count is refused with sPyNNaker's advice.

    Example:
        >>> w = np.ones((3, 600), "float32")
        >>> net = SpikingNetwork((3,), [Stage("d", "dense", (3,), (600,), w)],
        ...                      input_encoding="binary")
        >>> core_plan(build_plan(net))
        [{'population': 'd', 'neurons_per_core': 256, 'cores': 3, 'longest_row': 256}]
    """
    if neurons_per_core is not None and neurons_per_core > NEURONS_PER_CORE:
        raise MappingError(
            f"neurons_per_core={neurons_per_core}: sPyNNaker puts at most "
            f"{NEURONS_PER_CORE} IF_curr_delta neurons on a core; reduce the number of "
            "neurons per core (None chooses it)."
        )
    out = []
    for layer in plan:
        n = min(int(neurons_per_core or NEURONS_PER_CORE), layer.size)
        longest = max(longest_row(layer.exc, n), longest_row(layer.inh, n))
        while longest > ROW_LIMIT and neurons_per_core is None:
            n = max(1, n // 2)
            longest = max(longest_row(layer.exc, n), longest_row(layer.inh, n))
        if longest > ROW_LIMIT:
            raise MappingError(
                f"population {layer.name!r} ({layer.size} neurons) with {n} neurons per core "
                f"has a synapse row of {longest} synapses against sPyNNaker's limit of "
                f"{ROW_LIMIT}: reduce the number of neurons per core (neurons_per_core=N, at "
                f"most {NEURONS_PER_CORE}; None chooses it), or the size of the target "
                "population."
            )
        entry = {"population": layer.name, "neurons_per_core": n}
        cores = sum(math.ceil(piece / n) for piece in np.diff(piece_starts(layer.size)))
        out.append({**entry, "cores": cores, "longest_row": longest})
    return out
