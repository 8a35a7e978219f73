"""NIR writing: a SpikingNetwork as a ``nir.NIRGraph`` and a ``.nir`` file.

Example:
    >>> from whetstone.network import Stage, SpikingNetwork
    >>> net = SpikingNetwork((2,), [Stage("d", "dense", (2,), (1,), np.ones((2, 1)))])
    >>> sorted(to_graph(net).nodes)                   # doctest: +SKIP
    ['d', 'd_lif', 'input', 'output']
"""

from __future__ import annotations

import io
import json
import os
from dataclasses import replace
from importlib import metadata as _metadata
from pathlib import Path

import numpy as np

from whetstone import __version__, files
from whetstone.backends.nir.layout import (
    DT,
    FORMAT,
    FORMAT_VERSION,
    _first,
    _flat_order,
    _nir,
    _node_names,
    _square_plan,
)
from whetstone.geometry import paddings
from whetstone.network import INPUT, KeyDecoder, ReadoutDecoder, SpikingNetwork, Stage

__all__ = ["VARIANTS", "export", "to_graph"]

VARIANTS = ("memoryless", "one_step")
"""How neurons and OR-pools are written (see ``docs/backends/nir-readers.md``).

``memoryless``: LIF with ``tau = dt``, ``r = 1`` (no state: exact at any number of
steps; read by whetstone and snnTorch), OR-pools as ``SumPool2d``. ``one_step``: LIF with
``tau = 2 dt``, ``r = 2`` and OR-pools as convolutions: exact in the first step from rest,
as snnTorch, Sinabs and SpikingJelly read it (SpikingJelly refuses ``tau <= dt`` and has
no ``SumPool2d``); whetstone's own reader reads only ``memoryless``."""


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


def _window_node(stage: Stage, variant: str = "memoryless"):
    """The NIR node of a conv or pool stage and the ``v_leak`` its neurons need."""
    nir = _nir()
    channels = stage.output_shape[-1]
    if stage.kind == "pool":
        pads = paddings(stage)
        plain = all(b == a for b, a in pads) and set(stage.dilation) == {1}
        plain = plain and variant == "memoryless"
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


def _neuron_node(stage: Stage, shape: tuple[int, ...], dt: float, leak, steps: int = 1):
    """LIF with ``tau = steps dt``, ``r = steps``: ``v = (1 - 1/steps) v + I``."""
    nir = _nir()
    below = np.nextafter(np.float32(stage.threshold), np.float32(-np.inf))
    return nir.LIF(
        tau=np.full(shape, steps * dt, np.float64),
        r=np.full(shape, steps, np.float64),
        v_leak=np.zeros(shape, np.float32) if leak is None else leak.astype(np.float32),
        v_threshold=np.full(shape, below, np.float32),
        v_reset=np.zeros(shape, np.float32),
    )


def _operator(stage: Stage, spatial, name: str, variant: str):
    """The linear node of one edge into a stage (its operator reading a source whose
    channels-last shape is ``spatial``, None when flat), a Flatten node to put before it
    or None, and the ``v_leak`` of a position-dependent bias."""
    nir = _nir()
    if stage.kind == "dense":
        weights, flatten = stage.weights, None
        if spatial is not None:
            flatten = nir.Flatten(np.array(_first(spatial)), 0, -1)
            weights = weights[_flat_order(spatial)]
        weights = np.ascontiguousarray(weights.T)
        op = nir.Linear(weights) if stage.bias is None else nir.Affine(weights, stage.bias)
        return op, flatten, None
    if spatial != stage.input_shape:
        raise ValueError(
            f"stage {name!r}: its input {stage.input_shape} is a reshaped "
            f"{'flat vector' if spatial is None else spatial}; NIR has no Reshape node, "
            "so this network cannot be exported (remove the Reshape)."
        )
    op, leak = _window_node(stage, variant)
    return op, None, leak


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
            "widths": [e.operator.input_shape[-1] for e in net.edges(i)],
        }
        for i, (node, s) in enumerate(zip(names, net.stages, strict=True))
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


def to_graph(net: SpikingNetwork, dt: float = DT, variant: str = "memoryless"):
    """The ``nir.NIRGraph`` of ``net`` (see the module docstring for the mapping).

    Args:
        net: the network.
        dt: the timestep (s) at which the LIF neurons are memoryless (``tau = dt``).
        variant: one of :data:`VARIANTS`.

    Example:
        >>> from whetstone.network import Stage, SpikingNetwork
        >>> net = SpikingNetwork((2,), [Stage("d", "dense", (2,), (1,), np.ones((2, 1)))])
        >>> sorted(to_graph(net).nodes)                   # doctest: +SKIP
        ['d', 'd_lif', 'input', 'output']
    """
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}.")
    nir = _nir()
    names = _node_names(net)
    steps = 1 if variant == "memoryless" else 2
    spatial = None if net.stages[0].kind == "dense" else net.stages[0].input_shape
    shape = _first(spatial) if spatial else (net.stages[0].in_size,)
    nodes, edges = {"input": nir.Input(np.array(shape))}, []
    outputs = []  # per stage: (neuron node, channels-last spatial shape or None, NIR shape)
    for index, (stage, name) in enumerate(zip(net.stages, names, strict=True)):
        parts = net.edges(index)
        leak = None
        for k, edge in enumerate(parts):
            here = name if len(parts) == 1 else f"{name}_in{k}"
            pre, spatial, shape = (
                ("input", spatial, shape) if edge.source == INPUT else outputs[edge.source]
            )
            if edge.delay:  # NIR's Delay node: y(t) = x(t - delay dt)
                nodes[f"{here}_delay"] = nir.Delay(np.full(shape, edge.delay * dt))
                edges.append((pre, f"{here}_delay"))
                pre = f"{here}_delay"
            operator = edge.operator if k or len(parts) == 1 else replace(
                edge.operator, bias=stage.bias)  # fmt: skip
            op, flatten, part_leak = _operator(operator, spatial, here, variant)
            leak = part_leak if part_leak is not None else leak
            if flatten is not None:
                nodes[f"{here}_flatten"] = flatten
                edges.append((pre, f"{here}_flatten"))
                pre = f"{here}_flatten"
            nodes[here] = op
            edges += [(pre, here), (here, f"{name}_lif")]
        spatial = None if stage.kind == "dense" else stage.output_shape
        shape = _first(spatial) if spatial else (stage.num_neurons,)
        nodes[f"{name}_lif"] = _neuron_node(stage, shape, dt, leak, steps)
        outputs.append((f"{name}_lif", spatial, shape))
    last = outputs[-1][0]
    if net.decoder is not None:
        weights, bias = _decoder_matrix(net.decoder)
        if spatial is not None:
            nodes["decoder_flatten"] = nir.Flatten(np.array(_first(spatial)), 0, -1)
            edges.append((last, "decoder_flatten"))
            last = "decoder_flatten"
            weights = weights[:, _flat_order(spatial)]
        nodes["decoder"] = nir.Affine(np.ascontiguousarray(weights), bias)
        edges.append((last, "decoder"))
        last, shape = "decoder", (len(bias),)
    nodes["output"] = nir.Output(np.array(shape))
    edges.append((last, "output"))
    info = {
        "source": f"whetstone {__version__}",
        "nir_version": _version("nir"),
        "dt": float(dt),
        "neuron": "LIF with tau = dt, r = 1: memoryless when stepped at dt (forward Euler)"
        if steps == 1
        else "LIF with tau = 2 dt, r = 2: exact in the first step from rest (variant one_step)",
        "threshold": "v_threshold = nextafter(float32(theta), -inf): v > v_threshold "
        "is v >= theta in float32",
        "whetstone": _hints(net, names, dt),
    }
    return nir.NIRGraph(nodes, edges, metadata=info)


def export(
    net: SpikingNetwork,
    path: str | os.PathLike,
    dt: float = DT,
    force: bool = False,
    variant: str = "memoryless",
) -> Path:
    """Write ``net`` as a NIR file atomically (see :mod:`whetstone.files`); a failed
    export leaves nothing behind, and an existing file is replaced only with ``force=True``.
    ``variant``: one of :data:`VARIANTS`.

    Example:
        >>> export(net, "model.nir")                      # doctest: +SKIP
        PosixPath('model.nir')
    """
    nir = _nir()
    files.check_target(path, force)
    buffer = io.BytesIO()  # h5py never sees the disk: a full disk is a clean error
    nir.write(buffer, to_graph(net, dt, variant))
    return files.write_bytes(path, buffer.getvalue(), force)
