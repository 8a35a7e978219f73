"""NIR reading: a ``.nir`` file or ``nir.NIRGraph`` as a SpikingNetwork.

Example:
    >>> net = load("model.nir")                       # doctest: +SKIP
"""

from __future__ import annotations

import json
import os

import numpy as np

from whetstone.backends.nir.layout import (
    FORMAT,
    LINEAR_OPS,
    NEURONS,
    SUPPORTED,
    UnsupportedGraphError,
    _fit_window,
    _flat_order,
    _last,
    _nir,
    _pads,
)
from whetstone.network import (
    KeyDecoder,
    NetworkFileError,
    ReadoutDecoder,
    SpikingNetwork,
    Stage,
    output_length,
)

__all__ = ["from_graph", "load"]


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
    meta = graph.metadata if isinstance(graph.metadata, dict) else {}
    dt = float(meta["dt"]) if "dt" in meta else None
    if _is_dag(graph):
        stages, op, input_shape, hints = _walk_dag(graph, dt, where)
    else:
        chain = _chain(graph, where)
        hints = _read_hints(graph, chain)
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


# ---------------------------------------------------------------- DAG graphs


def _is_dag(graph) -> bool:
    """Whether the graph branches, merges or delays (else the chain reader reads it)."""
    starts = [a for a, _ in graph.edges]
    ends = [b for _, b in graph.edges]
    delays = any(type(node).__name__ == "Delay" for node in graph.nodes.values())
    return delays or len(set(starts)) < len(starts) or len(set(ends)) < len(ends)


def _neuron_order(graph, before: dict, where: str, prefer=()) -> list[str]:
    """The neuron nodes in an order where each comes after the neurons it reads (the
    ``prefer`` order where it is one, e.g. the writer's)."""
    neurons = [n for n, node in graph.nodes.items() if type(node).__name__ in NEURONS]
    neurons = [n for n in prefer if n in neurons] + [n for n in neurons if n not in prefer]

    def sources(name):  # the neurons (or Input) that feed a neuron node through its ops
        found = set()
        for op in before.get(name, []):
            node = op
            while before.get(node) and type(graph.nodes[node]).__name__ not in NEURONS:
                node = before[node][0]
            found.add(node)
        return found

    order, done = [], set()
    while len(order) < len(neurons):
        ready = [n for n in neurons if n not in done and sources(n) <= done | {"input"}
                 | {k for k, v in graph.nodes.items() if type(v).__name__ == "Input"}]  # fmt: skip
        if not ready:
            raise UnsupportedGraphError(f"{where}: the graph has a cycle among {neurons}.")
        order.append(ready[0])
        done.add(ready[0])
    return order


def _edge_source(graph, before: dict, op: str, dt, where: str):
    """``(source node, delay in steps, Flatten seen)`` behind the linear node ``op``."""
    node, delay, flat = before[op][0] if before.get(op) else None, 0, False
    while node is not None and type(graph.nodes[node]).__name__ in ("Delay", "Flatten"):
        kind = type(graph.nodes[node]).__name__
        if kind == "Delay":
            seconds = float(_uniform(graph.nodes[node].delay, "delay", f"{where}: {node!r}"))
            steps = seconds / dt if dt else float("nan")
            if not np.isclose(steps, round(steps)):
                raise UnsupportedGraphError(
                    f"{where}: node {node!r} delays by {seconds} s, not a whole number of "
                    f"steps of {dt} s."
                )
            delay += round(steps)
        else:
            flat = True
        node = before[node][0] if before.get(node) else None
    if node is None:
        raise UnsupportedGraphError(f"{where}: node {op!r} is not fed by neurons or the input.")
    return node, delay, flat


def _merge(parts: list[dict], name: str, where: str) -> dict:
    """One stage's fields from the ops of its edges: their inputs concatenated."""
    first = parts[0]
    if len(parts) == 1:
        return first
    kinds = {p["kind"] for p in parts}
    geometry = ("strides", "padding", "dilation")
    if (
        kinds != {first["kind"]}
        or first["kind"] == "pool"
        or any(p.get(g) != first.get(g) for p in parts for g in geometry)
    ):
        raise UnsupportedGraphError(
            f"{where}: the linear nodes into {name!r} differ in kind or window; only equal "
            "ones can be one stage reading several sources."
        )
    biases = [p["bias"] for p in parts if p["bias"] is not None]
    bias = sum(biases[1:], biases[0]) if biases else None
    if first["kind"] == "dense":
        weights = np.concatenate([p["weights"] for p in parts])
        shape = (len(weights),)
    else:
        weights = np.concatenate([p["weights"] for p in parts], axis=-2)
        shape = (*first["input_shape"][:-1], weights.shape[-2])
    return {**first, "weights": weights, "bias": bias, "input_shape": shape}


def _walk_dag(graph, dt, where):
    """Stages (with sources and delays), a pending decoder op, the input shape, hints."""
    for name, node in graph.nodes.items():
        if type(node).__name__ not in SUPPORTED:
            raise UnsupportedGraphError(
                f"{where}: node {name!r} is a {type(node).__name__}, which a whetstone "
                f"SpikingNetwork cannot express (supported: {', '.join(SUPPORTED)})."
            )
    before: dict[str, list[str]] = {}
    for a, b in graph.edges:
        before.setdefault(b, []).append(a)
    inputs = [n for n, node in graph.nodes.items() if type(node).__name__ == "Input"]
    if len(inputs) != 1:
        raise UnsupportedGraphError(f"{where}: needs one Input node, found {inputs}.")
    shape = tuple(int(n) for n in graph.nodes[inputs[0]].input_type["input"])
    input_shape = _last(shape) if len(shape) > 1 else shape
    hints = _dag_hints(graph)
    index, stages = {inputs[0]: -1}, []
    for neuron in _neuron_order(graph, before, where, list(hints.get("stages", {}))):
        hint = hints.get("stages", {}).get(neuron)
        parts, sources, delays = [], [], []
        for op in sorted(before.get(neuron, [])):
            source, delay, _ = _edge_source(graph, before, op, dt, where)
            shape_in = input_shape if source == inputs[0] else stages[index[source]].output_shape
            spatial = shape_in if len(shape_in) > 1 else None
            kind = type(graph.nodes[op]).__name__
            if kind in ("Affine", "Linear"):
                order = _flat_order(spatial) if spatial is not None else None
                parts.append(_dense_op(graph.nodes[op], shape_in, order))
            else:
                parts.append(_window_op(op, graph.nodes[op], spatial, where, hint))
            sources.append(index[source])
            delays.append(delay)
        if not parts:
            raise UnsupportedGraphError(f"{where}: node {neuron!r} has no linear node before it.")
        theta, leak, dt = _neuron(neuron, graph.nodes[neuron], dt, where)
        op = _merge(parts, neuron, where)
        stage = _stage(neuron.removesuffix("_lif"), op, theta, leak, where)
        stage.sources, stage.delays = tuple(sources), tuple(delays)
        index[neuron] = len(stages)
        stages.append(stage)
    last = before.get(next(n for n, v in graph.nodes.items() if type(v).__name__ == "Output"))
    op = None
    if last and type(graph.nodes[last[0]]).__name__ in ("Affine", "Linear"):
        source, _, _ = _edge_source(graph, before, last[0], dt, where)
        spatial = stages[-1].output_shape if len(stages[-1].output_shape) > 1 else None
        order = _flat_order(spatial) if spatial is not None else None
        op = {**_dense_op(graph.nodes[last[0]], stages[-1].output_shape, order), "node": last[0]}
    return stages, op, input_shape, hints


def _dag_hints(graph) -> dict:
    """The ``whetstone`` metadata of a DAG graph, its stages keyed by neuron node."""
    text = graph.metadata.get("whetstone") if isinstance(graph.metadata, dict) else None
    try:
        hints = json.loads(text) if text else {}
        if hints.get("format") != FORMAT:
            return {}
        stages = {f"{h['node']}_lif": h for h in hints["stages"]}
        return {**hints, "stages": stages} if set(stages) <= set(graph.nodes) else {}
    except (TypeError, ValueError, KeyError):
        return {}


# ---------------------------------------------------------------- restoring whetstone detail


def _restore_stage(stage: Stage, hint: dict) -> Stage:
    """Name, input shape and the bias's absence or shape, as the ``whetstone`` metadata says."""
    bias = stage.bias
    if hint["bias"] is None and bias is not None:
        if np.any(bias):
            raise ValueError(f"stage {stage.name!r} has a bias; the metadata says none")
        bias = None
    if bias is not None and hint["bias"] is not None and list(bias.shape) != hint["bias"]:
        # a position bias equal at every position comes back as the channel bias it equals
        bias = np.broadcast_to(bias, hint["bias"]).astype(np.float32)
    fields = ("kind", "output_shape", "weights", "threshold", "strides", "padding")
    kwargs = {k: getattr(stage, k) for k in (*fields, "dilation", "pool_size", "sources")}
    shape = tuple(hint["input_shape"])
    if stage.kind == "dense" and len(stage.sources) > 1 and len(shape) > 1:
        kwargs["weights"] = _interleave(stage.weights, hint["widths"], shape)
    return Stage(hint["name"], input_shape=shape, bias=bias, delays=stage.delays, **kwargs)


def _interleave(weights: np.ndarray, widths: list[int], shape: tuple[int, ...]) -> np.ndarray:
    """Dense rows of flattened sources one after another -> rows of their concatenation
    along the last axis of ``shape`` (each source ``(*shape[:-1], width)``)."""
    lead = int(np.prod(shape[:-1]))
    parts = np.split(weights, np.cumsum([lead * w for w in widths])[:-1])
    rows = [p.reshape(lead, w, -1) for p, w in zip(parts, widths, strict=True)]
    return np.concatenate(rows, axis=1).reshape(len(weights), -1)


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
