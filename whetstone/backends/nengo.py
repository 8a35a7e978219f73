"""Nengo back end: a SpikingNetwork as a ``nengo.Network`` run in Nengo's reference simulator.

Mapping (the same network also runs, unchanged, on Nengo-Loihi: see ``loihi.py``):

* **Neurons.** Each stage is a ``nengo.Ensemble`` of :class:`StepNeuron`, driven
  directly through ``.neurons`` with ``gain = 1`` and ``bias = b - theta``, so the
  input current is ``J = W s + b - theta``. ``StepNeuron.step`` writes
  ``output = (J >= 0) * amplitude / dt`` and nothing else: the type has no state
  variables (``state = {}``), so nothing is carried from one step to the next and the
  unit is the contract's memoryless ``H(W s + b - theta)``. ``amplitude = dt`` makes a
  spike the value 1. On Loihi the type is built as a compartment with full voltage
  decay, no refractory period and a threshold of its own (see ``loihi.py``).
* **Edges.** A stage with several sources (a DAG) gets one connection per source, each
  with the stage's weights on that source's channels (``SpikingNetwork.edges``); an
  edge's extra delay of ``d`` steps is ``d`` relay populations of step neurons
  (identity transform, bias ``-0.5``: ``H(s - 0.5) = s``), one step each, so the
  sources' spikes arrive aligned as in the reference.
* **Connections.** Dense stages are ``nengo.Dense`` transforms, convolutions are
  ``nengo.Convolution`` (never expanded to matrices), OR-pools are a
  ``nengo.Convolution`` with a ones kernel per channel (identity across channels) and
  threshold 0.5. Stage-to-stage connections use ``synapse=0`` (``Lowpass(0)``), which
  in Nengo is exactly a one-step delay (``y[t] = x[t-1]``, no filtering) and on Loihi
  is the same as ``synapse=None`` (the chip's own one-step axon delay): one step per
  stage, as the contract says.
* **Input.** A ``Node`` presents image ``i`` at step ``i`` (one new image per step,
  pipelined). It feeds ``s - 0.5`` to a host population of step neurons (``synapse=None``),
  where ``s = net.encode(x)`` are the spikes that enter the chip: the host encoder's
  (stage 0, in the reference's own float32 arithmetic) with ``input_encoding == "host"``,
  the 0/1 inputs with ``"binary"`` (a relay). The host population runs off chip on Loihi
  and sends its spikes to the chip.
* **Output.** The last stage's spikes are probed (``synapse=None``) and decoded on the
  host with the network's ``KeyDecoder`` / ``ReadoutDecoder``. Image ``i``'s output
  spikes appear ``net.latency - 1`` steps after it is presented (stage ``l``'s,
  ``net.depths[l] - 1``); ``run`` matches them.

Nengo computes in float64 and the reference in float32, so the two can differ only on
ties (``|W s + b - theta| < 1e-6``); ``run`` reports the reference's ties when asked to
compare (``info["ties"]``).

Export writes a folder with ``network.h5`` (``SpikingNetwork.save``), ``export.json``,
``run.py`` (a script that rebuilds the Nengo network with whetstone, runs the shipped or
given inputs and prints the agreement with the reference's decisions) and, when inputs
are given, ``inputs.npz`` (see :mod:`whetstone.backends.exports`).

Example:
    >>> import numpy as np
    >>> from whetstone.backends import get
    >>> from whetstone.network import Stage, SpikingNetwork, KeyDecoder
    >>> stage = Stage("d", "dense", (1,), (2,), np.array([[1.0, -1.0]], "float32"))
    >>> net = SpikingNetwork((1,), [stage], KeyDecoder([[1, 0], [0, 1]]))
    >>> result = get("nengo").run(net, np.array([[0.9], [-0.9]], "float32"))
    >>> result.predictions.tolist(), result.output_spikes.tolist()
    ([0, 1], [[1, 0], [0, 1]])
"""

from __future__ import annotations

import functools
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from whetstone import files
from whetstone.backends import BackendResult, compared, exports, register, require
from whetstone.network import INPUT, SpikingNetwork, Stage

__all__ = ["DT", "BuiltNetwork", "NengoBackend", "build_network", "neuron_type"]

DT = 0.001
"""Simulation step (seconds); a spike has the value ``amplitude / dt = 1``."""

CHUNK_STEPS = 256
"""Steps simulated between two reads (and clears) of the probes."""


# ---------------------------------------------------------------- neuron type


@functools.cache
def _step_neuron_class() -> type:
    nengo = require("nengo", "nengo")
    from nengo.params import NumberParam

    class StepNeuron(nengo.neurons.NeuronType):
        """Memoryless threshold unit: ``output = (J >= 0) * amplitude / dt``; no state."""

        state: ClassVar[dict] = {}
        spiking = True
        negative = False
        amplitude = NumberParam("amplitude", low=0, low_open=True)

        def __init__(self, amplitude=DT, initial_state=None):
            super().__init__(initial_state)
            self.amplitude = amplitude

        def gain_bias(self, max_rates, intercepts):
            raise NotImplementedError(
                "StepNeuron ensembles need explicit gain and bias (gain=1, bias=b - theta)."
            )

        def max_rates_intercepts(self, gain, bias):
            gain, bias = np.asarray(gain, float), np.asarray(bias, float)
            return np.full(gain.shape, self.amplitude / DT), -bias / gain

        def rates(self, x, gain, bias):
            return (self.current(x, gain, bias) >= 0) * (self.amplitude / DT)

        def step(self, dt, J, output):
            output[...] = (J >= 0) * (self.amplitude / dt)

    return StepNeuron


def neuron_type(amplitude: float = DT):
    """A :class:`StepNeuron` instance (the class is created on first use).

    Example:
        >>> import numpy as np
        >>> out = np.zeros(3)
        >>> neuron_type().step(0.001, np.array([-0.1, 0.0, 0.2]), out); out.tolist()
        [0.0, 1.0, 1.0]
    """
    return _step_neuron_class()(amplitude=amplitude)


def __getattr__(name: str):
    if name == "StepNeuron":
        return _step_neuron_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# ---------------------------------------------------------------- building


class _Presenter:
    """What the input node outputs at each step: rows loaded chunk by chunk."""

    def __init__(self, width: int):
        self.width = width
        self.start = 0
        self.rows = np.zeros((0, width))
        self.blank = np.zeros(width)

    def set_blank(self, row: np.ndarray) -> None:
        """What the node shows when no image is presented (the node value of a zero image)."""
        self.blank = np.asarray(row, np.float64).ravel()

    def load(self, start: int, rows: np.ndarray) -> None:
        self.start, self.rows = start, np.asarray(rows, np.float64).reshape(len(rows), -1)

    def __call__(self, t: float) -> np.ndarray:
        index = round(t / DT) - 1 - self.start  # nengo's first step is t = dt
        return self.rows[index] if 0 <= index < len(self.rows) else self.blank


@dataclass
class BuiltNetwork:
    """A Nengo network for a SpikingNetwork, with the handles ``run`` needs."""

    network: Any  # nengo.Network
    source: SpikingNetwork
    node: Any  # input nengo.Node
    presenter: _Presenter
    host: Any  # off-chip nengo.Ensemble (host encoder, or binary relay)
    ensembles: list  # one per on-chip stage
    probes: list  # one per stage in `ensembles` (spikes, synapse=None)
    transforms: dict = field(default_factory=dict)  # ensemble -> nengo.Convolution feeding it
    relays: list = field(default_factory=list)  # (ensemble, relay_stage): one step of delay

    def node_rows(self, x: np.ndarray) -> np.ndarray:
        """Input node values for a batch: ``s - 0.5`` for the spikes ``s`` that enter the chip."""
        return self.source.encode(x, "nengo back end") - 0.5


def _transform(nengo, stage: Stage):
    if stage.kind == "dense":
        return nengo.Dense((stage.num_neurons, stage.in_size), init=stage.weights.T)
    if any(d != 1 for d in stage.dilation):
        raise ValueError(
            f"stage {stage.name!r}: dilation {stage.dilation} is not supported by "
            "nengo.Convolution; retrain with dilation_rate=1."
        )
    channels = stage.input_shape[-1]
    if stage.kind == "conv":
        kernel = stage.weights
    else:  # OR-pool: a ones window per channel, identity across channels
        kernel = np.zeros((*stage.pool_size, channels, channels), np.float32)
        kernel[..., np.arange(channels), np.arange(channels)] = 1.0
    return nengo.Convolution(
        n_filters=kernel.shape[-1],
        input_shape=stage.input_shape,
        kernel_size=kernel.shape[:-2],
        strides=stage.strides,
        padding=stage.padding,
        channels_last=True,
        init=kernel,
    )


def relay_stage(source: Stage, name: str) -> Stage:
    """A stage that repeats ``source``'s spikes one step later: an OR-pool of window 1
    (a dense identity for flat spikes), ``H(s - 0.5) = s``.

    Example:
        >>> a = Stage("a", "dense", (1,), (2,), np.ones((1, 2), "float32"))
        >>> relay_stage(a, "a.delay0").weights.tolist()
        [[1.0, 0.0], [0.0, 1.0]]
    """
    shape = source.output_shape
    if len(shape) == 1:
        return Stage(name, "dense", shape, shape, np.eye(shape[0], dtype=np.float32))
    return Stage(name, "pool", shape, shape, pool_size=(1,) * (len(shape) - 1))


def relay_neurons(net: SpikingNetwork) -> int:
    """Neurons of the relay populations that delay the edges of a DAG (0 for a chain).

    Example:
        >>> from whetstone.network import Stage, SpikingNetwork
        >>> a = Stage("a", "dense", (1,), (2,), np.ones((1, 2), "float32"))
        >>> b = Stage("b", "dense", (2,), (2,), np.ones((2, 2), "float32"))
        >>> c = Stage("c", "dense", (4,), (1,), np.ones((4, 1), "float32"), sources=(0, 1))
        >>> relay_neurons(SpikingNetwork((1,), [a, b, c]))
        2
    """
    return sum(
        edge.delay * net.stages[edge.source].num_neurons
        for index in range(len(net.stages))
        for edge in net.edges(index)
    )


def _ensemble(nengo, n: int, bias: np.ndarray, label: str):
    """``n`` step neurons driven through ``.neurons`` with gain 1: ``J = input + bias``."""
    return nengo.Ensemble(n, 1, neuron_type=neuron_type(), gain=np.ones(n), bias=bias, label=label)


def build_network(net: SpikingNetwork, *, seed: int = 0) -> BuiltNetwork:
    """Build the ``nengo.Network`` of ``net`` (used by the nengo and loihi back ends).

    Args:
        net: the network.
        seed: the Nengo network's seed (nothing here is random; it fixes the build).

    Example:
        >>> import numpy as np
        >>> from whetstone.network import Stage, SpikingNetwork
        >>> stage = Stage("d", "dense", (3,), (2,), np.ones((3, 2), "float32"))
        >>> built = build_network(SpikingNetwork((3,), [stage]))
        >>> [e.n_neurons for e in built.ensembles], built.host.n_neurons
        ([], 2)
    """
    nengo = require("nengo", "nengo")
    host_mode = net.host_stage is not None
    presenter = _Presenter(net.encoded_size)
    with nengo.Network(label=net.metadata.get("name", "whetstone"), seed=seed) as network:
        node = nengo.Node(presenter, size_out=presenter.width, label="input")
        # the host population's input is s - 0.5 for the spikes s entering the chip: bias 0
        n = presenter.width
        host = _ensemble(nengo, n, np.zeros(n), net.stages[0].name if host_mode else "relay")
        nengo.Connection(node, host.neurons, synapse=None)
        probes = [nengo.Probe(host.neurons, synapse=None)] if host_mode else []
        outputs = [host] if host_mode else []  # ensemble of each stage (the host: stage 0)
        ensembles, transforms, relays = [], {}, []
        for index, stage in enumerate(net.stages):
            if index == 0 and host_mode:
                continue
            bias = stage.full_bias().astype(np.float64).ravel() - stage.threshold
            ens = _ensemble(nengo, stage.num_neurons, bias, stage.name)
            for edge in net.edges(index):
                transform = _transform(nengo, edge.operator)
                if edge.source == INPUT:  # binary mode: the relay is the input itself
                    pre, synapse = host, None
                else:
                    pre, synapse = outputs[edge.source], 0
                    for k in range(edge.delay):  # one step per relay population
                        relay = relay_stage(net.stages[edge.source], f"{stage.name}.delay{k}")
                        ens_relay = _ensemble(
                            nengo, relay.num_neurons, np.full(relay.num_neurons, -0.5), relay.name
                        )
                        nengo.Connection(pre.neurons, ens_relay.neurons,
                                         transform=_transform(nengo, relay), synapse=0)  # fmt: skip
                        relays.append((ens_relay, relay))
                        pre = ens_relay
                nengo.Connection(pre.neurons, ens.neurons, transform=transform, synapse=synapse)
                if stage.kind != "dense":
                    transforms.setdefault(ens, transform)
            probes.append(nengo.Probe(ens.neurons, synapse=None))
            ensembles.append(ens)
            outputs.append(ens)
    built = BuiltNetwork(network, net, node, presenter, host, ensembles, probes, transforms, relays)
    presenter.set_blank(built.node_rows(np.zeros((1, *net.input_shape), np.float32))[0])
    return built


# ---------------------------------------------------------------- running


def stream(
    built: BuiltNetwork,
    sim,
    x: np.ndarray,
    offsets: list[int],
    chunk_steps: int = CHUNK_STEPS,
    progress=None,
) -> tuple[np.ndarray, np.ndarray]:
    """Present ``x`` one image per step; output spikes per image and spikes per stage.

    ``offsets[k]`` is how many steps after an image is presented probe ``k`` shows
    that image's spikes; the last probe is the output. ``progress`` (optional) is
    called with the number of images whose output is out, about ten times.
    """
    n = len(x)
    total = n + max(offsets)
    if progress is not None:
        chunk_steps = min(chunk_steps, max(1, math.ceil(total / 10)))
    counts = np.zeros(len(built.probes), np.int64)
    outputs = np.zeros((n, built.probes[-1].target.size_out), np.uint8)
    for start in range(0, total, chunk_steps):
        steps = min(chunk_steps, total - start)
        if start < n:  # the last chunks may only flush the pipeline
            built.presenter.load(start, built.node_rows(x[start : min(start + steps, n)]))
        sim.run_steps(steps)
        for k, (probe, offset) in enumerate(zip(built.probes, offsets, strict=True)):
            data = np.asarray(sim.data[probe]) != 0  # spikes of steps start .. start+steps-1
            images = np.arange(start, start + len(data)) - offset  # image of each step
            mine = (images >= 0) & (images < n)
            counts[k] += int(data[mine].sum())
            if k == len(built.probes) - 1:
                outputs[images[mine]] = data[mine]
        sim.clear_probes()
        if progress is not None:
            progress(min(n, max(0, start + steps - offsets[-1])))
    return outputs, counts


def stage_counts(net: SpikingNetwork, counts: np.ndarray) -> np.ndarray:
    """Spike counts per network stage (the binary relay's probe, if any, is dropped)."""
    return counts[-len(net.stages) :]


def result(net: SpikingNetwork, x, outputs, counts, compare_reference: bool, build_s: float,
           run_s: float, **info) -> BackendResult:  # fmt: skip
    """The ``BackendResult`` of a streamed run (shared by the Nengo and Loihi back ends)."""
    counts = stage_counts(net, counts)
    done = BackendResult(net.decode(outputs), outputs, counts, info, build_s, run_s)
    return compared(net, x, done) if compare_reference else done


# ---------------------------------------------------------------- export


def export_folder(
    net: SpikingNetwork,
    path,
    default: str,
    force: bool = False,
    x=None,
    y=None,
    min_agreement: float = exports.DEFAULT_MIN_AGREEMENT,
    **manifest,
) -> Path:
    """Write ``path/`` atomically (see whetstone.files): the network and its ``run.py``.

    ``network.h5``, ``export.json``, ``run.py`` (runs on ``default``: ``"nengo"`` or
    ``"loihi"``) and, with inputs ``x`` (labels ``y``), ``inputs.npz`` with the
    reference's decisions (:mod:`whetstone.backends.exports`); ``manifest``: more
    ``export.json`` entries.
    """
    with files.staged(path, force, folder=True) as staging:
        net.save(staging / "network.h5")
        shipped = {} if x is None else exports.ship(staging, net, x, y)
        exports.write_manifest(staging, default, net, min_agreement, **shipped, **manifest)
        (staging / "run.py").write_text(exports.template("run_nengo.py"))
    return Path(path)


# ---------------------------------------------------------------- back end


@register("nengo")
class NengoBackend:
    """Nengo reference simulator back end (``get("nengo")``)."""

    extra = "nengo"

    def is_available(self) -> bool:
        """Whether Nengo is installed."""
        try:
            require("nengo", self.extra)
        except ImportError:
            return False
        return True

    def build(self, net: SpikingNetwork, **options) -> Any:
        """The ``nengo.Network`` (options: see :func:`build_network`)."""
        return build_network(net, **options).network

    def offsets(self, built: BuiltNetwork) -> list[int]:
        """Steps from presenting an image to each probe showing its spikes."""
        return [depth - 1 for depth in built.source.depths[-len(built.probes) :]]

    def run(
        self,
        net: SpikingNetwork,
        x,
        *,
        compare_reference: bool = False,
        progress=None,
        chunk_steps: int = CHUNK_STEPS,
        **options,
    ) -> BackendResult:
        """Stream ``x`` through the network in Nengo's reference simulator.

        Args:
            net: the network; x: images of ``net.input_shape``.
            compare_reference: also run ``whetstone.simulate.run`` and fill
                ``agreement`` (see :func:`whetstone.backends.compared`).
            progress: called with the number of images done, about ten times.
            chunk_steps: steps between probe reads (memory vs overhead).
            options: passed to :func:`build_network`.
        """
        nengo = require("nengo", self.extra)
        x = net.check_input(x, "nengo back end")
        built = build_network(net, **options)
        started = time.perf_counter()
        # No decoder cache: nothing is written to ~/.cache/nengo (the network solves nothing).
        model = nengo.builder.Model(dt=DT, decoder_cache=nengo.cache.NoDecoderCache())
        with nengo.Simulator(built.network, dt=DT, model=model, progress_bar=False) as sim:
            build_s = time.perf_counter() - started
            started = time.perf_counter()
            offsets = self.offsets(built)
            outputs, counts = stream(built, sim, x, offsets, chunk_steps, progress)
        run_s = time.perf_counter() - started
        return result(net, x, outputs, counts, compare_reference, build_s, run_s,
                      latency=offsets[-1] + 1, dt=DT)  # fmt: skip

    def export(self, net: SpikingNetwork, path, *, force: bool = False, x=None, y=None) -> Path:
        """A folder with ``network.h5``, ``export.json`` and ``run.py`` (runs on Nengo).

        ``x`` (labels ``y``): inputs shipped with the reference's decisions, which
        ``python run.py`` runs and checks. An existing ``path`` is replaced only with
        ``force=True``.
        """
        return export_folder(net, path, "nengo", force, x, y, self.min_agreement)

    def load(self, path) -> SpikingNetwork:
        """The network of a folder :meth:`export` wrote (its ``network.h5``)."""
        return exports.load_network(path)

    def resources(self, net: SpikingNetwork) -> dict:
        """Ensembles, neurons and synapses of the Nengo network (the host population apart).

        Example:
            >>> from whetstone.network import Stage, SpikingNetwork
            >>> encoder = Stage("e", "dense", (3,), (2,), np.ones((3, 2), "float32"))
            >>> stage = Stage("d", "dense", (2,), (2,), np.ones((2, 2), "float32"))
            >>> NengoBackend().resources(SpikingNetwork((3,), [encoder, stage]))
            {'ensembles': 1, 'neurons': 2, 'synapses': 4, 'host_neurons': 2}
        """
        chip = net.chip_stages
        relays = relay_neurons(net)
        counts = {
            "ensembles": len(chip),
            "neurons": sum(stage.num_neurons for stage in chip),
            "synapses": sum(stage.num_synapses for stage in chip),
            "host_neurons": net.encoded_size,
        }
        return {**counts, "relay_neurons": relays} if relays else counts
