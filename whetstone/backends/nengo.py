"""Nengo back end: a SpikingNetwork as a ``nengo.Network`` run in Nengo's reference simulator.

Mapping (the same network also runs, unchanged, on Nengo-Loihi: see ``loihi.py``):

* **Neurons.** Each stage is a ``nengo.Ensemble`` of :class:`StepNeuron`, driven
  directly through ``.neurons`` with ``gain = 1`` and ``bias = b - theta``, so the
  input current is ``J = W s + b - theta``. ``StepNeuron.step`` writes
  ``output = (J >= 0) * amplitude / dt`` and nothing else: the type has no state
  variables (``state = {}``), so nothing is carried from one step to the next and the
  unit is the contract's memoryless ``H(W s + b - theta)``. ``amplitude = dt`` makes a
  spike the value 1. On Loihi the type is built as a compartment with full voltage
  decay and no refractory period (see ``loihi.py``).
* **Connections.** Dense stages are ``nengo.Dense`` transforms, convolutions are
  ``nengo.Convolution`` (never expanded to matrices), OR-pools are a
  ``nengo.Convolution`` with a ones kernel per channel (identity across channels) and
  threshold 0.5. Stage-to-stage connections use ``synapse=0`` (``Lowpass(0)``), which
  in Nengo is exactly a one-step delay (``y[t] = x[t-1]``, no filtering) and on Loihi
  is the same as ``synapse=None`` (the chip's own one-step axon delay): one step per
  stage, as the contract says.
* **Input.** A ``Node`` presents image ``i`` at step ``i`` (one new image per step,
  pipelined). With ``input_encoding == "host"`` the node is the host encoder: it
  computes stage 0's ``W x + b - theta`` with ``whetstone.simulate.preactivation``
  (the reference's own float32 arithmetic) and feeds it to stage 0's step neurons
  (``synapse=None``); with ``"binary"`` it feeds ``x - 0.5`` to a relay population of
  step neurons (spikes = the 0/1 input), which drives stage 0. The host-side
  population runs off chip on Loihi and sends its spikes to the chip.
* **Output.** The last stage's spikes are probed (``synapse=None``) and decoded on the
  host with the network's ``KeyDecoder`` / ``ReadoutDecoder``. Image ``i``'s output
  spikes appear ``net.latency - 1`` steps after it is presented; ``run`` matches them.

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

from whetstone import files, simulate
from whetstone.backends import BackendResult, exports, register, require
from whetstone.network import SpikingNetwork, Stage
from whetstone.simulate import preactivation

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
        """Memoryless threshold unit: ``output = (J >= 0) * amplitude / dt``; no state.

        ``loihi_vth`` is the compartment threshold used on Loihi (in units of J);
        the Nengo reference simulator ignores it.
        """

        state: ClassVar[dict] = {}
        spiking = True
        negative = False
        amplitude = NumberParam("amplitude", low=0, low_open=True)
        loihi_vth = NumberParam("loihi_vth", low=0, low_open=True)

        def __init__(self, amplitude=DT, loihi_vth=1.0, initial_state=None):
            super().__init__(initial_state)
            self.amplitude = amplitude
            self.loihi_vth = loihi_vth

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


def neuron_type(amplitude: float = DT, loihi_vth: float = 1.0):
    """A :class:`StepNeuron` instance (the class is created on first use).

    Example:
        >>> import numpy as np
        >>> out = np.zeros(3)
        >>> neuron_type().step(0.001, np.array([-0.1, 0.0, 0.2]), out); out.tolist()
        [0.0, 1.0, 1.0]
    """
    return _step_neuron_class()(amplitude=amplitude, loihi_vth=loihi_vth)


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

    def node_rows(self, x: np.ndarray) -> np.ndarray:
        """Input node values for a batch: stage 0's ``W x + b - theta`` or ``x - 0.5``."""
        net = self.source
        if net.input_encoding == "host":
            stage = net.stages[0]
            diff = preactivation(stage, x) - np.float32(stage.threshold)
            return diff.reshape(len(x), -1)
        return x.reshape(len(x), -1).astype(np.float64) - 0.5


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


def _ensemble(nengo, stage: Stage, vth_scale: float):
    bias = stage.full_bias().astype(np.float64).ravel() - stage.threshold
    n = stage.num_neurons
    w_max = 1.0 if stage.kind == "pool" else float(np.abs(stage.weights).max(initial=0.0))
    # Loihi threshold: one weight quantum (w_max / 255) keeps sub-threshold voltage tiny.
    vth = vth_scale * (w_max if w_max > 0 else 1.0) / 255.0
    return nengo.Ensemble(
        n,
        1,
        neuron_type=neuron_type(loihi_vth=vth),
        gain=np.ones(n),
        bias=bias,
        label=stage.name,
    )


def build_network(net: SpikingNetwork, *, vth_scale: float = 1.0, seed: int = 0) -> BuiltNetwork:
    """Build the ``nengo.Network`` of ``net`` (used by the nengo and loihi back ends).

    Args:
        net: the network.
        vth_scale: Loihi compartment threshold in weight quanta (``w_max / 255``).
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
    host_mode = net.input_encoding == "host"
    presenter = _Presenter(net.stages[0].num_neurons if host_mode else math.prod(net.input_shape))
    with nengo.Network(label=net.metadata.get("name", "whetstone"), seed=seed) as network:
        node = nengo.Node(presenter, size_out=presenter.width, label="input")
        # the host population's input already is W x + b - theta (or x - 0.5): bias 0
        n = presenter.width
        label = net.stages[0].name if host_mode else "relay"
        host = nengo.Ensemble(
            n, 1, neuron_type=neuron_type(), gain=np.ones(n), bias=np.zeros(n), label=label
        )
        chip_stages = net.stages[1:] if host_mode else net.stages
        nengo.Connection(node, host.neurons, synapse=None)
        probes = [nengo.Probe(host.neurons, synapse=None)] if host_mode else []
        pre, ensembles, transforms = host, [], {}
        for index, stage in enumerate(chip_stages):
            ens = _ensemble(nengo, stage, vth_scale)
            transform = _transform(nengo, stage)
            # relay -> stage 0 in binary mode: no delay (the relay is the input itself)
            synapse = None if (not host_mode and index == 0) else 0
            nengo.Connection(pre.neurons, ens.neurons, transform=transform, synapse=synapse)
            if stage.kind != "dense":
                transforms[ens] = transform
            probes.append(nengo.Probe(ens.neurons, synapse=None))
            ensembles.append(ens)
            pre = ens
    built = BuiltNetwork(network, net, node, presenter, host, ensembles, probes, transforms)
    presenter.set_blank(built.node_rows(np.zeros((1, *net.input_shape), np.float32))[0])
    return built


# ---------------------------------------------------------------- running


def stream(
    built: BuiltNetwork,
    sim,
    x: np.ndarray,
    offsets: list[int],
    chunk_steps: int = CHUNK_STEPS,
) -> tuple[np.ndarray, np.ndarray]:
    """Present ``x`` one image per step; output spikes per image and spikes per stage.

    ``offsets[k]`` is how many steps after an image is presented probe ``k`` shows
    that image's spikes; the last probe is the output.
    """
    n = len(x)
    total = n + max(offsets)
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
    return outputs, counts


def stage_counts(net: SpikingNetwork, counts: np.ndarray) -> np.ndarray:
    """Spike counts per network stage (the binary relay's probe, if any, is dropped)."""
    return counts[-len(net.stages) :]


def result(net: SpikingNetwork, x, outputs, counts, compare_reference: bool, build_s: float,
           run_s: float, **info) -> BackendResult:  # fmt: skip
    """The ``BackendResult`` of a streamed run (shared by the Nengo and Loihi back ends)."""
    predictions = simulate.decode(net, outputs)
    info = {
        "build_seconds": build_s,
        "run_seconds": run_s,
        "images_per_second": len(x) / run_s if run_s else float("inf"),
        **info,
    }
    if compare_reference:
        info.update(compare(net, x, predictions, outputs))
    return BackendResult(predictions, outputs, stage_counts(net, counts), info)


def compare(net: SpikingNetwork, x: np.ndarray, predictions: np.ndarray, spikes) -> dict:
    """Agreement with ``whetstone.simulate.run`` and the reference's ties."""
    ref = simulate.run(net, x)
    differ = ref.predictions != predictions
    spike_differ = (ref.output_spikes.reshape(len(x), -1) != spikes).any(axis=1)
    return {
        "reference_predictions": ref.predictions,
        "agreement": float(1.0 - differ.mean()) if len(x) else 1.0,
        "differing": int(differ.sum()),
        "differing_not_ties": int((differ & ~ref.tie_mask).sum()),
        "output_spikes_differing": int(spike_differ.sum()),
        "output_spikes_differing_not_ties": int((spike_differ & ~ref.tie_mask).sum()),
        "tie_images": int(ref.tie_mask.sum()),
        "ties": int(ref.ties.sum() + ref.decoder_ties),
        "reference_spike_counts": ref.spike_counts,
    }


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
        return list(range(len(built.probes)))

    def run(
        self,
        net: SpikingNetwork,
        x,
        compare_reference: bool = False,
        chunk_steps: int = CHUNK_STEPS,
        **options,
    ) -> BackendResult:
        """Stream ``x`` through the network in Nengo's reference simulator.

        Args:
            net: the network; x: images of ``net.input_shape``.
            compare_reference: also run ``whetstone.simulate.run`` and report
                agreement and ties in ``info``.
            chunk_steps: steps between probe reads (memory vs overhead).
            options: passed to :func:`build_network`.
        """
        nengo = require("nengo", self.extra)
        x = simulate.check_input(net, x, "nengo back end")
        built = build_network(net, **options)
        started = time.perf_counter()
        # No decoder cache: nothing is written to ~/.cache/nengo (the network solves nothing).
        model = nengo.builder.Model(dt=DT, decoder_cache=nengo.cache.NoDecoderCache())
        with nengo.Simulator(built.network, dt=DT, model=model, progress_bar=False) as sim:
            build_s = time.perf_counter() - started
            started = time.perf_counter()
            outputs, counts = stream(built, sim, x, self.offsets(built), chunk_steps)
        run_s = time.perf_counter() - started
        return result(net, x, outputs, counts, compare_reference, build_s, run_s,
                      latency=self.offsets(built)[-1] + 1, dt=DT)  # fmt: skip

    def export(self, net: SpikingNetwork, path, force: bool = False, x=None, y=None) -> Path:
        """A folder with ``network.h5``, ``export.json`` and ``run.py`` (runs on Nengo).

        ``x`` (labels ``y``): inputs shipped with the reference's decisions, which
        ``python run.py`` runs and checks. An existing ``path`` is replaced only with
        ``force=True``.
        """
        return export_folder(net, path, "nengo", force, x, y, exports.default_min_agreement(self))
