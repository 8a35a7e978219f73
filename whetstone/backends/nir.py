"""NIR back end: a SpikingNetwork as a Neuromorphic Intermediate Representation graph.

`NIR <https://neuroir.org>`_ (``pip install 'whetstone-snn[nir]'``) is the exchange format
read by Lava / Loihi 2, SpiNNaker2, Speck, Xylo, snnTorch, Norse, Sinabs and others.
:func:`export` writes a ``.nir`` file, :func:`load` reads one back into a
``SpikingNetwork``, :func:`to_graph` / :func:`from_graph` do the same in memory.

The graph is the whole network from pixels to class scores, one chain::

    input -> [flatten] -> linear op -> neuron -> ... -> [flatten] -> decoder -> output

* **Linear ops.** Dense stages become ``Affine`` (``Linear`` when the stage has no
  bias) with weight ``(out, in)``; conv stages ``Conv2d`` / ``Conv1d`` with weight
  ``(out, in, *window)``; OR-pools ``SumPool2d``. A pool that ``SumPool2d`` cannot
  express (1-D, dilated, or asymmetric 'same' padding) becomes a convolution
  whose kernel is one per tap from each channel to itself (``nir``'s type checks
  do not know ``groups``; groups are read, though).
* **Neurons.** Each stage's neurons are ``LIF`` nodes with ``tau = dt``, ``r = 1``,
  ``v_leak = 0``, ``v_reset = 0``: a forward-Euler reader stepping at ``dt`` computes
  ``v = v_leak + r I`` every step, so the neurons are memoryless, as the contract
  requires (``tau`` and ``r`` are float64 so that snnTorch's ``beta = 1 - dt/tau``
  is exactly 0). LIF is the most widely read NIR neuron; ``IF`` keeps its voltage
  between steps (snnTorch even reads it as a leaky neuron with beta 0.9) and
  ``Threshold`` is rarely read (not by snnTorch), so neither is written
  (``Threshold`` is imported). A bias that depends on the position (``bias`` of
  ``output_shape``) goes into ``v_leak``; any other stays in the linear op's bias.
* **Ties.** NIR fires on ``v > v_threshold``; whetstone on ``v >= theta``. The file
  holds ``v_threshold = nextafter(float32(theta), -inf)``, the float32 just below
  ``theta``; a reader computing ``v`` in float32 then fires exactly when
  ``v >= theta``. A float64 reader also fires for ``theta - 1 ulp <= v < theta``
  (one float32 ulp, 6e-8 at 0.5): those neurons are ties (within 1e-6 of the
  threshold), which the contract counts rather than forbids; so is ``theta = 0``
  on a reader that flushes denormals. :func:`load` restores
  ``theta = nextafter(v_threshold, +inf)`` exactly.
* **Layout.** NIR is channels-first: a stage of shape ``(H, W, C)`` is a NIR tensor
  ``(C, H, W)``; kernels ``(kh, kw, in, out)`` become ``(out, in, kh, kw)``. A dense
  stage after a convolution reads through ``Flatten(start_dim=0)`` (per-sample
  dims, NIR's convention) of the ``(C, H, W)`` tensor, so its weight columns are
  permuted from whetstone's row-major ``(H, W, C)`` order to ``(C, H, W)`` order.
* **Padding and kernel shape.** NIR pads symmetrically, and nir 1.0 infers a
  ``Conv2d``'s output width from the kernel height, so kernels are written square
  with symmetric padding; zero taps added before or after make that exact (Keras
  'same' with a 2x2 kernel, one row and column of padding after, is written as a
  3x3 kernel with a leading zero row and column, padding 1). Where no such layout
  exists (e.g. a 1x2 kernel at stride 1) export refuses and says why. Import strips
  zero taps back to Keras 'valid' / 'same'. Readers that ignore ``SumPool2d``
  padding (nirtorch, snnTorch) differ on 'same' OR-pools; 'valid' pools are exact.
* **Input.** The encoder stage (``input_encoding == "host"``) is an ordinary stage
  of the graph, so the graph reads real pixels: ``(C, H, W)`` when the first stage
  is a convolution or pool (see :func:`nir_input`), else the flat ``(n,)`` input.
* **Decoder.** ``KeyDecoder``: an ``Affine`` with weight ``2 (2K - 1)`` and bias
  ``-sum(2K - 1)``, whose output is the key vote ``(2s - 1)(2K - 1)^T`` exactly.
  ``ReadoutDecoder``: an ``Affine`` with its weights (the softmax is not in the
  graph; the argmax is the same). No decoder: the output is the last spikes.
* **Metadata.** The graph's metadata holds the source, versions, ``dt``, the
  neuron and threshold conventions, and a ``whetstone`` JSON string with what NIR
  does not say (stage names, the decoder type, input shape and encoding, the
  network's metadata); :func:`load` uses it to restore the very same
  ``SpikingNetwork`` and reads graphs without it (from other tools) too.

Timing: every node of a NIR graph acts within the step, so a reader yields the
output of an input in the same step; stepping it for ``net.latency`` steps with
the input held gives the same final output. :meth:`NIRBackend.run` runs the graph
through :func:`from_graph` and the reference simulator (after an in-memory
``nir.write`` / ``nir.read``); ``benchmarks/backend_nir.py`` checks an exported
file with snnTorch's NIR reader.

Example:
    >>> import numpy as np, os, tempfile
    >>> from whetstone.network import Stage, SpikingNetwork, KeyDecoder
    >>> stage = Stage("d", "dense", (3,), (2,), np.ones((3, 2), "float32"))
    >>> net = SpikingNetwork((3,), [stage], KeyDecoder(np.eye(2)))
    >>> path = os.path.join(tempfile.mkdtemp(), "net.nir")
    >>> path = export(net, path)                      # doctest: +SKIP
    >>> load(path) == net                             # doctest: +SKIP
    True
"""

from __future__ import annotations

import io
import itertools
import json
import math
import os
import re
from importlib import metadata as _metadata
from pathlib import Path

import numpy as np

from whetstone import __version__, files
from whetstone.backends import BackendResult, register, require
from whetstone.network import (
    KeyDecoder,
    NetworkFileError,
    ReadoutDecoder,
    SpikingNetwork,
    Stage,
    output_length,
    same_padding,
)

__all__ = [
    "DT",
    "NIRBackend",
    "UnsupportedGraphError",
    "export",
    "from_graph",
    "load",
    "nir_input",
    "to_graph",
]

DT = 1e-4
"""Default timestep (seconds) the graph is memoryless at: ``tau`` of every LIF node.
snnTorch's NIR reader steps at 1e-4 s."""

FORMAT = "whetstone.nir"
FORMAT_VERSION = 1
LINEAR_OPS = ("Affine", "Linear", "Conv1d", "Conv2d", "SumPool2d")
NEURONS = ("LIF", "Threshold")
SUPPORTED = ("Input", "Output", "Flatten", *LINEAR_OPS, *NEURONS)


class UnsupportedGraphError(ValueError):
    """A NIR graph outside what a SpikingNetwork can express (names node and type)."""


def _nir():
    return require("nir", "nir")


# ---------------------------------------------------------------- layout helpers


def _first(shape: tuple[int, ...]) -> tuple[int, ...]:
    """Channels-last ``(*spatial, C)`` -> NIR's channels-first ``(C, *spatial)``."""
    return (shape[-1], *shape[:-1])


def _last(shape) -> tuple[int, ...]:
    """NIR's ``(C, *spatial)`` -> channels-last ``(*spatial, C)``."""
    shape = tuple(int(n) for n in shape)
    return (*shape[1:], shape[0])


def _flat_order(shape: tuple[int, ...]) -> np.ndarray:
    """For each position of the flattened ``(C, *spatial)`` tensor, its index in the
    row-major flattening of the channels-last ``shape``."""
    return np.moveaxis(np.arange(math.prod(shape)).reshape(shape), -1, 0).ravel()


def nir_input(net: SpikingNetwork, x: np.ndarray) -> np.ndarray:
    """Inputs ``(n, *net.input_shape)`` in the layout of the graph's Input node.

    Example:
        >>> from whetstone.network import Stage, SpikingNetwork
        >>> pool = Stage("p", "pool", (2, 2, 3), (1, 1, 3), pool_size=(2, 2), strides=(2, 2))
        >>> nir_input(SpikingNetwork((2, 2, 3), [pool]), np.zeros((5, 2, 2, 3))).shape
        (5, 3, 2, 2)
    """
    first = net.stages[0]
    x = np.asarray(x, np.float32).reshape(len(x), *first.input_shape)
    if first.kind == "dense":
        return x.reshape(len(x), -1)
    return np.moveaxis(x, -1, 1)


def _node_names(net: SpikingNetwork) -> list[str]:
    names, taken = [], {"input", "output", "decoder"}
    for i, stage in enumerate(net.stages):
        base = re.sub(r"\W", "_", stage.name) or "stage"
        base = base if base[0].isalpha() else f"s_{base}"
        name = base if base not in taken else f"{base}_{i}"
        taken.add(name)
        names.append(name)
    return names


# ---------------------------------------------------------------- export


def _paddings(stage: Stage) -> list[tuple[int, int]]:
    if stage.padding != "same":
        return [(0, 0)] * len(stage.window)
    return [same_padding(n, k, s, d) for n, k, s, d in stage._axes()]


def _axis_plan(n, k, s, d, pads, size):
    """Zero taps ``(before, after)`` and symmetric padding that give one axis of a
    window of ``k`` taps with Keras pads ``pads`` as a window of ``size`` taps."""
    before, after = pads
    rest = (n + before + after - d * (k - 1) - 1) % s
    for lead in range(size - k + 1):
        shift = before - after + (2 * lead - (size - k)) * d
        if -rest <= shift < s - rest:  # same number of outputs, taps aligned
            return lead, size - k - lead, before + lead * d
    return None


def _square_plan(stage: Stage) -> list[tuple[int, int, int]]:
    """Per axis: zero taps before, after, and the symmetric padding. NIR's padding is
    symmetric and nir 1.0's Conv2d type inference reads the kernel height as its
    width too, so the kernel is made square (exact: extra taps are zeros)."""
    axes = [(*axis, pads) for axis, pads in zip(stage._axes(), _paddings(stage), strict=True)]
    low = max(stage.window)
    for size in range(low, low + 4):
        sizes = [size if len(axes) == 2 else k for _, k, _, _, _ in axes]
        plan = [_axis_plan(*axis, m) for axis, m in zip(axes, sizes, strict=True)]
        if all(plan):
            return plan
    raise ValueError(
        f"stage {stage.name!r}: window {stage.window} with padding {_paddings(stage)}, strides "
        f"{stage.strides} and dilation {stage.dilation} has no NIR equivalent: NIR pads "
        "symmetrically and nir 1.0 needs square kernels (it infers a Conv2d's width from the "
        "kernel height), and zero taps cannot make up the difference here. Use a square "
        "kernel, 'valid' padding or no dilation in this layer."
    )


def _conv_node(stage: Stage, kernel: np.ndarray, bias: np.ndarray):
    """Conv1d/Conv2d for a channels-last kernel ``(*window, in, out)``."""
    nir = _nir()
    rank = len(stage.window)
    if rank not in (1, 2):
        raise ValueError(f"stage {stage.name!r}: NIR has 1-D and 2-D convolutions only.")
    plan = _square_plan(stage)
    kernel = np.pad(kernel, [(lead, trail) for lead, trail, _ in plan] + [(0, 0), (0, 0)])
    weight = np.ascontiguousarray(kernel.transpose(rank + 1, rank, *range(rank)))
    pad = tuple(p for _, _, p in plan)
    spatial = stage.input_shape[:-1]
    if rank == 1:
        return nir.Conv1d(spatial[0], weight, stage.strides[0], pad[0], stage.dilation[0], 1, bias)
    return nir.Conv2d(spatial, weight, stage.strides, pad, stage.dilation, 1, bias)


def _window_node(stage: Stage):
    """The NIR node of a conv or pool stage and the ``v_leak`` its neurons need."""
    nir = _nir()
    channels = stage.output_shape[-1]
    if stage.kind == "pool":
        pads = _paddings(stage)
        plain = all(b == a for b, a in pads) and set(stage.dilation) == {1}
        if plain and len(stage.window) == 2:
            node = nir.SumPool2d(
                np.array(stage.pool_size), np.array(stage.strides), np.array([b for b, _ in pads])
            )
            return node, None
        kernel = np.ones((*stage.pool_size, 1, 1), np.float32) * np.eye(channels, dtype=np.float32)
        return _conv_node(stage, kernel, np.zeros(channels, np.float32)), None
    leak = None
    bias = np.zeros(channels, np.float32) if stage.bias is None else stage.bias
    if bias.shape != (channels,):
        leak, bias = np.moveaxis(bias, -1, 0), np.zeros(channels, np.float32)
    return _conv_node(stage, stage.weights, bias), leak


def _neuron_node(stage: Stage, shape: tuple[int, ...], dt: float, leak):
    nir = _nir()
    below = np.nextafter(np.float32(stage.threshold), np.float32(-np.inf))
    return nir.LIF(
        tau=np.full(shape, dt, np.float64),
        r=np.ones(shape, np.float64),
        v_leak=np.zeros(shape, np.float32) if leak is None else leak.astype(np.float32),
        v_threshold=np.full(shape, below, np.float32),
        v_reset=np.zeros(shape, np.float32),
    )


def _decoder_matrix(decoder) -> tuple[np.ndarray, np.ndarray]:
    """``(classes, n)`` weight and bias whose Affine gives the decoder's scores."""
    if isinstance(decoder, KeyDecoder):
        signed = 2.0 * decoder.key - 1.0
        return 2.0 * signed, -signed.sum(axis=1)
    return decoder.weights.T, decoder.bias


def _hints(net: SpikingNetwork, names: list[str], dt: float) -> str:
    stages = [
        {
            "node": node,
            "name": s.name,
            "kind": s.kind,
            "input_shape": list(s.input_shape),
            "padding": s.padding,
            "window": list(s.window),
            "bias": None if s.bias is None else list(s.bias.shape),
        }
        for node, s in zip(names, net.stages, strict=True)
    ]
    decoder = None
    if net.decoder is not None:
        decoder = {"type": type(net.decoder).__name__}
        if isinstance(net.decoder, ReadoutDecoder):
            decoder["activation"] = net.decoder.activation
    return json.dumps(
        {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "input_shape": list(net.input_shape),
            "input_encoding": net.input_encoding,
            "dt": dt,
            "stages": stages,
            "decoder": decoder,
            "metadata": net.metadata,
        },
        sort_keys=True,
    )


def _version(package: str) -> str:
    try:
        return _metadata.version(package)
    except _metadata.PackageNotFoundError:
        return "unknown"


def to_graph(net: SpikingNetwork, dt: float = DT):
    """The ``nir.NIRGraph`` of ``net`` (see the module docstring for the mapping).

    Args:
        net: the network.
        dt: the timestep (s) at which the LIF neurons are memoryless (``tau = dt``).

    Example:
        >>> from whetstone.network import Stage, SpikingNetwork
        >>> net = SpikingNetwork((2,), [Stage("d", "dense", (2,), (1,), np.ones((2, 1)))])
        >>> sorted(to_graph(net).nodes)                   # doctest: +SKIP
        ['d', 'd_lif', 'input', 'output']
    """
    nir = _nir()
    names = _node_names(net)
    spatial = None if net.stages[0].kind == "dense" else net.stages[0].input_shape
    shape = _first(spatial) if spatial else (net.stages[0].in_size,)
    chain = [("input", nir.Input(np.array(shape)))]
    for stage, name in zip(net.stages, names, strict=True):
        if stage.kind == "dense":
            weights = stage.weights
            if spatial is not None:
                chain.append((f"{name}_flatten", nir.Flatten(np.array(_first(spatial)), 0, -1)))
                weights = weights[_flat_order(spatial)]
            weights = np.ascontiguousarray(weights.T)
            op = nir.Linear(weights) if stage.bias is None else nir.Affine(weights, stage.bias)
            leak, spatial, shape = None, None, (stage.num_neurons,)
        else:
            if spatial != stage.input_shape:
                raise ValueError(
                    f"stage {stage.name!r}: its input {stage.input_shape} is a reshaped "
                    f"{'flat vector' if spatial is None else spatial}; NIR has no Reshape node, "
                    "so this network cannot be exported (remove the Reshape)."
                )
            op, leak = _window_node(stage)
            spatial, shape = stage.output_shape, _first(stage.output_shape)
        chain += [(name, op), (f"{name}_lif", _neuron_node(stage, shape, dt, leak))]
    if net.decoder is not None:
        weights, bias = _decoder_matrix(net.decoder)
        if spatial is not None:
            chain.append(("decoder_flatten", nir.Flatten(np.array(_first(spatial)), 0, -1)))
            weights = weights[:, _flat_order(spatial)]
        chain.append(("decoder", nir.Affine(np.ascontiguousarray(weights), bias)))
        shape = (len(bias),)
    chain.append(("output", nir.Output(np.array(shape))))
    info = {
        "source": f"whetstone {__version__}",
        "nir_version": _version("nir"),
        "dt": float(dt),
        "neuron": "LIF with tau = dt, r = 1: memoryless when stepped at dt (forward Euler)",
        "threshold": "v_threshold = nextafter(float32(theta), -inf): v > v_threshold "
        "is v >= theta in float32",
        "whetstone": _hints(net, names, dt),
    }
    edges = [(a, b) for (a, _), (b, _) in itertools.pairwise(chain)]
    return nir.NIRGraph(dict(chain), edges, metadata=info)


def export(
    net: SpikingNetwork, path: str | os.PathLike, dt: float = DT, force: bool = False
) -> Path:
    """Write ``net`` as a NIR file atomically (see :mod:`whetstone.files`); a failed
    export leaves nothing behind, and an existing file is replaced only with ``force=True``.

    Example:
        >>> export(net, "model.nir")                      # doctest: +SKIP
        PosixPath('model.nir')
    """
    nir = _nir()
    files.check_target(path, force)
    buffer = io.BytesIO()  # h5py never sees the disk: a full disk is a clean error
    nir.write(buffer, to_graph(net, dt))
    return files.write_bytes(path, buffer.getvalue(), force)


# ---------------------------------------------------------------- import


def _check_types(path, nodes_group) -> None:
    """Refuse node types outside the supported set before ``nir.read`` sees them."""
    for name in nodes_group:
        kind = nodes_group[name]["type"][()]
        kind = kind.decode() if isinstance(kind, bytes) else str(kind)
        if kind not in SUPPORTED:
            raise UnsupportedGraphError(
                f"{path}: node {name!r} is a {kind}, which a whetstone SpikingNetwork cannot "
                f"express (supported: {', '.join(SUPPORTED)})."
            )


def load(path: str | os.PathLike) -> SpikingNetwork:
    """Read a NIR file (written by :func:`export` or another tool) as a SpikingNetwork.

    Raises:
        NetworkFileError: the file is missing, damaged or not a NIR graph.
        UnsupportedGraphError: a node whetstone cannot express (named with its type).

    Example:
        >>> net = load("model.nir")                       # doctest: +SKIP
    """
    nir = _nir()
    import h5py

    try:
        with h5py.File(path, "r") as f:
            _check_types(path, f["node/nodes"])
        graph = nir.read(path)
    except UnsupportedGraphError:
        raise
    except (OSError, KeyError, ValueError, TypeError, AssertionError) as error:
        raise NetworkFileError(
            f"not a readable NIR graph file: {path}: {error or type(error).__name__}"
        ) from error
    return from_graph(graph, where=str(path))


def _chain(graph, where: str) -> list[tuple[str, object]]:
    """The nodes from Input to Output of a graph that is a single chain."""
    nir = _nir()
    for name, node in graph.nodes.items():
        if type(node).__name__ not in SUPPORTED:
            raise UnsupportedGraphError(
                f"{where}: node {name!r} is a {type(node).__name__}, which a whetstone "
                f"SpikingNetwork cannot express (supported: {', '.join(SUPPORTED)})."
            )
    inputs = [n for n, node in graph.nodes.items() if isinstance(node, nir.Input)]
    after = {}
    for a, b in graph.edges:
        if a in after:
            raise UnsupportedGraphError(f"{where}: node {a!r} branches; only chains import.")
        after[a] = b
    if len(inputs) != 1:
        raise UnsupportedGraphError(f"{where}: needs one Input node, found {inputs}.")
    chain = [inputs[0]]
    while chain[-1] in after and len(chain) <= len(graph.nodes):
        chain.append(after[chain[-1]])
    if not isinstance(graph.nodes[chain[-1]], nir.Output) or len(chain) != len(graph.nodes):
        raise UnsupportedGraphError(
            f"{where}: the graph is not one chain from Input to Output ({chain})."
        )
    return [(name, graph.nodes[name]) for name in chain]


def _uniform(values, what: str, where: str) -> float:
    values = np.asarray(values)
    if values.size == 0 or not np.all(values == values.flat[0]):
        raise UnsupportedGraphError(f"{where}: {what} differs between neurons; it must not.")
    return values.flat[0]


def _neuron(name: str, node, dt: float | None, where: str):
    """``(theta, v_leak or None, dt)`` of a memoryless LIF or Threshold node; a LIF
    node is memoryless at the step ``dt`` (the graph's, else its own ``tau``)."""
    here = f"{where}: node {name!r} ({type(node).__name__})"
    if type(node).__name__ == "Threshold":
        thr = _uniform(node.threshold, "threshold", here)
        leak = None
    else:
        tau = float(_uniform(node.tau, "tau", here))
        dt = tau if dt is None else dt
        if (dt is not None and tau != dt) or float(_uniform(node.r, "r", here)) != 1.0:
            raise UnsupportedGraphError(
                f"{here}: tau={tau}, r={np.unique(node.r)} with dt={dt}; only tau == dt and "
                "r == 1 make a LIF neuron memoryless (v = v_leak + I each step)."
            )
        thr = _uniform(node.v_threshold, "v_threshold", here)
        leak = np.asarray(node.v_leak, np.float32)
        leak = leak if np.any(leak) else None
    theta = float(np.nextafter(np.float32(thr), np.float32(np.inf)))
    return theta, leak, dt


def _pads(padding, spatial, window, strides, dilation) -> list[tuple[int, int]]:
    """NIR padding (int, per axis, 'same' or 'valid') as per-axis (before, after)."""
    padding = padding.decode() if isinstance(padding, bytes) else padding
    if isinstance(padding, str):
        axes = zip(spatial, window, strides, dilation, strict=True)
        return [same_padding(*a) if padding == "same" else (0, 0) for a in axes]
    return [(int(p), int(p)) for p in np.broadcast_to(np.asarray(padding, int), (len(window),))]


def _zero_run(kernel: np.ndarray | None, axis: int, from_end: bool) -> int:
    """How many leading (or trailing) taps along ``axis`` are zero for every channel."""
    if kernel is None:
        return 0
    taps = np.moveaxis(kernel, axis, 0).reshape(kernel.shape[axis], -1).any(axis=1)
    taps = taps[::-1] if from_end else taps
    return int(np.argmax(taps)) if taps.any() else len(taps) - 1


def _axis_fit(n, size, s, d, pads, mode, lead_zeros, trail_zeros, window=None):
    """Least zero taps ``(lead, trail)`` to strip so that one axis is Keras ``mode``:
    the kept taps stay aligned and the number of outputs stays the same."""
    count = (n + sum(pads) - d * (size - 1) - 1) // s + 1
    fits = []
    for lead in range(lead_zeros + 1):
        for trail in range(trail_zeros + 1):
            k = size - lead - trail
            if k < 1 or (window is not None and k != window):
                continue
            before = 0 if mode == "valid" else same_padding(n, k, s, d)[0]
            if pads[0] - lead * d == before and output_length(n, k, s, d, mode) == count:
                fits.append((lead + trail, lead, trail))
    return min(fits)[1:] if fits else None


def _fit_window(name, kernel, size, spatial, strides, dilation, pads, hint, where):
    """Keras padding and per-axis zero taps to strip, for a NIR window of ``size``."""
    axes = list(zip(spatial, size, strides, dilation, pads, strict=True))
    zeros = [(_zero_run(kernel, i, False), _zero_run(kernel, i, True)) for i in range(len(axes))]
    windows = hint["window"] if hint else [None] * len(axes)
    best = None
    for mode in [hint["padding"]] if hint else ["valid", "same"]:
        plan = [
            _axis_fit(n, k, s, d, p, mode, *z, w)
            for (n, k, s, d, p), z, w in zip(axes, zeros, windows, strict=True)
        ]
        if all(f is not None for f in plan):
            candidate = (sum(a + b for a, b in plan), mode, plan)
            best = candidate if best is None else min(best, candidate)
    if best is None:
        raise UnsupportedGraphError(
            f"{where}: node {name!r} pads {pads} with window {tuple(size)}, which is neither "
            "'valid' nor Keras 'same' padding for its input, window and strides."
        )
    return best[1], best[2]


def _ints(value, rank: int) -> tuple[int, ...]:
    return tuple(int(v) for v in np.broadcast_to(np.asarray(value, int), (rank,)))


def _full_kernel(node, spatial, here) -> np.ndarray:
    """Channels-last kernel ``(*window, in, out)`` of a Conv node (groups expanded)."""
    weight = np.asarray(node.weight, np.float32)
    rank = len(spatial) - 1
    if weight.ndim != rank + 2:
        raise UnsupportedGraphError(f"{here}: a {weight.ndim - 2}-D kernel on {spatial}.")
    groups, out = int(node.groups), weight.shape[0]
    full = np.zeros((out, spatial[-1], *weight.shape[2:]), np.float32)
    per_in, per_out = weight.shape[1], out // groups
    for g in range(groups):
        rows = slice(g * per_out, (g + 1) * per_out)
        full[rows, g * per_in : (g + 1) * per_in] = weight[rows]
    return full.transpose(*range(2, rank + 2), 1, 0)


def _as_pool(kernel: np.ndarray, bias: np.ndarray, here: str) -> dict:
    window, channels = kernel.shape[:-2], kernel.shape[-1]
    ones = np.ones((*window, 1, 1), np.float32) * np.eye(channels, dtype=np.float32)
    if kernel.shape[-2] != channels or not np.array_equal(kernel, ones) or np.any(bias):
        raise UnsupportedGraphError(f"{here}: an OR-pool in the metadata, not in the kernel.")
    return {"kind": "pool", "pool_size": window, "weights": None, "bias": None}


def _window_op(name, node, spatial, where, hint=None) -> dict:
    """Stage fields of a Conv1d / Conv2d / SumPool2d node reading ``spatial`` (HWC)."""
    here = f"{where}: node {name!r}"
    if spatial is None:
        raise UnsupportedGraphError(f"{here}: a {type(node).__name__} after a flat tensor.")
    rank = len(spatial) - 1
    strides = _ints(node.stride, rank)
    if type(node).__name__ == "SumPool2d":
        kernel, size, dilation = None, _ints(node.kernel_size, rank), (1,) * rank
    else:
        kernel = _full_kernel(node, spatial, here)
        size, dilation = kernel.shape[:rank], _ints(node.dilation, rank)
    pads = _pads(node.padding, spatial[:-1], size, strides, dilation)
    padding, strip = _fit_window(
        name, kernel, size, spatial[:-1], strides, dilation, pads, hint, here
    )
    if kernel is None:
        fields = {"kind": "pool", "pool_size": size, "weights": None, "bias": None}
    else:
        kernel = kernel[tuple(slice(a, k - b) for (a, b), k in zip(strip, size, strict=True))]
        bias = np.asarray(node.bias, np.float32)
        fields = {"kind": "conv", "weights": kernel, "bias": bias}
        if hint and hint["kind"] == "pool":
            fields = _as_pool(kernel, bias, here)
    window = fields["pool_size"] if fields["kind"] == "pool" else fields["weights"].shape[:rank]
    out_spatial = tuple(
        output_length(n, k, s, d, padding)
        for n, k, s, d in zip(spatial[:-1], window, strides, dilation, strict=True)
    )
    channels = spatial[-1] if fields["kind"] == "pool" else fields["weights"].shape[-1]
    geometry = {"strides": strides, "padding": padding, "dilation": dilation}
    return {**fields, **geometry, "input_shape": spatial, "output_shape": (*out_spatial, channels)}


def _dense_op(node, source, order) -> dict:
    weight = np.asarray(node.weight, np.float32)
    weights = np.empty_like(weight.T)
    weights[order if order is not None else slice(None)] = weight.T
    bias = np.asarray(node.bias, np.float32) if type(node).__name__ == "Affine" else None
    return {
        "kind": "dense",
        "weights": weights,
        "bias": bias,
        "input_shape": source,
        "output_shape": (weight.shape[0],),
    }


def _stage(name: str, op: dict, theta: float, leak, where: str) -> Stage:
    if leak is not None:
        if op["kind"] == "pool":
            raise UnsupportedGraphError(f"{where}: node {name!r}: a pool's neurons have v_leak.")
        leak = np.moveaxis(leak, 0, -1) if leak.ndim > 1 else leak
        bias = op["bias"]
        op["bias"] = leak if bias is None or not np.any(bias) else bias + leak
    return Stage(name, threshold=theta, **op)


def _read_hints(graph, chain) -> dict:
    """The ``whetstone`` metadata when it belongs to this graph, else ``{}``."""
    text = graph.metadata.get("whetstone") if isinstance(graph.metadata, dict) else None
    try:
        hints = json.loads(text) if text else {}
        stages = {h["node"]: h for h in hints["stages"]}
        ops = [name for name, node in chain if type(node).__name__ in LINEAR_OPS]
        if hints.get("format") == FORMAT and sorted(stages) == sorted(ops[: len(stages)]):
            return {**hints, "stages": stages}
    except (TypeError, ValueError, KeyError):
        pass
    return {}


def _walk(chain, dt, where, hints) -> tuple[list[Stage], dict | None, tuple]:
    """The stages, a pending decoder op (a linear node with no neurons), the input shape."""
    shape = tuple(int(n) for n in chain[0][1].input_type["input"])
    spatial = _last(shape) if len(shape) > 1 else None
    source, order, op, stages = spatial or shape, None, None, []
    input_shape = source
    for name, node in chain[1:-1]:
        kind = type(node).__name__
        if kind in LINEAR_OPS and op is not None:
            raise UnsupportedGraphError(
                f"{where}: node {name!r} ({kind}) follows the linear node {op['node']!r} "
                "with no neurons between; each stage is one linear node then neurons."
            )
        if kind == "Flatten":
            if spatial is not None:
                order, source, spatial = _flat_order(spatial), spatial, None
        elif kind in ("Affine", "Linear"):
            op = {**_dense_op(node, source, order), "node": name}
        elif kind in LINEAR_OPS:
            hint = hints.get("stages", {}).get(name)
            op = {**_window_op(name, node, spatial, where, hint), "node": name}
        else:
            if op is None:
                raise UnsupportedGraphError(
                    f"{where}: node {name!r} ({kind}) has no linear node before it."
                )
            theta, leak, dt = _neuron(name, node, dt, where)
            stages.append(_stage(op.pop("node"), op, theta, leak, where))
            spatial = stages[-1].output_shape if len(stages[-1].output_shape) > 1 else None
            source, order, op = stages[-1].output_shape, None, None
    return stages, op, input_shape


def from_graph(graph, where: str = "NIR graph") -> SpikingNetwork:
    """A ``nir.NIRGraph`` of the form :func:`to_graph` writes, as a SpikingNetwork.

    Graphs from other tools import when they are a chain of the supported nodes
    with memoryless neurons; anything else raises :class:`UnsupportedGraphError`
    naming the node and its type. The graph's ``whetstone`` metadata, when present,
    restores names, shapes, decoder type and encoding exactly.

    Example:
        >>> net == from_graph(to_graph(net))              # doctest: +SKIP
        True
    """
    chain = _chain(graph, where)
    hints = _read_hints(graph, chain)
    meta = graph.metadata if isinstance(graph.metadata, dict) else {}
    dt = float(meta["dt"]) if "dt" in meta else None
    stages, op, input_shape = _walk(chain, dt, where, hints)
    if not stages:
        raise UnsupportedGraphError(f"{where}: the graph has no neurons.")
    decoder = None
    if op is not None:
        if op["kind"] != "dense":
            raise UnsupportedGraphError(f"{where}: node {op['node']!r} ends the graph.")
        bias = op["bias"] if op["bias"] is not None else np.zeros(op["weights"].shape[1])
        decoder = ReadoutDecoder(op["weights"], bias)
    net = SpikingNetwork(input_shape, stages, decoder)
    return _restore(net, hints, where) if hints else net


# ---------------------------------------------------------------- restoring whetstone detail


def _restore_stage(stage: Stage, hint: dict) -> Stage:
    """Name, input shape and a missing bias, as the ``whetstone`` metadata says."""
    bias = stage.bias
    if hint["bias"] is None and bias is not None:
        if np.any(bias):
            raise ValueError(f"stage {stage.name!r} has a bias; the metadata says none")
        bias = None
    fields = ("kind", "output_shape", "weights", "threshold", "strides", "padding")
    kwargs = {k: getattr(stage, k) for k in (*fields, "dilation", "pool_size")}
    return Stage(hint["name"], input_shape=tuple(hint["input_shape"]), bias=bias, **kwargs)


def _key_decoder(decoder: ReadoutDecoder) -> KeyDecoder:
    signed = decoder.weights.T / 2.0
    if not np.array_equal(decoder.bias, -signed.sum(axis=1)):
        raise ValueError("the key decoder's bias is not -sum(2K - 1)")
    return KeyDecoder((signed + 1.0) / 2.0)


def _restore(net: SpikingNetwork, hints: dict, where: str) -> SpikingNetwork:
    """Apply the ``whetstone`` metadata to an imported network."""
    try:
        order = list(hints["stages"].values())
        stages = [_restore_stage(s, h) for s, h in zip(net.stages, order, strict=True)]
        decoder, kind = net.decoder, (hints.get("decoder") or {}).get("type")
        if kind == "KeyDecoder" and decoder is not None:
            decoder = _key_decoder(decoder)
        elif kind == "ReadoutDecoder" and decoder is not None:
            decoder.activation = hints["decoder"].get("activation", "linear")
        return SpikingNetwork(
            tuple(hints["input_shape"]),
            stages,
            decoder,
            hints["input_encoding"],
            hints.get("metadata", {}),
        )
    except (KeyError, TypeError, ValueError) as error:
        raise UnsupportedGraphError(
            f"{where}: the graph does not match its 'whetstone' metadata ({error}); "
            "remove that metadata entry to import the graph as it stands."
        ) from error


# ---------------------------------------------------------------- back end


@register("nir")
class NIRBackend:
    """The NIR back end: ``build`` gives the ``nir.NIRGraph``, ``export`` writes it,
    ``load`` reads one, ``run`` simulates the graph (written and read back in memory)
    through :func:`from_graph` and the reference simulator.

    Example:
        >>> import whetstone.backends as backends
        >>> backends.get("nir").extra
        'nir'
    """

    extra = "nir"

    def is_available(self) -> bool:
        """Whether the ``nir`` package is installed."""
        try:
            _nir()
        except ImportError:
            return False
        return True

    def build(self, net: SpikingNetwork, dt: float = DT):
        """The ``nir.NIRGraph`` of ``net``."""
        return to_graph(net, dt)

    def export(
        self, net: SpikingNetwork, path: str | os.PathLike, dt: float = DT, force: bool = False
    ) -> Path:
        """Write ``net`` as a NIR file (atomically; replaces a file only with ``force=True``)."""
        return export(net, path, dt, force)

    def load(self, path: str | os.PathLike) -> SpikingNetwork:
        """Read a NIR file as a SpikingNetwork."""
        return load(path)

    def run(self, net: SpikingNetwork, x: np.ndarray, dt: float = DT) -> BackendResult:
        """Write the graph, read it back, import it and run the reference simulator."""
        from whetstone.simulate import run

        nir = _nir()
        buffer = io.BytesIO()
        nir.write(buffer, to_graph(net, dt))
        buffer.seek(0)
        result = run(from_graph(nir.read(buffer)), x)
        return BackendResult(
            predictions=result.predictions,
            output_spikes=result.output_spikes.reshape(len(result.predictions), -1),
            spike_counts=result.spike_counts,
            info={
                "reader": "whetstone.backends.nir.from_graph + whetstone.simulate.run",
                "file_bytes": buffer.getbuffer().nbytes,
                "ties": result.ties,
                "latency": result.latency,
            },
        )
