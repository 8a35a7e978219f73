"""Vectorised spike delivery for nengo-loihi's emulator, bit for bit the same.

nengo-loihi's emulator (``EmulatorInterface``) delivers spikes one at a time in Python:
each spiking compartment becomes a ``Spike(axon, atom)`` object, and each spike adds its
synapse row to the target compartments' input with ``input[base + indices] += weights``.
On a conv network that is almost all of the run time (about 0.7 s per step on conv_mnist).

:func:`accelerate` replaces those two steps of one emulator instance (nothing global is
patched) with array code that performs the same additions in the same order:
``np.add.at`` adds the rows of all spikes of a step, synapse by synapse and spike by
spike in nengo-loihi's order, one element at a time, so even the float emulator
(``"simreal"``, float32) rounds exactly as before; the integer emulator's sums are exact
anyway. It declines (returns False, the emulator unchanged) where that argument does not
hold: learning synapses (which read the spike queues) or a synapse row that names a
compartment twice (nengo-loihi's buffered ``+=`` adds such a weight once).

Example:
    >>> import numpy as np
    >>> _segments(np.array([5, 0]), np.array([2, 3])).tolist()
    [5, 6, 0, 1, 2]
"""

from __future__ import annotations

import types

import numpy as np

__all__ = ["accelerate", "accelerated"]

_MARK = "_whetstone_vectorised"


def _segments(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Concatenated ``range(start, start + length)`` for each pair, in order."""
    total = int(lengths.sum())
    if total == 0:
        return np.zeros(0, np.int64)
    ends = np.cumsum(lengths)
    shift = np.repeat(starts - (ends - lengths), lengths)
    return shift + np.arange(total)


class _Rows:
    """Every synapse's rows in flat arrays: row ``(axon, atom)`` -> compartments, weights.

    Axons are numbered across synapses (synapse ``k``'s axon ``a`` is ``offsets[k] + a``);
    compartments are indices into the emulator's input of all blocks.
    """

    def __init__(self, synapses: list, block_starts: list[int]):
        first_row, row_length, base, indices, weights = [], [], [], [], []
        self.offsets, rows, axons = [], 0, 0
        for synapse, start in zip(synapses, block_starts, strict=True):
            n_axons = synapse.n_axons
            weight_idx = [synapse.axon_weight_idx(a) for a in range(n_axons)]
            bases = synapse.axon_compartment_bases
            bases = np.zeros(n_axons, np.int64) if bases is None else np.asarray(bases, np.int64)
            pops = np.array([w.shape[0] for w in synapse.weights], np.int64)
            widths = np.array([w.shape[1] for w in synapse.weights], np.int64)
            first_row.append(rows + (np.cumsum(pops) - pops)[weight_idx])
            row_length.append(np.repeat(widths, pops))
            base.append(np.where(bases >= 0, start + bases, -1))  # < 0: nengo-loihi skips it
            indices += [np.ravel(i).astype(np.int64) for i in synapse.indices]
            weights += [np.ravel(w) for w in synapse.weights]
            self.offsets.append(axons)
            rows, axons = rows + int(pops.sum()), axons + n_axons
        self.first_row = np.concatenate(first_row or [np.zeros(0, np.int64)])
        self.row_length = np.concatenate(row_length or [np.zeros(0, np.int64)])
        self.row_start = np.cumsum(self.row_length) - self.row_length
        self.base = np.concatenate(base or [np.zeros(0, np.int64)])
        self.indices = np.concatenate(indices or [np.zeros(0, np.int64)])
        self.weights = np.concatenate(weights or [np.zeros(0, np.float32)])

    def repeats_a_compartment(self) -> bool:
        """Whether some row names a compartment twice."""
        rows = np.repeat(np.arange(len(self.row_length)), self.row_length)
        order = np.lexsort((self.indices, rows))
        same = (np.diff(rows[order]) == 0) & (np.diff(self.indices[order]) == 0)
        return bool(same.any())

    def targets(self, axons: np.ndarray, atoms: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Compartments and weights of the spikes ``(axons, atoms)``, in spike order."""
        keep = self.base[axons] >= 0
        axons, atoms = axons[keep], atoms[keep]
        rows = self.first_row[axons] + atoms
        lengths = self.row_length[rows]
        flat = _segments(self.row_start[rows], lengths)
        return self.indices[flat] + np.repeat(self.base[axons], lengths), self.weights[flat]


def _axon_maps(axon, size: int, offset: int) -> tuple[np.ndarray, np.ndarray]:
    """Per source compartment: the target axon, numbered as in :class:`_Rows` (< 0: none),
    and its atom."""
    axons = np.arange(size) if axon.compartment_map is None else axon.compartment_map
    axons = np.asarray(axons, np.int64)
    atoms = np.zeros(size, np.int64) if axon.compartment_atoms is None else axon.compartment_atoms
    return np.where(axons >= 0, axons + offset, -1), np.asarray(atoms, np.int64)


def accelerate(emulator) -> bool:
    """Give ``emulator`` (a nengo-loihi ``EmulatorInterface``) vectorised spike delivery.

    Returns whether it did (see the module docstring for when it declines).
    """
    state = emulator.synapses
    synapses = list(state.slices)
    if any(synapse.learning for synapse in synapses):
        return False
    table = _Rows(synapses, [state.slices[synapse].start for synapse in synapses])
    if table.repeats_a_compartment():
        return False
    offset = dict(zip(synapses, table.offsets, strict=True))
    sizes = {axon: sl.stop - sl.start for axon, sl in emulator.axons.items()}
    for spike_input in emulator.inputs:
        sizes.update({axon: spike_input.n_neurons for axon in spike_input.axons})
    maps = {axon: _axon_maps(axon, size, offset[axon.target]) for axon, size in sizes.items()}
    queued: dict = {synapse: [] for synapse in synapses}  # spikes per synapse, in order

    def queue(axon, compartments) -> None:
        targets, atoms = maps[axon]
        axons = targets[compartments]
        mine = axons >= 0
        queued[axon.target].append((axons[mine], atoms[compartments][mine]))

    def inject_current(self, t, spike_inputs, all_axons, spiked) -> None:
        for spikes in queued.values():
            spikes.clear()
        if t >= 2:  # input spikes take one time-step to arrive
            for spike_input in spike_inputs:
                compartments = np.asarray(spike_input.spike_idxs(t - 1), np.int64)
                for axon in spike_input.axons:
                    queue(axon, compartments)
        for axon, a_idx in all_axons.items():
            queue(axon, spiked[a_idx].nonzero()[0])

    def update_input(self, input) -> None:
        spikes = [pair for pairs in queued.values() for pair in pairs]
        if spikes:
            axons, atoms = (np.concatenate(p) for p in zip(*spikes, strict=True))
            where, weights = table.targets(axons, atoms)
            np.add.at(input[0], where, weights.astype(input.dtype, copy=False))

    state.inject_current = types.MethodType(inject_current, state)
    state.update_input = types.MethodType(update_input, state)
    setattr(emulator, _MARK, True)
    return True


def accelerated(emulator) -> bool:
    """Whether :func:`accelerate` gave ``emulator`` vectorised spike delivery."""
    return getattr(emulator, _MARK, False)
