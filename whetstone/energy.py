"""Energy per inference on Loihi, estimated from the reference simulator's counts.

A spiking network on Loihi spends energy in three kinds of operation (Davies et al.,
"Loihi: A Neuromorphic Manycore Processor with On-Chip Learning", IEEE Micro 38(1),
2018, Table 2):

* a *synaptic operation*: one input spike reaching one synapse (23.6 pJ, the table's
  minimum energy per synaptic spike op);
* a *spike*: one neuron's spike sent within a tile (1.7 pJ); a spike that crosses
  tiles costs 3.0 pJ (east-west) or 4.0 pJ (north-south) more per hop, which depends
  on the placement and is not counted here;
* a *neuron update*: one compartment updated in one time step (81 pJ active, 52 pJ
  inactive; the active figure is used, an upper bound).

Per inference, with ``S`` the synaptic operations, ``N_s`` the spikes of the on-chip
stages, ``N`` the on-chip neurons and ``T`` the time steps each inference occupies
them::

    E = e_syn S + e_spike N_s + e_neuron N T

The reference simulator gives ``S`` (``SimulationResult.synaptic_operations``: every
on-chip input spike times its fan-out) and ``N_s`` (``spike_counts``). With pipelining a
new input enters every step, so each neuron spends ``T = 1`` update per inference; an
inference run alone through ``L`` stages keeps them busy ``T = L`` steps. The host
encoder (stage 0 with ``input_encoding="host"``) and the host decoder run off chip:
their arithmetic is not counted, the encoder's spikes reach the chip as input (their
synaptic operations are in ``S``). Static (leakage) power is not counted.

These are pre-silicon per-operation figures from the paper, not a measurement on a chip:
use the estimate to compare networks, not as a power reading.

Example:
    >>> e = loihi_energy(synaptic_operations=1000, spikes=100, neuron_updates=10)
    >>> round(e["total_j"] * 1e12, 1)      # 1000 * 23.6 + 100 * 1.7 + 10 * 81 pJ
    24580.0
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from whetstone.network import SpikingNetwork
from whetstone.simulate import SimulationResult

__all__ = ["LOIHI", "EnergyCosts", "estimate", "loihi_energy", "on_chip_stages"]


@dataclass(frozen=True)
class EnergyCosts:
    """Energy of one operation, in joules, and where the figures come from."""

    synaptic_op: float = 23.6e-12
    spike: float = 1.7e-12
    neuron_update: float = 81e-12
    source: str = (
        "Davies et al., Loihi: A Neuromorphic Manycore Processor with On-Chip Learning, "
        "IEEE Micro 38(1), 2018, Table 2: synaptic spike op (min) 23.6 pJ, within-tile "
        "spike 1.7 pJ, neuron update (active) 81 pJ"
    )


LOIHI = EnergyCosts()
"""Loihi's per-operation energies (Davies et al. 2018, Table 2)."""


def _count(value: float, name: str) -> float:
    value = float(value)
    if not value >= 0:
        raise ValueError(f"loihi_energy: {name} must be a count >= 0, got {value}.")
    return value


def loihi_energy(
    synaptic_operations: float,
    spikes: float,
    neuron_updates: float,
    costs: EnergyCosts = LOIHI,
) -> dict:
    """Energy (joules) of the given operation counts: per kind and in total.

    Example:
        >>> e = loihi_energy(2, 0, 0)
        >>> round(e["synaptic_ops_j"] * 1e12, 1), e["spikes_j"]
        (47.2, 0.0)
    """
    parts = {
        "synaptic_ops_j": _count(synaptic_operations, "synaptic_operations") * costs.synaptic_op,
        "spikes_j": _count(spikes, "spikes") * costs.spike,
        "neuron_updates_j": _count(neuron_updates, "neuron_updates") * costs.neuron_update,
    }
    return {**parts, "total_j": sum(parts.values())}


def on_chip_stages(net: SpikingNetwork) -> list[int]:
    """Indices of the stages that run on the chip (all but a host encoder).

    Example:
        >>> import numpy as np
        >>> from whetstone.network import Stage
        >>> stage = Stage("d", "dense", (1,), (1,), np.ones((1, 1), "float32"))
        >>> on_chip_stages(SpikingNetwork((1,), [stage, stage]))
        [1]
    """
    first = 1 if net.input_encoding == "host" else 0
    return list(range(first, len(net.stages)))


def estimate(
    net: SpikingNetwork, result: SimulationResult, steps: int = 1, costs: EnergyCosts = LOIHI
) -> dict:
    """Counts and energy per inference of ``result`` (``whetstone.simulate.run(net, x)``).

    ``steps``: time steps one inference occupies each neuron (1: pipelined, a new input
    every step; ``net.latency``: one inference at a time).

    Example:
        >>> import numpy as np
        >>> from whetstone import simulate
        >>> from whetstone.network import Stage
        >>> w = np.ones((2, 3), "float32")
        >>> net = SpikingNetwork((2,), [Stage("d", "dense", (2,), (3,), w)],
        ...                      input_encoding="binary")
        >>> r = estimate(net, simulate.run(net, np.array([[1, 0], [1, 1]])))
        >>> r["synaptic_operations"], r["spikes"], r["neuron_updates"]   # per inference
        (4.5, 3.0, 3)
        >>> round(r["energy_nj"], 4)          # (4.5 * 23.6 + 3 * 1.7 + 3 * 81) / 1000
        0.3543
    """
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"estimate: steps must be a whole number >= 1, got {steps!r}.")
    stages = on_chip_stages(net)
    spikes = float(sum(result.spikes_per_inference[i] for i in stages))
    updates = steps * sum(net.stages[i].num_neurons for i in stages)
    synops = result.synops_per_inference
    energy = loihi_energy(synops, spikes, updates, costs)
    return {
        "synaptic_operations": round(synops, 3),
        "spikes": round(spikes, 3),
        "neuron_updates": int(updates),
        "steps": steps,
        **energy,
        "energy_nj": energy["total_j"] * 1e9,
        "costs": asdict(costs),
    }
