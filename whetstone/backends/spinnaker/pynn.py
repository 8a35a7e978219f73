"""SpiNNaker PyNN assembly: populations, projections and spike sources in a PyNN
simulator (NEST, or sPyNNaker on a virtual board), sPyNNaker's private config, and the
mapping report (cores, chips, boards).

Example:
    >>> _spike_times(np.array([[1, 0], [1, 1]], np.uint8))
    [[2.0, 3.0], [3.0]]
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import itertools
import math
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from whetstone.backends import require
from whetstone.backends.spinnaker.plan import (
    NEURONS_PER_CORE,
    ROW_LIMIT,
    Layer,
    MappingError,
    core_plan,
    piece_starts,
)
from whetstone.network import SpikingNetwork

__all__ = ["TAU_M", "Pieces", "spinnaker_config"]

WHERE = "spinnaker back end"

TAU_M = 2.0**-10
"""Membrane time constant (ms) and capacitance (nF): ``exp(-1 / TAU_M)`` is 0."""
DT = 1.0  # ms
OFFSET = 2  # input i's spikes leave the source at (i + OFFSET) dt (NEST needs t > dt)
SIMULATORS = {"nest": "pyNN.nest", "spinnaker": "pyNN.spiNNaker"}
EXTRAS = {"nest": "nest", "spinnaker": "spinnaker"}
CHIPS_PER_BOARD = 48  # SpiNN-5


def _spike_times(spikes: np.ndarray) -> list[list[float]]:
    """Per source neuron, the times of its spikes: sample ``i`` at ``(i + OFFSET) dt``."""
    sample, neuron = np.nonzero(spikes)
    order = np.argsort(neuron, kind="stable")
    times = (sample[order] + float(OFFSET)) * DT
    splits = np.cumsum(np.bincount(neuron, minlength=spikes.shape[1]))[:-1]
    return [list(t) for t in np.split(times, splits)]


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


def _setup(sim, simulator: str, threads: int = 1) -> None:
    """Set the simulator up; ``threads``: NEST's threads (sums in another order: ties only)."""
    if simulator == "nest":
        if int(threads) < 1:
            raise ValueError(f"{WHERE}: threads must be at least 1, got {threads}.")
        sim.setup(timestep=DT, min_delay=DT, spike_precision="on_grid", verbosity="error",
                  threads=int(threads))  # fmt: skip
    else:
        sim.setup(timestep=DT)


@dataclass
class Pieces:
    """A source or population of ``size`` neurons, built as PyNN populations of at most
    :data:`~whetstone.backends.spinnaker.plan.MAX_POPULATION` neurons: ``parts[k]`` holds
    neurons ``starts[k]:starts[k + 1]`` (:func:`piece_starts`). Mostly one part."""

    name: str
    parts: list
    starts: np.ndarray

    @classmethod
    def build(cls, name: str, size: int, make) -> Pieces:
        """``make(start, stop, label)`` creates each part; a lone part is labelled ``name``."""
        starts = piece_starts(size)
        many = len(starts) > 2
        parts = [
            make(int(lo), int(hi), f"{name}[{lo}:{hi}]" if many else name)
            for lo, hi in itertools.pairwise(starts)
        ]
        return cls(name, parts, starts)

    def handle(self, sim):
        """The one PyNN object for users: the population, or an ``Assembly`` of the parts."""
        return self.parts[0] if len(self.parts) == 1 else sim.Assembly(*self.parts, label=self.name)


def _source(sim, spikes: np.ndarray) -> Pieces:
    times = _spike_times(spikes)
    return Pieces.build("input", spikes.shape[1], lambda lo, hi, label: sim.Population(
        hi - lo, sim.SpikeSourceArray(spike_times=times[lo:hi]), label=label))  # fmt: skip


def _population(sim, simulator: str, layer: Layer, options: dict) -> Pieces:
    """The layer's neurons; every part keeps the layer's largest summed weights, so that
    sPyNNaker scales its weights as :func:`fixed_point_run` assumes."""

    def part(lo: int, hi: int, label: str):
        thresholds = layer.thresholds[lo:hi]
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
        return sim.Population(hi - lo, cell, label=label, **kwargs)

    return Pieces.build(layer.name, layer.size, part)


def _blocks(rows: np.ndarray, pre: np.ndarray, post: np.ndarray):
    """``(i, j, rows)`` for each pair of parts that ``rows`` connect, indices made local;
    ``pre`` and ``post``: the parts' :func:`piece_starts`. The rows stay sorted.

    Example:
        >>> rows = np.array([[0, 1, 0.5], [3, 0, 2.0], [3, 3, 1.0]])
        >>> [(i, j, b.tolist()) for i, j, b in _blocks(rows, np.array([0, 2, 4]),
        ...                                            np.array([0, 3, 4]))]
        [(0, 0, [[0.0, 1.0, 0.5]]), (1, 0, [[1.0, 0.0, 2.0]]), (1, 1, [[1.0, 0.0, 1.0]])]
    """
    if len(pre) == 2 and len(post) == 2:
        yield 0, 0, rows
        return
    i = np.searchsorted(pre, rows[:, 0], "right") - 1
    j = np.searchsorted(post, rows[:, 1], "right") - 1
    for a, b in sorted(set(zip(i.tolist(), j.tolist(), strict=True))):
        block = rows[(i == a) & (j == b)]
        yield a, b, block - np.array([pre[a], post[b], 0.0])


def _project(
    sim, pre: Pieces, post: Pieces, exc, inh, delay: int = 0, simulator: str = "spinnaker"
) -> None:
    """Excitatory and inhibitory projections between each pair of parts that rows connect;
    inhibitory weights negative (PyNN's convention for current cells). The synaptic delay
    is the step of every stage plus the edge's extra ``delay`` steps. On NEST the lists
    are connected in one call each (:func:`_array_connector`)."""
    connector = _array_connector(sim) if simulator == "nest" else sim.FromListConnector
    synapse = sim.StaticSynapse(delay=DT * (1 + delay))
    for rows, receptor, sign in ((exc, "excitatory", 1), (inh, "inhibitory", -1)):
        if len(rows):
            signed = rows * np.array([1.0, 1.0, sign])
            for i, j, block in _blocks(signed, pre.starts, post.starts):
                connections = connector(block, column_names=["weight"])
                sim.Projection(pre.parts[i], post.parts[j], connections, synapse,
                               receptor_type=receptor)  # fmt: skip


@functools.cache
def _array_connector(sim) -> type:
    """PyNN's ``FromListConnector`` for NEST, connected with one ``nest.Connect`` of arrays.

    PyNN connects a list one postsynaptic neuron at a time (a ``nest.Connect`` and a
    parameter-space copy each: about a minute for conv_mnist's 47,000 neurons); this
    connects the same ``(pre, post, weight)`` rows with the same translated (and, as PyNN
    does for delta synapses, rescaled) weights and delays, the projection's synapse model
    and label, in one ``one_to_one`` call of arrays, so the PyNN ``Projection`` still
    knows its connections.
    """
    import copy

    import nest

    class ArrayConnector(sim.FromListConnector):
        def connect(self, projection) -> None:
            rows = self.conn_list
            if (
                projection.post.conductance_based
                or not projection.post.celltype.standard_receptor_type
            ):
                raise NotImplementedError(
                    "whetstone's NEST connector: current-based standard cells only"
                )
            params = copy.deepcopy(projection.synapse_type.parameter_space)
            params.shape = (len(rows),)
            params.update(weight=rows[:, 2])
            params = projection.synapse_type.translate(params)
            params.evaluate()
            pre = _node_ids(projection.pre)[rows[:, 0].astype(np.int64)]
            post = _node_ids(projection.post)[rows[:, 1].astype(np.int64)]
            scale = getattr(projection.post.celltype, "receptor_scale", 1.0)  # as PyNN does
            spec = {
                "synapse_model": projection.nest_synapse_model,
                "synapse_label": projection.nest_synapse_label,
                "weight": np.broadcast_to(params["weight"], len(rows)) * scale,
                "delay": np.broadcast_to(params["delay"], len(rows)).astype(np.float64),
            }
            nest.Connect(pre, post, "one_to_one", spec)
            projection._sources.update(pre.tolist())
            projection._simulator.state.stale_connection_cache = True

    return ArrayConnector


def _assemble(
    sim, simulator: str, net: SpikingNetwork, plan, spikes, options: dict
) -> tuple[Pieces, list[Pieces]]:
    """Source and populations of ``net`` in the current PyNN simulator, recording spikes."""
    source = _source(sim, spikes)
    populations = []
    for layer in plan:
        population = _population(sim, simulator, layer, options)
        for index, delay, start, width in layer.inputs:
            pre = source if index < 0 else populations[index]
            _project(sim, pre, population, *layer.edge_rows(start, width), delay, simulator)
        for part in population.parts:
            part.record("spikes")
        populations.append(population)
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


def _spike_matrix(population: Pieces, n: int, depth: int) -> np.ndarray:
    """``(n, size)`` spikes of a population matched to inputs by its depth."""
    return np.concatenate([_part_spikes(part, n, depth) for part in population.parts], axis=1)


def _part_spikes(population, n: int, depth: int) -> np.ndarray:
    index, times = _recorded_spikes(population)
    sample = np.rint(times / DT).astype(np.int64) - OFFSET - depth
    mine = (sample >= 0) & (sample < n)
    out = np.zeros((n, population.size), np.uint8)
    out[sample[mine], index[mine]] = 1
    return out


def _node_ids(population) -> np.ndarray:
    """NEST node ids of a PyNN population's cells, in order (``NodeCollection.tolist``
    asks NEST once per cell)."""
    return np.asarray(population.all_cells, np.int64)


def _recorded_spikes(population) -> tuple[np.ndarray, np.ndarray]:
    """Neuron index and time (ms) of every recorded spike.

    On NEST, straight from PyNN's spike recorder as arrays (``get_data`` builds a Neo
    ``SpikeTrain`` with units per neuron: minutes on a conv net); elsewhere via Neo.
    """
    recorder = population.recorder
    if hasattr(recorder, "_spike_detector"):  # pyNN.nest
        ids = _node_ids(population)
        senders, times = recorder._get_spiketimes(ids, clear=False)
        return np.searchsorted(ids, np.asarray(senders, np.int64)), np.asarray(times, float)
    trains = population.get_data("spikes", clear=False).segments[0].spiketrains
    index = [np.full(len(t), int(t.annotations["source_index"])) for t in trains]
    times = [np.asarray(t.magnitude, float) for t in trains]
    return np.concatenate([np.zeros(0, np.int64), *index]), np.concatenate([np.zeros(0), *times])


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


def _placements_report(source: Pieces, populations: list[Pieces]) -> dict:
    """Cores, chips and boards used, in all and per source or population (its parts summed)."""
    from pacman.data import PacmanDataView

    machine = PacmanDataView.get_machine()
    names = {part.label: p.name for p in (source, *populations) for part in p.parts}
    chips, app_chips, cores, per_population = set(), set(), 0, {}
    for placement in PacmanDataView.iterate_placemements():
        chips.add((placement.x, placement.y))
        cores += 1
        app = getattr(placement.vertex, "app_vertex", None)
        label = getattr(app, "label", None)
        if label in names:
            entry = per_population.setdefault(names[label], {"cores": 0, "neurons_per_core": 0})
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
    spikes = np.ones((1, net.encoded_size), np.uint8) if x is None else net.encode(x, WHERE)
    cores = core_plan(plan, options.get("neurons_per_core"))
    started = time.perf_counter()
    with spinnaker_config(options.get("width"), options.get("height")):
        _setup(sim, "spinnaker")
        try:
            source, populations = _assemble(sim, "spinnaker", net, plan, spikes, options)
            sim.run((len(spikes) + (plan[-1].depth if plan else 0) + OFFSET) * DT)
            report = _placements_report(source, populations)
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
