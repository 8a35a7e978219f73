"""SpiNNaker back end: a SpikingNetwork as a PyNN network for sPyNNaker, checked on NEST.

Every on-chip stage becomes one PyNN ``Population`` of ``IF_curr_delta`` cells; its
weights become two ``FromListConnector`` projections (``"excitatory"``: the positive
weights, ``"inhibitory"``: the negative ones, which PyNN wants negative for current-based
cells and sPyNNaker stores as magnitudes), all with a delay of
one time step, so stage ``l`` sees the spikes stage ``l - 1`` emitted one step
earlier and a new input can enter every step. With ``input_encoding="host"`` stage 0
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
    >>> plan = build_plan(net)
    >>> plan[0].thresholds.tolist(), plan[0].exc[:, 2].tolist(), plan[0].inh[:, 2].tolist()
    ([0.5, 0.5], [1.0, 0.5, 0.25], [1.0])
    >>> result = get_backend().run(net, np.eye(2), simulator="nest")  # doctest: +SKIP
"""

from __future__ import annotations

import atexit
import contextlib
import math
import os
import shutil
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from whetstone import files, simulate
from whetstone.backends import BackendResult, MissingDependencyError, exports, register, require
from whetstone.network import SpikingNetwork, Stage, output_length, same_padding

__all__ = [
    "NEURONS_PER_CORE",
    "ROW_LIMIT",
    "TAU_M",
    "Layer",
    "MappingError",
    "SpiNNakerBackend",
    "build_plan",
    "connections",
    "core_plan",
    "encode",
    "fixed_point_run",
    "get_backend",
    "longest_row",
    "quantisation",
]

TAU_M = 2.0**-10
"""Membrane time constant (ms) and capacitance (nF): ``exp(-1 / TAU_M)`` is 0."""
DT = 1.0  # ms
OFFSET = 2  # input i's spikes leave the source at (i + OFFSET) dt (NEST needs t > dt)
SIMULATORS = {"nest": "pyNN.nest", "spinnaker": "pyNN.spiNNaker"}
EXTRAS = {"nest": "nest", "spinnaker": "spinnaker"}
WEIGHT_BITS = 16
FRACTION_BITS = 15  # s16.15 (REAL) for thresholds and membrane voltage


ROW_LIMIT = 256
"""sPyNNaker's longest synapse row (``POP_TABLE_MAX_ROW_LENGTH``): the synapses of one
projection from one source neuron onto the neurons of one core."""
NEURONS_PER_CORE = 256
"""sPyNNaker's default, and largest, number of ``IF_curr_delta`` neurons per core."""
CHIPS_PER_BOARD = 48  # SpiNN-5


class MappingError(RuntimeError, ValueError):
    """sPyNNaker could not (or would not) partition, place or route the network.

    A ``ValueError`` too: a network too large for the target is bad input (the command
    line exits with status 2, as for Loihi's partition errors).
    """


# ---------------------------------------------------------------- connection lists


def _axis_index(n: int, k: int, s: int, d: int, padding: str) -> np.ndarray:
    """(outputs, k) input index of each tap of each output position (may be outside)."""
    before = same_padding(n, k, s, d)[0] if padding == "same" else 0
    starts = np.arange(output_length(n, k, s, d, padding)) * s - before
    return starts[:, None] + np.arange(k)[None, :] * d


def _window_pairs(stage: Stage) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Flat input position, output position and tap of every in-bounds window tap."""
    spatial = stage.input_shape[:-1]
    rank = len(spatial)
    pre, post, tap, valid = 0, 0, 0, True
    for axis, (n, k, s, d) in enumerate(
        zip(spatial, stage.window, stage.strides, stage.dilation, strict=True)
    ):
        index = _axis_index(n, k, s, d, stage.padding)  # (outputs, k)
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

    @property
    def max_summed(self) -> tuple[float, float]:
        """Largest total excitatory and inhibitory input one neuron can receive."""
        return tuple(
            float(np.bincount(rows[:, 1].astype(np.int64), rows[:, 2], self.size).max(initial=0))
            for rows in (self.exc, self.inh)
        )


def _first_on_chip(net: SpikingNetwork) -> int:
    return 1 if net.input_encoding == "host" else 0


def build_plan(net: SpikingNetwork) -> list[Layer]:
    """The on-chip populations of ``net`` (stage 0 stays on the host when encoded there)."""
    layers = []
    for stage in net.stages[_first_on_chip(net) :]:
        rows = connections(stage)
        negative = rows[:, 2] < 0
        inh = rows[negative]
        inh[:, 2] *= -1
        bias = stage.full_bias().ravel().astype(np.float64)
        thresholds = np.float64(stage.threshold) - bias
        layers.append(Layer(stage.name, stage.num_neurons, thresholds, rows[~negative], inh))
    return layers


def _source_spikes(net: SpikingNetwork, x: np.ndarray) -> np.ndarray:
    """``(n, width)`` spikes that enter the first on-chip population."""
    x = simulate.check_input(net, x, "spinnaker back end")
    if net.input_encoding == "binary":
        return x.reshape(len(x), -1).astype(np.uint8)
    stage = net.stages[0]
    pre = simulate.preactivation(stage, x) - np.float32(stage.threshold)
    return (pre >= 0).reshape(len(x), -1).astype(np.uint8)


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
    return _source_spikes(net, x)


def _source_size(net: SpikingNetwork) -> int:
    """Number of source neurons (host-encoder outputs or binary inputs)."""
    return net.stages[0].num_neurons if net.input_encoding == "host" else net.stages[0].in_size


def _spike_times(spikes: np.ndarray) -> list[list[float]]:
    """Per source neuron, the times of its spikes: sample ``i`` at ``(i + OFFSET) dt``."""
    sample, neuron = np.nonzero(spikes)
    order = np.argsort(neuron, kind="stable")
    times = (sample[order] + float(OFFSET)) * DT
    splits = np.cumsum(np.bincount(neuron, minlength=spikes.shape[1]))[:-1]
    return [list(t) for t in np.split(times, splits)]


# ---------------------------------------------------------------- fixed point


def _ring_buffer_shift(max_summed: float) -> int:
    """sPyNNaker's shift for a largest summed weight (``get_ring_buffer_shifts``)."""
    if max_summed <= 0:
        return 0
    shift = max(0, math.ceil(math.log2(max_summed)))
    return shift + 1 if 2**shift <= max_summed else shift


def _quantise(rows: np.ndarray, shift: int) -> tuple[np.ndarray, np.ndarray]:
    """Stored 16-bit weight integers and the weights they stand for."""
    scale = 2.0 ** (WEIGHT_BITS - 1 - shift)
    stored = np.rint(rows[:, 2] * scale)
    return stored, np.minimum(stored, 2**WEIGHT_BITS - 1) / scale


def _quantised_layers(plan: list[Layer]) -> list[Layer]:
    out = []
    for layer in plan:
        rows = []
        for part, summed in zip((layer.exc, layer.inh), layer.max_summed, strict=True):
            q = part.copy()
            q[:, 2] = _quantise(part, _ring_buffer_shift(summed))[1]
            rows.append(q)
        thresholds = np.rint(layer.thresholds * 2.0**FRACTION_BITS) / 2.0**FRACTION_BITS
        out.append(Layer(layer.name, layer.size, thresholds, *rows))
    return out


def _layer_step(layer: Layer, spikes: np.ndarray) -> np.ndarray:
    total = np.zeros((len(spikes), layer.size))
    for rows, sign in ((layer.exc, 1.0), (layer.inh, -1.0)):
        pre, post = rows[:, 0].astype(np.int64), rows[:, 1].astype(np.int64)
        matrix = np.zeros((spikes.shape[1], layer.size))
        np.add.at(matrix, (pre, post), sign * rows[:, 2])
        total += spikes @ matrix
    return (total >= layer.thresholds).astype(np.uint8)


def fixed_point_run(net: SpikingNetwork, x) -> tuple[np.ndarray, np.ndarray]:
    """Predictions and output spikes with SpiNNaker's 16-bit weights and s16.15 thresholds.

    Exact for what the chip computes: stored weights are multiples of ``2**(shift-15)``
    and their sums stay below the ring buffer's range, so the float64 sums are exact.
    """
    spikes = _source_spikes(net, x)
    for layer in _quantised_layers(build_plan(net)):
        spikes = _layer_step(layer, spikes)
    predictions = simulate.decode(net, spikes.reshape(len(spikes), *net.output_shape))
    return np.asarray(predictions, np.int64), spikes


def quantisation(net: SpikingNetwork, x=None, loss: float = 0.05) -> dict:
    """What SpiNNaker's weight storage does to ``net``: per population and in total.

    Reports each population's ring-buffer shifts, weights that round to zero, that
    saturate (none by construction), that lose more than ``loss`` of their value, and
    the largest error; with inputs ``x`` also how many predictions change.

    Example:
        >>> w = np.array([[1.0, 1e-6]], "float32")
        >>> net = SpikingNetwork((1,), [Stage("d", "dense", (1,), (2,), w)],
        ...                      input_encoding="binary")
        >>> report = quantisation(net)
        >>> report["synapses"], report["rounded_to_zero"], report["lossy_fraction"]
        (2, 1, 0.5)
    """
    layers, totals = [], {"synapses": 0, "rounded_to_zero": 0, "saturated": 0, "lossy": 0}
    for layer in build_plan(net):
        entry = {"name": layer.name, "neurons": layer.size, "max_abs_error": 0.0}
        for kind, rows, summed in zip(("exc", "inh"), (layer.exc, layer.inh), layer.max_summed,
                                      strict=True):  # fmt: skip
            shift = _ring_buffer_shift(summed)
            stored, value = _quantise(rows, shift)
            error = np.abs(value - rows[:, 2])
            counts = {
                "synapses": len(rows),
                "rounded_to_zero": int((stored == 0).sum()),
                "saturated": int((stored > 2**WEIGHT_BITS - 1).sum()),
                "lossy": int((error > loss * rows[:, 2]).sum()),
            }
            entry[kind] = {"shift": shift, "resolution": 2.0 ** (shift - 15), **counts}
            entry["max_abs_error"] = max(entry["max_abs_error"], float(error.max(initial=0)))
            for key, value_ in counts.items():
                totals[key] += value_
        layers.append(entry)
    report = {**totals, "lossy_fraction": totals["lossy"] / max(totals["synapses"], 1)}
    report.update(loss_threshold=loss, layers=layers)
    if x is not None:
        reference = simulate.run(net, x)
        fixed = fixed_point_run(net, x)[0]
        changed = fixed != reference.predictions
        report["predictions_changed"] = int(changed.sum())
        report["changed_samples"] = np.nonzero(changed)[0].tolist()[:50]
    return report


# ---------------------------------------------------------------- simulators


def _config_root() -> Path:
    """A fresh private folder (mode 0700) for one run's sPyNNaker config and reports.

    sPyNNaker writes provenance from its own exit handlers, so the folder is removed
    when the process exits, after those handlers (registered later, so run earlier).
    """
    root = Path(tempfile.mkdtemp(prefix="whetstone-spynnaker-"))
    _CONFIG_ROOTS.append(root)
    return root


_CONFIG_ROOTS: list[Path] = []


@atexit.register
def _remove_config_roots() -> None:
    for root in _CONFIG_ROOTS:
        shutil.rmtree(root, ignore_errors=True)


@contextlib.contextmanager
def spinnaker_config(width: int | None = None, height: int | None = None):
    """Point sPyNNaker at a private, per-run virtual-board config (nothing written to HOME).

    sPyNNaker offers no way to name its config file: it reads ``.spynnaker.cfg`` from
    the site and user config folders and from ``~``, refuses to run when two are
    found, and writes a template into ``~`` when none is. So while active, ``HOME``
    and ``XDG_CONFIG_HOME`` point into a fresh private temporary folder that holds
    ``.spynnaker.cfg`` (``virtual_board = True``, SpiNN-5 boards; a machine of
    ``width`` x ``height`` chips, or by default one sPyNNaker sizes to fit) and
    receives the reports; both are restored afterwards.

    Example:
        >>> with spinnaker_config() as folder:
        ...     "virtual_board = True" in (folder / "config" / ".spynnaker.cfg").read_text()
        True
    """
    root = _config_root()
    home, config = root / "home", root / "config"
    home.mkdir()
    config.mkdir()
    size = f"width = {width}\nheight = {height}\n" if width and height else ""
    (config / ".spynnaker.cfg").write_text(
        f"[Machine]\nvirtual_board = True\nversion = 5\n{size}"
        f"[Reports]\ndefault_report_file_path = {root / 'reports'}\nmax_reports_kept = 3\n"
    )
    saved = {key: os.environ.get(key) for key in ("HOME", "XDG_CONFIG_HOME")}
    os.environ.update(HOME=str(home), XDG_CONFIG_HOME=str(config))
    try:
        yield root
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _import_simulator(simulator: str):
    if simulator == "brian2":
        raise NotImplementedError(
            "spinnaker back end: simulator='brian2' is not supported: PyNN's Brian2 "
            "IF_curr_delta integrates the leak before spikes are delivered and thresholds "
            "with '>', and even with a reordered schedule its spike timing did not match the "
            "reference exactly. Use simulator='nest' (pip install 'whetstone-snn[nest]')."
        )
    if simulator not in SIMULATORS:
        raise ValueError(
            f"spinnaker back end: simulator must be one of {sorted(SIMULATORS)}, got {simulator!r}."
        )
    require("pyNN", EXTRAS[simulator])
    if simulator == "nest":
        require("nest", "nest")
    if simulator == "spinnaker":
        require("spynnaker", "spinnaker")
    return require(SIMULATORS[simulator], EXTRAS[simulator])


def _setup(sim, simulator: str) -> None:
    if simulator == "nest":
        sim.setup(timestep=DT, min_delay=DT, spike_precision="on_grid", verbosity="error")
    else:
        sim.setup(timestep=DT)


def _population(sim, simulator: str, layer: Layer, options: dict):
    thresholds = layer.thresholds
    cell = sim.IF_curr_delta(
        tau_m=TAU_M, cm=TAU_M, v_rest=0.0, v_reset=thresholds - 1.0, tau_refrac=0.0,
        i_offset=0.0, v_thresh=thresholds,
    )  # fmt: skip
    kwargs = {}
    if simulator == "spinnaker":
        extra = {"max_expected_summed_weight": [max(m, 1e-12) for m in layer.max_summed]}
        if options.get("neurons_per_core"):
            extra["neurons_per_core"] = int(options["neurons_per_core"])
        kwargs["additional_parameters"] = extra
    population = sim.Population(layer.size, cell, label=layer.name,
                                **kwargs)  # fmt: skip
    return population


def _project(sim, pre, post, layer: Layer) -> None:
    """Two projections; inhibitory weights negative (PyNN's convention for current cells)."""
    for rows, receptor, sign in ((layer.exc, "excitatory", 1), (layer.inh, "inhibitory", -1)):
        if len(rows):
            rows = rows * np.array([1.0, 1.0, sign])
            connector = sim.FromListConnector(rows, column_names=["weight"])
            synapse = sim.StaticSynapse(delay=DT)
            sim.Projection(pre, post, connector, synapse, receptor_type=receptor)


def _assemble(sim, simulator: str, net: SpikingNetwork, plan, spikes, options: dict):
    """Source and populations of ``net`` in the current PyNN simulator."""
    source = sim.Population(
        spikes.shape[1], sim.SpikeSourceArray(spike_times=_spike_times(spikes)), label="input"
    )
    populations, pre = [], source
    for layer in plan:
        population = _population(sim, simulator, layer, options)
        _project(sim, pre, population, layer)
        population.record("spikes")
        populations.append(population)
        pre = population
    return source, populations


def _simulate(sim, n: int, extra: int, progress=None, chunks: int = 10) -> None:
    """Run ``n + extra`` steps, in ``chunks`` parts when ``progress`` wants reports.

    Example:
        >>> class Sim:
        ...     def run(self, t): print("run", t)
        >>> _simulate(Sim(), 4, 3, progress=lambda done: print("done", done), chunks=2)
        run 4.0
        done 1
        run 3.0
        done 4
    """
    total = n + extra
    if progress is None:
        sim.run(total * DT)
        return
    bounds = np.linspace(0, total, min(chunks, total) + 1).round().astype(int)
    for stop, steps in zip(bounds[1:], np.diff(bounds), strict=True):
        sim.run(float(steps) * DT)
        progress(int(min(n, max(0, stop - extra))))  # images whose output is out


def _spike_matrix(population, n: int, depth: int) -> np.ndarray:
    """``(n, size)`` spikes of a population matched to inputs by its depth."""
    out = np.zeros((n, population.size), np.uint8)
    trains = population.get_data("spikes", clear=False).segments[0].spiketrains
    for train in trains:
        sample = np.rint(np.asarray(train.magnitude) / DT).astype(np.int64) - OFFSET - depth
        sample = sample[(sample >= 0) & (sample < n)]
        out[sample, int(train.annotations["source_index"])] = 1
    return out


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
    core = rows[:, 1].astype(np.int64) // neurons_per_core
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
        out.append({**entry, "cores": math.ceil(layer.size / n), "longest_row": longest})
    return out


def _remedy(error: Exception) -> str:
    """What to change, in sPyNNaker's terms, for a mapping failure."""
    if "RowTooBig" in type(error).__name__:
        return (
            "Reduce the number of neurons per core (neurons_per_core=N, at most "
            f"{NEURONS_PER_CORE}), or the size of the target population."
        )
    return (
        "Use a bigger machine (width/height in chips; None sizes it to fit), reduce the "
        "number of neurons per core (neurons_per_core=N), or shrink the network."
    )


def _placements_report(populations) -> dict:
    from pacman.data import PacmanDataView

    machine = PacmanDataView.get_machine()
    labels = {p.label for p in populations}
    chips, app_chips, cores, per_population = set(), set(), 0, {}
    for placement in PacmanDataView.iterate_placemements():
        chips.add((placement.x, placement.y))
        cores += 1
        app = getattr(placement.vertex, "app_vertex", None)
        label = getattr(app, "label", None)
        if label in labels or label == "input":
            entry = per_population.setdefault(label, {"cores": 0, "neurons_per_core": 0})
            entry["cores"] += 1
            atoms = placement.vertex.vertex_slice.n_atoms
            entry["neurons_per_core"] = max(entry["neurons_per_core"], atoms)
            app_chips.add((placement.x, placement.y))
    boards = {_board(machine, xy) for xy in app_chips}
    return {
        "cores": sum(e["cores"] for e in per_population.values()),
        "cores_including_system": cores,
        "chips": len(app_chips),
        "chips_including_system": len(chips),
        "boards": len(boards),
        "boards_in_machine": math.ceil(machine.n_chips / CHIPS_PER_BOARD),
        "populations": per_population,
    }


def _board(machine, xy: tuple[int, int]) -> tuple[int, int]:
    chip = machine[xy]
    return chip.nearest_ethernet_x, chip.nearest_ethernet_y


def _map(net: SpikingNetwork, plan, x, options: dict) -> dict:
    sim = _import_simulator("spinnaker")
    # without inputs, one spike per source neuron: sPyNNaker sizes its buffers from these
    spikes = np.ones((1, _source_size(net)), np.uint8) if x is None else _source_spikes(net, x)
    cores = core_plan(plan, options.get("neurons_per_core"))
    started = time.perf_counter()
    with spinnaker_config(options.get("width"), options.get("height")):
        _setup(sim, "spinnaker")
        try:
            _, populations = _assemble(sim, "spinnaker", net, plan, spikes, options)
            sim.run((len(spikes) + len(plan) + OFFSET) * DT)
            report = _placements_report(populations)
            for entry in cores:
                report["populations"][entry["population"]]["longest_row"] = entry["longest_row"]
            report["row_limit"] = ROW_LIMIT
        except Exception as error:
            if type(error).__module__.split(".")[0] in ("pacman", "spinn_front_end_common",
                                                         "spynnaker", "spinn_machine"):  # fmt: skip
                raise MappingError(
                    f"sPyNNaker could not map network ({net.num_neurons} neurons, "
                    f"{net.num_synapses} synapses) onto the virtual SpiNN-5 machine "
                    f"(width={options.get('width')}, height={options.get('height')} chips; "
                    f"None: sized to fit): {type(error).__name__}: {error} {_remedy(error)}"
                ) from error
            raise
        finally:
            with contextlib.suppress(Exception):
                sim.end()
    report["seconds"] = time.perf_counter() - started
    return report


@register("spinnaker")
class SpiNNakerBackend:
    """Build, run and export a SpikingNetwork as PyNN for sPyNNaker, NEST or Brian2."""

    extra = "spinnaker"

    def is_available(self, simulator: str = "spinnaker") -> bool:
        """Whether PyNN and ``simulator`` are installed."""
        try:
            _import_simulator(simulator)
        except MissingDependencyError:
            return False
        return True

    def build(self, net: SpikingNetwork, simulator: str = "nest", x=None, **options):
        """Set up ``simulator`` and create the network; returns ``(sim, source, populations)``.

        The caller runs ``sim.run(...)`` and ends with ``sim.end()``. ``x`` (optional)
        gives the inputs played in by the ``SpikeSourceArray``.
        """
        sim = _import_simulator(simulator)
        plan = build_plan(net)
        spikes = _source_spikes(net, np.zeros((0, *net.input_shape)) if x is None else x)
        _setup(sim, simulator)
        return (sim, *_assemble(sim, simulator, net, plan, spikes, options))

    def run(
        self, net: SpikingNetwork, x, simulator: str = "nest", progress=None, **options
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
        """
        x = simulate.check_input(net, x, "spinnaker back end")
        plan = build_plan(net)
        if simulator == "spinnaker":
            return self._run_virtual(net, x, plan, options)
        sim = _import_simulator(simulator)
        spikes = _source_spikes(net, x)
        started = time.perf_counter()
        _setup(sim, simulator)
        try:
            _, populations = _assemble(sim, simulator, net, plan, spikes, options)
            built = time.perf_counter()
            _simulate(sim, len(x), len(plan) + OFFSET, progress)
            ran = time.perf_counter()
            matrices = [spikes] + [
                _spike_matrix(p, len(x), depth) for depth, p in enumerate(populations, 1)
            ]
        finally:
            sim.end()
        return self._result(net, matrices, simulator, build_s=built - started, run_s=ran - built)

    def _result(self, net, matrices, simulator, **info) -> BackendResult:
        outputs = matrices[-1].reshape(len(matrices[-1]), *net.output_shape)
        predictions = simulate.decode(net, outputs)
        counts = [m.sum(dtype=np.int64) for m in matrices]
        if net.input_encoding == "binary":
            counts = counts[1:]
        return BackendResult(
            predictions=np.asarray(predictions, np.int64),
            output_spikes=matrices[-1],
            spike_counts=np.asarray(counts, np.int64),
            info={"simulator": simulator, **info},
        )

    def _run_virtual(self, net, x, plan, options) -> BackendResult:
        mapping = _map(net, plan, x, options)
        matrices = [_source_spikes(net, x)]
        for layer in _quantised_layers(plan):
            matrices.append(_layer_step(layer, matrices[-1]))
        result = self._result(net, matrices, "spinnaker", mapping=mapping)
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
        x=None,
        force: bool = False,
        overwrite: bool = False,
        y=None,
        neurons_per_core: int | None = None,
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
        plan = build_plan(net)
        if not plan:
            raise ValueError(
                "spinnaker export: nothing of this network runs on chip (its one stage is the "
                "host encoder); export a network with more stages."
            )
        cores = core_plan(plan, neurons_per_core)
        with files.staged(path, force or overwrite, folder=True) as staging:
            _write_export(net, staging, x, y=y, cores=cores)
        return Path(path)


def get_backend() -> SpiNNakerBackend:
    """The registered instance."""
    from whetstone.backends import get

    return get("spinnaker")


# ---------------------------------------------------------------- export


def _write_export(net: SpikingNetwork, folder: Path, x, y=None, cores=None) -> None:
    """network.npz, network.h5, export.json, run.py and (with ``x``) inputs.npz."""
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
    arrays["source_size"] = np.array(_source_size(net))
    np.savez_compressed(folder / "network.npz", **arrays)
    shipped = {}
    if x is not None:
        shipped = exports.ship(folder, net, x, y, spikes=_source_spikes(net, x))
    net.save(folder / "network.h5")
    exports.write_manifest(
        folder, "spinnaker", net, exports.default_min_agreement(get_backend()),
        first_step=OFFSET, cores=sum(e["cores"] for e in cores), **shipped,
    )  # fmt: skip
    (folder / "run.py").write_text(exports.template("run_spinnaker.py"))
