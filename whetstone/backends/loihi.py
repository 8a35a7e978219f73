"""Nengo-Loihi back end: the Nengo network of ``nengo.py``, unchanged, on Loihi.

It runs on nengo-loihi's emulator here (``target="sim"``: integer, bit-true to the
chip; ``"simreal"``: the same dynamics in float, without discretisation) and on real
Loihi where NxSDK is installed (``target="loihi"``; the default picks it when present).

Neuron mapping. nengo-loihi builds :class:`whetstone.backends.nengo.StepNeuron` with the
builder registered here as a current-based compartment with

* ``decay_v = 1`` (full voltage decay: ``v[t] = u[t] + bias``; the voltage of the last
  step is multiplied by ``(4096 - 4095) / 4096`` and floored, which is 0 because a
  neuron that did not spike has ``0 <= v <= vth < 4096``: ``vmin = 0`` and ``vth`` is
  one weight quantum, 64),
* ``refract_delay = 1`` (no refractory period; a spike resets ``v`` to 0),
* ``vth = vth_scale * w_max / 255`` (one 8-bit weight step of the stage; ``vth_scale``
  is a ``build``/``run`` option, default 1) and
  ``bias = b - theta + vth``: the chip fires when ``v > vth``, i.e. when
  ``W s + b - theta > 0``,
* ``synapse=0`` / ``None``: on the integer targets (``"sim"``, ``"loihi"``) the current
  empties every step: ``decayU = 4095`` + the chip's 1, so ``u[t] = q[t]`` (nengo-loihi's
  own ``tau_s = 0`` setting, ``decayU = 4094``, would carry ``floor(u[t-1] / 4096)`` over
  and scale weights by about ``4095/4096``); ``"simreal"`` keeps ``decay_u = 1``, which is
  memoryless in float.

So the compartment is the memoryless step unit up to the chip's integer arithmetic:
weights, biases and thresholds are discretised by nengo-loihi to 8-bit weights with a
shared exponent per core, and the effect on accuracy is measured (``target="sim"`` vs
``"simreal"`` vs the reference), not assumed. A stage whose weights are on the Loihi grid
(``whetstone.quantize``: ``w = k M / 127`` and ``b = theta + (K + 1/2) M / 127`` per
block of largest weight ``M``, as ``WeightSharpener("loihi")`` trains them) is stored
exactly as the integers ``k`` (nengo-loihi's ``round(w 255 / 2M)``, clipped to 127), that
is ``128 k`` voltage units: weights are multiplied by ``254 * 64 / M``, but nengo-loihi
multiplies biases by ``255 * 64 / M``. So such a stage gets its bias as
``(b - theta) 254/255`` (on the weights' scale: ``128 K + 64`` units) and the threshold
``vth = M / 255`` of its own block (64 units; the bias is raised by it as always), and the
chip fires iff ``sum(k s) + K + 1/2 > 0``: exactly the float network's step, which is
never at a tie.

The host-side population (stage 0 in ``"host"`` mode, the input relay in ``"binary"``
mode) runs off chip and sends its spikes to the chip. In ``"binary"`` mode the input
spikes take one extra step to reach the chip, so the output of image ``i`` appears
``latency`` steps after it (``info``).

Speed. nengo-loihi's emulator delivers spikes one at a time in Python; ``simulator`` (and
so ``run``) replaces that step with array code that performs the same additions in the
same order (:mod:`whetstone.backends.loihi_emulator`: bit for bit the same run, about 20
times faster on conv_mnist). ``run(..., fast_emulator=False)`` keeps nengo-loihi's loop;
``info["emulator"]`` says which ran.

Partition. Every on-chip stage is split into blocks, one per core, by
:func:`whetstone.backends.loihi_partition.partition`: the fewest blocks whose
compartments, input and output axons and synapse memory fit a core, counted as nengo-loihi
counts them. ``build``, ``run``, ``resources`` and ``export`` all use it; ``block_shapes``
pins a stage's shape (an export keeps the pins in ``network.h5``), ``chips`` bounds the
chips (a network that needs more raises :class:`LoihiPartitionError` with the numbers).

Resources (``resources`` / ``info["resources"]``): cores (one per nengo-loihi block),
compartments, input and output axons, synapse memory bits, per core and in total,
against Loihi's limits (1024 compartments, 4096 input and output axons, 1 Mbit synapse
memory per core; 128 cores per chip), and the partition (block shape and cores per
stage). Without ``chips``, a network that needs more than one chip warns (emulator) or
raises (hardware) with the numbers and what to change.

Export writes a folder with ``network.h5``, ``export.json``, ``run.py`` and the shipped
inputs with the reference's decisions (``inputs.npz``): ``python run.py`` runs them on the
chip where NxSDK is installed and on the emulator elsewhere, no retraining, and checks the
agreement against :attr:`LoihiBackend.min_agreement` (see
:mod:`whetstone.backends.exports`).

Example:
    >>> import numpy as np
    >>> from whetstone.backends import get
    >>> from whetstone.network import Stage, SpikingNetwork, KeyDecoder
    >>> w = np.array([[1.0, -1.0], [-1.0, 1.0]], "float32")
    >>> net = SpikingNetwork((2,), [Stage("a", "dense", (2,), (2,), w),
    ...     Stage("b", "dense", (2,), (2,), np.eye(2, dtype="float32"))],
    ...     KeyDecoder([[1, 0], [0, 1]]))
    >>> result = get("loihi").run(net, np.array([[0.9, 0.0], [0.0, 0.9]]), target="sim")
    >>> result.predictions.tolist(), result.info["resources"]["cores"]
    ([0, 1], 1)
"""

from __future__ import annotations

import contextvars
import dataclasses
import functools
import json
import math
import time
import warnings
from pathlib import Path
from typing import Any, ClassVar

from whetstone.backends import (
    BackendResult,
    MissingDependencyError,
    exports,
    loihi_emulator,
    register,
    require,
)
from whetstone.backends import nengo as nengo_backend
from whetstone.backends.loihi_partition import (
    LIMITS,
    LoihiPartitionError,
    StagePartition,
    check_chips,
    partition,
)
from whetstone.network import SpikingNetwork

__all__ = [
    "LIMITS",
    "PINS_KEY",
    "LoihiBackend",
    "LoihiPartitionError",
    "LoihiResourceWarning",
    "plan",
]

PINS_KEY = "loihi_block_shapes"
"""``SpikingNetwork.metadata`` key of block shapes pinned at export (JSON)."""

EXTRA = "loihi"

EMPTY_CURRENT = 4096 / 4095
"""``decay_u`` that nengo-loihi discretises to ``decayU = 4095``: the current empties each step."""
_INTEGER = contextvars.ContextVar("whetstone_loihi_integer", default=None)
"""While an integer model (``"sim"``, ``"loihi"``) is built: ``{ensemble: grid bias}``."""
_VTH = contextvars.ContextVar("whetstone_loihi_vth", default=None)
"""While a model is built: ``{ensemble: compartment threshold}`` (in units of J)."""


class LoihiResourceWarning(UserWarning):
    """The network exceeds a Loihi core's or chip's limits (the emulator still runs it)."""


@functools.cache
def _nengo_loihi():
    """Import nengo-loihi and register the StepNeuron compartment builder (once)."""
    import numpy as np

    if int(np.__version__.split(".")[0]) >= 2:
        raise MissingDependencyError(
            f"the loihi back end needs nengo-loihi 1.1, which needs numpy < 2 (numpy "
            f"{np.__version__} is installed). Install the extra in its own environment: "
            f"pip install 'whetstone-snn[{EXTRA}]' (from a checkout: pip install -e '.[{EXTRA}]')"
        )
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*has not been tested with your `nengo`")
        nengo_loihi = require("nengo_loihi", EXTRA)
    from nengo_loihi.builder import Builder

    @Builder.register(nengo_backend.StepNeuron)
    def build_step_neuron(model, neuron_type, neurons, block):
        vth = (_VTH.get() or {}).get(neurons.ensemble, 1.0)
        comp = block.compartment
        comp.configure_relu(vth=vth, dt=model.dt)  # vmin 0, no refractory
        comp.decay_v[:] = 1.0  # full voltage decay: nothing carried to the next step
        comp.bias[:] += vth  # fire iff J = W s + b - theta > 0
        grid = _INTEGER.get()
        if grid is not None:  # integer chip: nothing of the current carries over
            comp.configure_filter = functools.partial(_empty_current, comp)
            if neurons.ensemble in grid:  # on the weight grid: exact (see the docstring)
                bias, vth = grid[neurons.ensemble]
                comp.vth[:] = vth
                comp.bias[:] = bias + vth

    return nengo_loihi


def _empty_current(comp, tau_s, dt=0.001) -> None:
    """The synapse filter of a StepNeuron compartment on the integer chip: ``u[t] = q[t]``."""
    comp.decay_u[:] = EMPTY_CURRENT
    comp.scale_u = True  # nengo-loihi's input scale 1 / decay_magnitude(4095) is then 1
    comp.tau_s = tau_s


def _threshold(stage, vth_scale: float = 1.0) -> float:
    """Compartment threshold: ``vth_scale`` weight quanta (``w_max / 255``) of the stage.

    One quantum keeps the sub-threshold voltage tiny (see the module docstring).

    Example:
        >>> import numpy as np
        >>> from whetstone.network import Stage
        >>> _threshold(Stage("d", "dense", (1,), (1,), np.full((1, 1), 127.5, "float32")), 2.0)
        1.0
    """
    w_max = 1.0 if stage.kind == "pool" else float(abs(stage.weights).max(initial=0.0))
    return vth_scale * (w_max if w_max > 0 else 1.0) / 255.0


def _grid_bias(stage, block_shape) -> Any:
    """(bias, vth) per neuron that make an on-grid stage exact on the integer chip, or None."""
    import numpy as np

    from whetstone.quantize import Loihi

    per_position = stage.bias is not None and stage.bias.shape != stage.output_shape[-1:]
    if stage.kind == "pool" or per_position:  # no grid: the plain mapping
        return None
    largest = Loihi.block_max(stage, block_shape).ravel()
    weights, bias = Loihi().grid(stage, block_shape=block_shape)
    on_grid = np.array_equal(weights, stage.weights) and np.array_equal(
        np.broadcast_to(bias, stage.output_shape), stage.full_bias()
    )
    if not on_grid or not (largest > 0).all():
        return None
    free = stage.full_bias().ravel().astype(np.float64) - stage.threshold
    return free * 254 / 255, largest / 255  # fires iff sum(k s) + K + 1/2 > 0


# ---------------------------------------------------------------- building


def plan(
    net: SpikingNetwork,
    block_shapes: dict | None = None,
    pop_type: int = 32,
    chips: int | None = None,
) -> list[StagePartition]:
    """The partition of ``net``'s on-chip stages that build, run, resources and export use.

    Block shapes pinned in ``net.metadata`` (by :meth:`LoihiBackend.export`) and in
    ``block_shapes`` are kept; every other stage gets the fewest blocks that fit a core.

    Example:
        >>> import numpy as np
        >>> from whetstone.network import Stage, SpikingNetwork
        >>> wide = Stage("wide", "dense", (4,), (1500,), np.ones((4, 1500), "float32"))
        >>> net = SpikingNetwork((4,), [wide], input_encoding="binary")
        >>> [(p.name, p.block_shape, p.cores) for p in plan(net)]
        [('wide', (750,), 2)]
    """
    stages = net.chip_stages
    pins = {**json.loads(net.metadata.get(PINS_KEY, "{}")), **(block_shapes or {})}
    names = [stage.name for stage in stages]
    unknown = set(pins) - set(names)
    if unknown:
        raise ValueError(
            f"block_shapes names {sorted(unknown)}, which are not on-chip stages; "
            f"on-chip stages: {names}."
        )
    parts = partition(stages, pins, pop_type)
    check_chips(parts, chips)
    return parts


def _configure(built, parts: list[StagePartition], pop_type: int, vth_scale: float) -> None:
    nengo_loihi = _nengo_loihi()
    nengo_loihi.add_params(built.network)
    config = built.network.config
    config[built.host].on_chip = False
    built.grid_bias = {}  # used on the integer targets only
    built.vth = {}
    for part, ens, stage in zip(parts, built.ensembles, built.source.chip_stages, strict=True):
        config[ens].block_shape = nengo_loihi.BlockShape(part.block_shape, part.shape)
        built.vth[ens] = _threshold(stage, vth_scale)
        bias = _grid_bias(stage, part.block_shape)
        if bias is not None:
            built.grid_bias[ens] = bias
    for ens, relay in built.relays:  # an edge's delay: split like any other stage
        shape = partition([relay], {}, pop_type)[0].block_shape
        config[ens].block_shape = nengo_loihi.BlockShape(shape, relay.output_shape)
        built.vth[ens] = _threshold(relay, vth_scale)
    built.partition = parts  # the report shows it
    for conn in built.network.all_connections:
        if type(conn.transform).__name__ == "Convolution":
            config[conn].pop_type = pop_type


def _block_report(block) -> dict:
    use = block.utilization()
    info = block.discretize_info or {}
    return {
        "block": block.label,
        "compartments": int(use["compartments"][0]),
        "in_axons": int(use["in-axons"][0]),
        "out_axons": int(use["out-axons"][0]),
        "synapse_bits": int(use["synapses"][0]),
        "weight_exponent": int(info["w_exp"]) if "w_exp" in info else None,
    }


def resource_report(
    model, parts: list[StagePartition] | None = None, chips: int | None = None
) -> dict:
    """Cores, compartments, axons and synapse memory of a built nengo-loihi model.

    ``parts``: the partition it was built with (``partition`` entry: per stage, the
    block shape, its cores and the largest use of a core); ``chips``: chips available
    (None: more than one chip is reported in ``over_limits``).
    """
    blocks = [_block_report(block) for block in model.blocks]
    keys = ("compartments", "in_axons", "out_axons", "synapse_bits")
    over = [
        f"{b['block']}: {k} {b[k]} > {LIMITS[k]}" for b in blocks for k in keys if b[k] > LIMITS[k]
    ]
    cores = len(blocks)
    if cores > LIMITS["cores_per_chip"] and chips is None:
        over.append(f"cores {cores} > {LIMITS['cores_per_chip']} per chip")
    return {
        "cores": cores,
        "chips": math.ceil(cores / LIMITS["cores_per_chip"]),
        "chips_available": chips,
        "fits_one_chip": cores <= LIMITS["cores_per_chip"] and not over,
        "over_limits": over,
        "total": {k: sum(b[k] for b in blocks) for k in keys},
        "max_per_core": {k: max((b[k] for b in blocks), default=0) for k in keys},
        "limits_per_core": {k: LIMITS[k] for k in keys},
        "partition": [part.to_dict() for part in parts or []],
        "blocks": blocks,
    }


def _check_fits(report: dict, target: str) -> None:
    if not report["over_limits"]:
        return
    message = (
        "the network does not fit Loihi's limits: "
        + "; ".join(report["over_limits"])
        + ". Pass chips=N to run on N chips, let whetstone choose the block shapes (drop "
        "block_shapes={stage name: shape} pins that split finer than needed), or shrink "
        "the layers."
    )
    if target == "loihi":
        raise ValueError(message)
    warnings.warn(message, LoihiResourceWarning, stacklevel=3)


# ---------------------------------------------------------------- back end


@register("loihi")
class LoihiBackend:
    """Nengo-Loihi back end (``get("loihi")``): emulator here, chip with NxSDK."""

    extra = EXTRA
    exact_options: ClassVar[dict] = {
        "target": "simreal"
    }  # the float emulator: the contract up to ties
    min_agreement = 0.97
    """The gate of ``verify`` and of an export's ``run.py`` (agreement with the reference
    on images without a tie). Lower than the exact back ends' 0.999 because the chip and
    its integer emulator round weights to 8 bits with a shared exponent per core: on the
    reference models that changes 0.1% (conv_mnist) to 0.5% (conv_fashion) of the
    decisions, and 3% to 3.5% on briefly trained larger convnets (benchmarks/README.md:
    those fall below this gate; train them with a WeightSharpener for Loihi), while a
    broken mapping disagrees on most images."""

    def is_available(self) -> bool:
        try:
            _nengo_loihi()
        except ImportError:
            return False
        return True

    def build(
        self,
        net: SpikingNetwork,
        block_shapes: dict | None = None,
        pop_type: int = 32,
        chips: int | None = None,
        vth_scale: float = 1.0,
        **options,
    ) -> Any:
        """The ``nengo.Network``, configured for nengo-loihi (block shapes: :func:`plan`).

        Args:
            net: the network.
            block_shapes: ``{stage name: per-core shape}`` pinned (channels-last, the
                rank of the stage's output, e.g. ``(13, 13, 8)``); other stages are
                partitioned automatically.
            pop_type: population axon type of convolutions (32 or 16).
            chips: chips available (None: any number); more needed raises
                :class:`LoihiPartitionError`.
            vth_scale: compartment threshold in weight quanta (``w_max / 255``).
            options: passed to :func:`whetstone.backends.nengo.build_network`.
        """
        return self._build(net, block_shapes, pop_type, chips, vth_scale, **options).network

    def _build(self, net, block_shapes=None, pop_type=32, chips=None, vth_scale=1.0, **options):
        net.on_chip("loihi back end")
        parts = plan(net, block_shapes, pop_type, chips)
        built = nengo_backend.build_network(net, **options)
        _configure(built, parts, pop_type, vth_scale)
        return built

    def simulator(self, built, target: str | None = None, hardware_options=None, fast: bool = True):
        """A ``nengo_loihi.Simulator`` for a built network.

        ``fast``: the emulator delivers spikes with array code
        (:func:`whetstone.backends.loihi_emulator.accelerate`: the same additions in the
        same order, so bit for bit the same run); False keeps nengo-loihi's own loop.
        """
        nengo_loihi = _nengo_loihi()
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Lost .* extra bits in weight rounding")
            # nengo-loihi fills integer state arrays with NaN before setting them
            warnings.filterwarnings("ignore", "invalid value encountered in cast", RuntimeWarning)
            # an emptied current: nengo-loihi's decay_magnitude takes log(0) (and gives 1)
            warnings.filterwarnings("ignore", "divide by zero encountered in log", RuntimeWarning)
            token = _INTEGER.set(None if target == "simreal" else getattr(built, "grid_bias", {}))
            vth = _VTH.set(getattr(built, "vth", {}))
            try:
                sim = nengo_loihi.Simulator(
                    built.network,
                    dt=nengo_backend.DT,
                    target=target,
                    progress_bar=False,
                    hardware_options=hardware_options,
                )
            finally:
                _VTH.reset(vth)
                _INTEGER.reset(token)
        if fast and "emulator" in sim.sims:
            loihi_emulator.accelerate(sim.sims["emulator"])
        return sim

    @staticmethod
    def _emulator(sim) -> str | None:
        """How the emulator delivers spikes: "vectorised", "nengo-loihi" or None (chip)."""
        if "emulator" not in sim.sims:
            return None
        return "vectorised" if loihi_emulator.accelerated(sim.sims["emulator"]) else "nengo-loihi"

    def load(self, path) -> SpikingNetwork:
        """The network of a folder :meth:`export` wrote (its ``network.h5``)."""
        return exports.load_network(path)

    def resources(self, net: SpikingNetwork, **options) -> dict:
        """Loihi cost of ``net``: cores, compartments, axons, synapse memory, partition.

        Options as for :meth:`build`; the figures are nengo-loihi's for the built model.
        """
        built = self._build(net, **options)
        with self.simulator(built, target="sim") as sim:
            return resource_report(sim.model, built.partition, options.get("chips"))

    def offsets(self, built) -> list[int]:
        """Steps from presenting an image to each probe showing its spikes."""
        extra = 0 if built.source.input_encoding == "host" else 1  # host -> chip step
        return [depth - 1 + extra for depth in built.source.depths[-len(built.probes) :]]

    def run(
        self,
        net: SpikingNetwork,
        x,
        *,
        compare_reference: bool = False,
        progress=None,
        target: str | None = None,
        chunk_steps: int = nengo_backend.CHUNK_STEPS,
        block_shapes: dict | None = None,
        pop_type: int = 32,
        chips: int | None = None,
        hardware_options: dict | None = None,
        fast_emulator: bool = True,
        **options,
    ) -> BackendResult:
        """Stream ``x`` through the network on Loihi (or its emulator).

        Args:
            net, x: the network and images of ``net.input_shape``.
            compare_reference: fill ``agreement`` (:func:`whetstone.backends.compared`).
            progress: called with the number of images done so far, about ten times
                (one build, however often it reports).
            target: ``"sim"`` (integer emulator), ``"simreal"`` (float emulator),
                ``"loihi"`` (hardware); None: hardware if NxSDK is installed.
            chunk_steps: steps between probe reads.
            block_shapes, pop_type, chips: see :meth:`build`.
            hardware_options: passed to ``nengo_loihi.Simulator`` (``n_chips`` defaults
                to ``chips`` when that is given).
            fast_emulator: vectorised spike delivery in the emulator (the same run,
                faster; see :meth:`simulator`).
            options: passed to :meth:`build` (``vth_scale``, ``seed``).
        """
        x = net.check_input(x, "loihi back end")
        built = self._build(net, block_shapes, pop_type, chips, **options)
        if chips is not None:
            hardware_options = {"n_chips": chips, **(hardware_options or {})}
        started = time.perf_counter()
        with self.simulator(built, target, hardware_options, fast_emulator) as sim:
            build_s = time.perf_counter() - started
            report = resource_report(sim.model, built.partition, chips)
            _check_fits(report, sim.target)
            started = time.perf_counter()
            offsets = self.offsets(built)
            outputs, counts = nengo_backend.stream(built, sim, x, offsets, chunk_steps, progress)
            run_s = time.perf_counter() - started
            used, emulator = sim.target, self._emulator(sim)
        return nengo_backend.result(
            net, x, outputs, counts, compare_reference, build_s, run_s,
            target=used, latency=offsets[-1] + 1, resources=report, emulator=emulator,
        )  # fmt: skip

    def export(
        self,
        net: SpikingNetwork,
        path,
        *,
        force: bool = False,
        x=None,
        y=None,
        block_shapes: dict | None = None,
        chips: int | None = None,
    ) -> Path:
        """A folder with ``network.h5``, ``export.json`` and ``run.py`` (Loihi, or its emulator).

        An existing ``path`` is replaced only with ``force=True``. The network is
        partitioned first (:func:`plan`): one that cannot be placed on ``chips`` chips is
        refused with the numbers; pinned ``block_shapes`` are stored in ``network.h5``.
        ``x`` (labels ``y``): inputs shipped with the reference's decisions, which
        ``python run.py`` runs and checks against :attr:`min_agreement`.
        """
        net.on_chip("loihi export")
        parts = plan(net, block_shapes, chips=chips)
        if block_shapes:
            pins = {**json.loads(net.metadata.get(PINS_KEY, "{}")), **block_shapes}
            pins = {name: [int(b) for b in shape] for name, shape in pins.items()}
            net = dataclasses.replace(net, metadata={**net.metadata, PINS_KEY: json.dumps(pins)})
        cores = sum(part.cores for part in parts)
        return nengo_backend.export_folder(
            net, path, "loihi", force, x, y, self.min_agreement, cores=cores, chips=chips
        )
