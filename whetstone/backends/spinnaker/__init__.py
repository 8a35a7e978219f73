"""SpiNNaker back end: a SpikingNetwork as a PyNN network for sPyNNaker, checked on NEST.

Every on-chip stage becomes one PyNN ``Population`` of ``IF_curr_delta`` cells (several
of at most :data:`MAX_POPULATION` neurons each where it is larger, and so does the input
source: sPyNNaker holds a presynaptic population's size in 16 bits); its
weights become two ``FromListConnector`` projections (``"excitatory"``: the positive
weights, ``"inhibitory"``: the negative ones, which PyNN wants negative for current-based
cells and sPyNNaker stores as magnitudes; on NEST each list is connected in one
``nest.Connect`` of arrays, the same connections), all with a delay of one time step,
so stage ``l`` sees the spikes stage ``l - 1`` emitted one step earlier and a new input
can enter every step. With ``input_encoding="host"`` stage 0
runs on the host (exactly as :func:`whetstone.simulate.run` does) and its spikes are
played in by a ``SpikeSourceArray``; with ``"binary"`` the 0/1 inputs are. Output
spikes are recorded and decoded on the host.

Neuron mapping (time step ``dt = 1 ms``; every stage's ``W s + b >= theta``):

* ``v_rest = 0``, ``tau_refrac = 0``, ``v_thresh = theta - b`` per neuron and
  ``v_reset = v_thresh - 1`` (NEST wants it below; with no memory its value is unused)
  (the bias enters through the threshold: no ``i_offset``, no bias source);
* ``tau_m = cm = 2**-10`` (ms, nF), so ``exp(-dt / tau_m) = exp(-1024)`` is exactly
  0 in double precision (NEST) and in s16.15 (SpiNNaker): nothing carries over from
  one step to the next, and ``R = tau_m / cm = 1`` exactly.

NEST's ``iaf_psc_delta`` (the cell behind PyNN's ``IF_curr_delta``) updates
``V = P30 (I + I_e) + P33 V + sum(w of spikes arriving now)`` with ``P33 =
exp(-h / tau_m) = 0`` and ``I = I_e = 0``, then fires when ``V >= V_th`` and resets;
with ``t_ref = 0`` it is never refractory. So ``V`` is this step's summed input and the
cell is ``H(W s - (theta - b))``. sPyNNaker's LIF (``neuron_model_lif_impl.h``)
computes ``alpha = input * R + v_rest`` and ``V = alpha - exp_TC (alpha - V)`` with
``exp_TC = 0`` and compares ``V >= v_thresh`` (``threshold_type_static.h``): the same
function in s16.15 fixed point (``exp_TC = expk(-1024)`` underflows to 0). Brian2 is
refused: PyNN's Brian2 cells fire on ``v > v_thresh`` and Brian2's default schedule
applies the leak after spikes are delivered and before the next threshold test, so a
delta input is erased before it is seen; a reordered schedule still disagreed with the
reference on deeper stages, so only NEST is offered as the software check.

Convolutions and OR-pools become connection lists built from the kernel with NumPy
(:func:`connections`), the same lists on NEST and on sPyNNaker, so the network checked
on NEST is the one mapped. sPyNNaker's ``ConvolutionConnector`` is not used: it needs
one 2-D population per channel and has no NEST counterpart.

sPyNNaker reads its config from ``~/.spynnaker.cfg`` and writes reports into the working
folder; :func:`spinnaker_config` points both at a fresh private temporary folder per run
(a virtual board: mapping without hardware), and writes nothing into the real HOME.

The only differences from the float32 reference are ties (``|pre - theta| < 1e-6``,
counted by :func:`whetstone.simulate.run`) on NEST; on SpiNNaker also the
16-bit weights: a projection's weights are stored as ``rint(|w| * 2**(15 - k))`` where
the ring-buffer shift ``k`` is chosen (through sPyNNaker's
``max_expected_summed_weight``) so that the largest possible summed input per synapse
type fits: nothing saturates, and :func:`quantisation` reports what rounds to zero or
loses precision and what that does to the predictions.

Example:
    >>> import numpy as np
    >>> from whetstone.network import Stage, SpikingNetwork
    >>> w = np.array([[1.0, -1.0], [0.5, 0.25]], "float32")
    >>> net = SpikingNetwork((2,), [Stage("d", "dense", (2,), (2,), w)],
    ...                      input_encoding="binary")
    >>> len(build_plan(net))  # the populations (see plan.py's example)
    1
    >>> result = get_backend().run(net, np.eye(2), simulator="nest")  # doctest: +SKIP
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from whetstone import files
from whetstone.backends import (
    BackendResult,
    MissingDependencyError,
    compared,
    exports,
    register,
)
from whetstone.backends.spinnaker.fixed_point import (
    _quantised_layers as _quantised_layers,  # tests read it
)
from whetstone.backends.spinnaker.fixed_point import (
    _ring_buffer_shift as _ring_buffer_shift,  # whetstone.quantize reads it
)
from whetstone.backends.spinnaker.fixed_point import (
    fixed_point_run,
    layer_spikes,
    quantisation,
)
from whetstone.backends.spinnaker.plan import (
    MAX_POPULATION,
    NEURONS_PER_CORE,
    ROW_LIMIT,
    Layer,
    MappingError,
    build_plan,
    connections,
    core_plan,
    encode,
    longest_row,
    piece_starts,
)
from whetstone.backends.spinnaker.pynn import (
    OFFSET,
    TAU_M,
    WHERE,
    _assemble,
    _import_simulator,
    _map,
    _setup,
    _simulate,
    _spike_matrix,
    spinnaker_config,
)
from whetstone.network import SpikingNetwork

__all__ = [
    "MAX_POPULATION",
    "NEURONS_PER_CORE",
    "NEURON_IMAGES_PER_RUN",
    "ROW_LIMIT",
    "TAU_M",
    "Layer",
    "MappingError",
    "PyNNNetwork",
    "SpiNNakerBackend",
    "build_plan",
    "connections",
    "core_plan",
    "encode",
    "fixed_point_run",
    "get_backend",
    "images_per_run",
    "longest_row",
    "piece_starts",
    "quantisation",
    "spinnaker_config",
]


@dataclass
class PyNNNetwork:
    """What :meth:`SpiNNakerBackend.build` gives: the PyNN network in its simulator."""

    sim: Any  # the pyNN.nest or pyNN.spiNNaker module, set up
    source: Any  # the SpikeSourceArray population of the encoded inputs
    populations: list  # one PyNN Population per on-chip stage, recording spikes
    # (an Assembly of several populations where a stage has more than MAX_POPULATION
    # neurons: sPyNNaker's limit; so is the source then)


@register("spinnaker")
class SpiNNakerBackend:
    """Build, run and export a SpikingNetwork as PyNN for sPyNNaker, NEST or Brian2."""

    extra = "spinnaker"
    exact_options: ClassVar[dict] = {
        "simulator": "nest"
    }  # the virtual board's fixed point rounds weights

    def is_available(self, simulator: str = "spinnaker") -> bool:
        """Whether PyNN and ``simulator`` are installed."""
        try:
            _import_simulator(simulator)
        except MissingDependencyError:
            return False
        return True

    def build(self, net: SpikingNetwork, simulator: str = "nest", x=None, **options) -> PyNNNetwork:
        """Set up ``simulator`` and create the network in it (see :class:`PyNNNetwork`).

        The caller runs ``built.sim.run(...)`` and ends with ``built.sim.end()``. ``x``
        (optional) gives the inputs played in by the ``SpikeSourceArray``.
        """
        sim = _import_simulator(simulator)
        plan = build_plan(net)
        spikes = np.zeros((0, net.encoded_size), np.uint8) if x is None else net.encode(x, WHERE)
        _setup(sim, simulator, options.get("threads", 1))
        source, populations = _assemble(sim, simulator, net, plan, spikes, options)
        return PyNNNetwork(sim, source.handle(sim), [p.handle(sim) for p in populations])

    def run(
        self,
        net: SpikingNetwork,
        x,
        *,
        compare_reference: bool = False,
        progress=None,
        simulator: str = "nest",
        **options,
    ) -> BackendResult:
        """Run inputs ``x`` (one per step, pipelined); predictions matched to inputs.

        ``simulator="nest"`` simulates the PyNN network (Brian2 is refused, see the
        module docstring). ``"spinnaker"`` maps it onto a virtual SpiNNaker board
        (``width``/``height`` chips; default one SpiNN-5 board; ``neurons_per_core``)
        and, as nothing executes there, gives the
        predictions of :func:`fixed_point_run` (what the chip computes); ``info`` holds
        the mapping and quantisation reports. On a real board, run the folder that
        :meth:`export` writes (``python run.py --simulator spinnaker``).

        ``progress`` (optional): called with the number of images done so far while
        one network is simulated in a few steps (a progress bar needs no rebuilds).
        ``compare_reference``: fill ``agreement`` (:func:`whetstone.backends.compared`).
        ``threads`` (NEST, default 1): NEST's threads; they change the order in which a
        neuron's inputs are summed, so results can differ on ties only.
        ``images_per_run`` (NEST): images per simulation; more are run in several, each on
        a fresh network. By default :func:`images_per_run` bounds the memory that the input
        spike trains and the recorded spikes take (a 10,000-image CIFAR-10 convnet run in
        one went past 22 GB).
        """
        x = net.check_input(x, WHERE)
        result = self._run(net, x, simulator, progress, options)
        return compared(net, x, result) if compare_reference else result

    def _run(self, net, x, simulator, progress, options) -> BackendResult:
        plan = build_plan(net)
        if simulator == "spinnaker":
            return self._run_virtual(net, x, plan, options)
        per_run = options.get("images_per_run") or images_per_run(net, plan)
        if not isinstance(per_run, int) or per_run < 1:
            raise ValueError(f"images_per_run={per_run!r}: give a whole number of images >= 1.")
        parts, seconds = [], np.zeros(2)
        for first in range(0, len(x), per_run):
            done = None if progress is None else partial(_add, progress, first)
            part, part_seconds = self._simulated(
                net, x[first : first + per_run], simulator, plan, done, options
            )
            parts.append(part)
            seconds += part_seconds
        matrices = [np.concatenate(layer) for layer in zip(*parts, strict=True)]
        result = self._result(net, matrices, simulator, runs=len(parts))
        result.build_seconds, result.run_seconds = seconds
        return result

    def _simulated(self, net, x, simulator, plan, progress, options):
        """Spike matrices of one simulation of ``x``, and its build and run seconds."""
        sim = _import_simulator(simulator)
        spikes = net.encode(x, WHERE)
        started = time.perf_counter()
        _setup(sim, simulator, options.get("threads", 1))
        try:
            _, populations = _assemble(sim, simulator, net, plan, spikes, options)
            built = time.perf_counter()
            depth = plan[-1].depth if plan else 0  # no population: all on the host
            _simulate(sim, len(x), depth + OFFSET, progress)
            ran = time.perf_counter()
            matrices = [spikes] + [
                _spike_matrix(p, len(x), layer.depth)
                for layer, p in zip(plan, populations, strict=True)
            ]
        finally:
            sim.end()
        return matrices, (built - started, ran - built)

    def _result(self, net, matrices, simulator, **info) -> BackendResult:
        outputs = matrices[-1].reshape(len(matrices[-1]), *net.output_shape)
        counts = [m.sum(dtype=np.int64) for m in matrices]
        if net.input_encoding == "binary":
            counts = counts[1:]
        return BackendResult(
            predictions=net.decode(outputs),
            output_spikes=matrices[-1],
            spike_counts=np.asarray(counts, np.int64),
            info={"simulator": simulator, **info},
        )

    def _run_virtual(self, net, x, plan, options) -> BackendResult:
        mapping = _map(net, plan, x, options)
        started = time.perf_counter()
        source = net.encode(x, WHERE)
        matrices = [source, *layer_spikes(plan, source)]
        result = self._result(net, matrices, "spinnaker", mapping=mapping)
        result.build_seconds = mapping["seconds"]
        result.run_seconds = time.perf_counter() - started
        result.info["predictions_from"] = "fixed-point model (virtual board: nothing executed)"
        result.info["quantisation"] = quantisation(net)
        return result

    def map(self, net: SpikingNetwork, x=None, **options) -> dict:
        """Cores and chips sPyNNaker needs for ``net`` on a virtual board (no hardware).

        ``x``: inputs to play in (default: one spike from every source neuron);
        ``width``/``height``: machine size in chips (e.g. 8 x 8, one SpiNN-5 board;
        default: sPyNNaker sizes the virtual machine to fit);
        ``neurons_per_core``. Warns when the 16-bit weights lose precision on more
        than ``precision_warning`` (default 1%) of the synapses.
        """
        report = _map(net, build_plan(net), x, options)
        self._warn_precision(net, options.get("precision_warning", 0.01))
        return report

    def load(self, path) -> SpikingNetwork:
        """The network of a folder :meth:`export` wrote (its ``network.h5``)."""
        return exports.load_network(path)

    def resources(self, net: SpikingNetwork, **options) -> dict:
        """The back ends' common name for :meth:`map` (``whetstone inspect`` shows it)."""
        return self.map(net, **options)

    @staticmethod
    def _warn_precision(net, limit: float) -> dict:
        report = quantisation(net)
        if report["lossy_fraction"] > limit:
            warnings.warn(
                f"SpiNNaker's 16-bit weights lose more than {report['loss_threshold']:.0%} of "
                f"the value of {report['lossy_fraction']:.2%} of the synapses "
                f"({report['rounded_to_zero']} round to zero); check the accuracy with "
                "whetstone.backends.spinnaker.quantisation(net, x).",
                stacklevel=3,
            )
        return report

    def export(
        self,
        net: SpikingNetwork,
        path,
        *,
        force: bool = False,
        x=None,
        y=None,
        neurons_per_core: int | None = None,
        overwrite: bool = False,
    ) -> Path:
        """Write a folder with ``run.py`` (standalone PyNN) and ``network.npz`` atomically.

        ``python run.py`` runs it on NEST here, ``--simulator spinnaker`` on an attached
        board (with the neurons per core of :func:`core_plan`, stored per population: a
        network whose synapse rows cannot fit is refused here, with the numbers). ``x``
        (optional, with labels ``y``): inputs shipped in ``inputs.npz`` with their
        encoded spikes and the reference's decisions (the script's default input and
        check; see :mod:`whetstone.backends.exports`). An existing ``path`` is replaced
        only with ``force=True`` (``overwrite`` is its old name).
        """
        net.on_chip("spinnaker export")
        plan = build_plan(net)
        cores = core_plan(plan, neurons_per_core)
        with files.staged(path, force or overwrite, folder=True) as staging:
            _write_export(net, staging, x, y=y, cores=cores)
        return Path(path)


NEURON_IMAGES_PER_RUN = 200_000_000
"""Source and population neurons times images that one NEST simulation may hold: its
input spike trains and recorded spikes grow with both. On a CIFAR-10 convnet with a
64-filter first layer (113,664 neurons: 10,000 images in 6 parts) the benchmark process
stayed under 10 GB, where one simulation of every image went past 22 GB."""


def images_per_run(net: SpikingNetwork, plan: list | None = None) -> int:
    """How many images one simulation runs: ``NEURON_IMAGES_PER_RUN`` over the neurons.

    Example:
        >>> import numpy as np
        >>> from whetstone.network import Stage, SpikingNetwork
        >>> w = np.ones((1000, 1000), "float32")
        >>> net = SpikingNetwork((1000,), [Stage("d", "dense", (1000,), (1000,), w)],
        ...                      input_encoding="binary")
        >>> images_per_run(net)   # 2,000 neurons
        100000
    """
    plan = build_plan(net) if plan is None else plan
    neurons = net.encoded_size + sum(layer.size for layer in plan)
    return max(1, NEURON_IMAGES_PER_RUN // max(neurons, 1))


def _add(progress, first: int, done: int) -> None:
    progress(first + done)


def get_backend() -> SpiNNakerBackend:
    """The registered instance."""
    from whetstone.backends import get

    return get("spinnaker")


# ---------------------------------------------------------------- export


def _chain_only(net: SpikingNetwork, what: str) -> None:
    """Refuse a DAG where only chains are supported yet, saying what to use instead."""
    if not net.is_chain:
        raise NotImplementedError(
            f"spinnaker back end: {what} handles chains of stages only, and this network "
            "is a DAG (stages with several sources or delayed edges); run it on NEST "
            "(simulator='nest'), where edges keep their delays."
        )


def _write_export(net: SpikingNetwork, folder: Path, x, y=None, cores=None) -> None:
    """network.npz, network.h5, export.json, run.py and (with ``x``) inputs.npz."""
    _chain_only(net, "export (run.py)")
    plan = build_plan(net)
    cores = cores or core_plan(plan)
    arrays = {"num_layers": np.array(len(plan))}
    for i, (layer, entry) in enumerate(zip(plan, cores, strict=True)):
        arrays[f"thresholds_{i}"] = layer.thresholds
        arrays[f"exc_{i}"], arrays[f"inh_{i}"] = layer.exc, layer.inh
        arrays[f"max_summed_{i}"] = np.array(layer.max_summed)
        arrays[f"neurons_per_core_{i}"] = np.array(entry["neurons_per_core"])
    decoder = net.decoder
    if decoder is not None and hasattr(decoder, "key"):
        arrays["key"] = decoder.key
    elif decoder is not None:
        arrays["readout_weights"], arrays["readout_bias"] = decoder.weights, decoder.bias
    arrays["source_size"] = np.array(net.encoded_size)
    np.savez_compressed(folder / "network.npz", **arrays)
    shipped = {}
    if x is not None:
        shipped = exports.ship(folder, net, x, y, spikes=net.encode(x, WHERE))
    net.save(folder / "network.h5")
    exports.write_manifest(
        folder, "spinnaker", net, exports.default_min_agreement(get_backend()),
        first_step=OFFSET, cores=sum(e["cores"] for e in cores), **shipped,
    )  # fmt: skip
    (folder / "run.py").write_text(exports.template("run_spinnaker.py"))
