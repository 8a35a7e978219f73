"""Automatic Loihi partition: a nengo-loihi block shape per on-chip stage.

Every on-chip stage is one nengo-loihi ensemble; nengo-loihi splits it into blocks of a
``BlockShape`` and puts each block on one core. A core holds at most 1024 compartments,
4096 input axons, 4096 output axon slots and 1 Mbit of synapse memory. This module
computes, with NumPy and without building anything, what each block of a candidate shape
uses, the way nengo-loihi counts it (``LoihiBlock.utilization``):

* **compartments**: the block's neurons.
* **input axons**: dense stages, one per input neuron; convolutions and OR-pools
  (population axons, ``pop_type`` 32 or 16), one per input *pixel* that reaches the block.
* **output axon slots**: per target block that a source pixel (convolution) or neuron
  (dense) reaches, one axon; population-32 axons take two slots.
* **synapse bits**: nengo-loihi's ``SynapseConfig.bits_per_axon`` of every distinct weight
  entry: a dense axon stores the block's weights (8 bits each, chunks of 64 rounded up to
  64-bit words with 10 header bits); a convolution entry stores ``c_in`` times the taps that
  land in the block times the block's channels, 8 weight bits plus index bits each, one entry
  per distinct (clipped window, compartment base // 256). Entries with equal weights that
  nengo-loihi happens to share are counted twice here, so the figure is an upper bound.

:func:`partition` chooses, stage by stage from the output back (a stage's output axons
depend on how the next stage is split), the block shape with the fewest blocks that fits,
preferring whole channels; a user may pin shapes. Nothing here imports nengo-loihi.

Example:
    >>> import numpy as np
    >>> from whetstone.network import Stage
    >>> conv = Stage("c", "conv", (28, 28, 8), (26, 26, 32), np.ones((3, 3, 8, 32), "f4"))
    >>> plan = partition([conv])
    >>> plan[0].block_shape, plan[0].cores
    ((26, 13, 3), 22)
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field

import numpy as np

from whetstone.network import Stage, same_padding

__all__ = ["LIMITS", "LoihiPartitionError", "StagePartition", "check_chips", "partition"]

LIMITS = {
    "cores_per_chip": 128,
    "compartments": 1024,
    "in_axons": 4096,
    "out_axons": 4096,
    "synapse_bits": 16384 * 64,
}
"""Loihi's per-core limits (and cores per chip), as nengo-loihi states them."""

KEYS = ("compartments", "in_axons", "out_axons", "synapse_bits")
INDEX_BITS = (0, 6, 7, 8, 9, 10, 11, 12)  # nengo_loihi SynapseConfig.INDEX_BITS_MAP
WEIGHT_BITS = 8  # weight_bits=7 -> 8 bits (nengo-loihi's default synapse format)
SYNAPSES_PER_CHUNK = 64  # n_synapses=63
CHUNK_HEADER_BITS = 4 + 6


class LoihiPartitionError(ValueError):
    """The network cannot be placed on Loihi cores or chips (the message has the numbers)."""


@dataclass
class StagePartition:
    """How one on-chip stage is split: its block shape and each block's use of a core."""

    name: str
    shape: tuple[int, ...]  # the stage's output (ensemble) shape
    block_shape: tuple[int, ...]
    pinned: bool = False
    blocks: list[dict] = field(default_factory=list)  # one {KEYS: count} per core

    @property
    def cores(self) -> int:
        """Number of blocks (one per core)."""
        return _count(self.shape, self.block_shape)

    def max_use(self) -> dict:
        """Largest use of each per-core resource over the stage's blocks."""
        return {k: max((b[k] for b in self.blocks), default=0) for k in KEYS}

    def over(self) -> list[str]:
        """Limits that a block of this stage exceeds, with the numbers."""
        use = self.max_use()
        return [f"{k} {use[k]} > {LIMITS[k]}" for k in KEYS if use[k] > LIMITS[k]]

    def to_dict(self) -> dict:
        """JSON-friendly summary (block shape, cores, largest use per core)."""
        return {
            "stage": self.name,
            "block_shape": list(self.block_shape),
            "cores": self.cores,
            "pinned": self.pinned,
            "max_per_core": self.max_use(),
        }


# ---------------------------------------------------------------- geometry


def _ranges(n: int, b: int) -> list[tuple[int, int]]:
    return [(i, min(i + b, n)) for i in range(0, n, b)]


def _bits_per_axon(n: np.ndarray, bits_per_weight: int) -> np.ndarray:
    """nengo-loihi's ``SynapseConfig.bits_per_axon`` for arrays of weight counts."""
    n = np.asarray(n, np.int64)
    full, rest = np.divmod(n, SYNAPSES_PER_CHUNK)

    def words(count):
        return -64 * (-(count * bits_per_weight + CHUNK_HEADER_BITS) // 64)

    return full * words(SYNAPSES_PER_CHUNK) + np.where(rest > 0, words(rest), 0)


def _index_bits(max_index: int) -> int:
    bits = math.ceil(math.log2(max_index + 1)) if max_index > 0 else 0
    return next((v for v in INDEX_BITS if v >= bits), INDEX_BITS[-1] + 1)


@dataclass
class _Axis:
    """Which outputs of one spatial axis each input position reaches (nengo's padding)."""

    n_in: int
    n_out: int
    kernel: int
    stride: int
    pad: int

    @classmethod
    def of(cls, stage: Stage, axis: int) -> _Axis:
        n, k, s = stage.input_shape[axis], stage.window[axis], stage.strides[axis]
        pad = same_padding(n, k, s)[0] if stage.padding == "same" else 0
        return cls(n, stage.output_shape[axis], k, s, pad)

    def reach(self, lo: int, hi: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per input position: outputs in [lo, hi) it reaches, the first one, its tap."""
        i = np.arange(self.n_in)[:, None]
        y = np.arange(lo, hi)[None, :]
        tap = i + self.pad - y * self.stride
        feeds = (tap >= 0) & (tap < self.kernel)
        count = feeds.sum(axis=1)
        first = lo + feeds.argmax(axis=1)
        return count, first, i[:, 0] + self.pad - first * self.stride


def _window_axes(stage: Stage) -> list[_Axis]:
    return [_Axis.of(stage, axis) for axis in range(len(stage.input_shape) - 1)]


# ---------------------------------------------------------------- per-block use


def _same_weights(stage: Stage, windows: np.ndarray, axes: list[_Axis], k0: int, k1: int):
    """An id per clipped window (tap row, rows, tap col, cols): equal ids, equal weights.

    A split block stores a weight entry once when its weights and indices are equal (an
    OR-pool's windows of one size all hold the same ones); an unsplit stage keeps
    nengo-loihi's convolution weights, one entry per clipped window.
    """
    if len(windows) and (k0, k1) == (None, None):
        return np.arange(len(windows))
    if stage.kind == "pool":
        return np.unique(windows[:, [1, 3]], axis=0, return_inverse=True)[1].ravel()
    ids, seen = [], {}
    for t_r, n_r, t_c, n_c in windows:
        rows = t_r - axes[0].stride * np.arange(n_r)
        cols = t_c - axes[1].stride * np.arange(n_c)
        key = stage.weights[np.ix_(rows, cols)][..., k0:k1].tobytes()
        ids.append(seen.setdefault((n_r, n_c, key), len(seen)))
    return np.array(ids)


def _conv_block(stage: Stage, axes: list[_Axis], region, whole: bool) -> tuple[dict, np.ndarray]:
    """In-axons and synapse bits of one block of a convolution / OR-pool stage.

    Also returns the boolean (input pixels,) mask of the pixels that send it axons. An
    unsplit stage (``whole``) keeps one input axon per input pixel, used or not.
    """
    (r0, r1), (c0, c1), (k0, k1) = region
    c_in = stage.input_shape[-1]
    rows, cols = axes[0].reach(r0, r1), axes[1].reach(c0, c1)
    width, depth = c1 - c0, k1 - k0
    used = (rows[0][:, None] > 0) & (cols[0][None, :] > 0)
    n_r, y0, t_r = (np.broadcast_to(a[:, None], used.shape)[used] for a in rows)
    n_c, x0, t_c = (np.broadcast_to(a[None, :], used.shape)[used] for a in cols)
    base = ((y0 - r0) * width + (x0 - c0)) * depth
    windows, which = np.unique(np.stack([t_r, n_r, t_c, n_c], axis=1), axis=0, return_inverse=True)
    values = (None, None) if whole else (k0, k1)
    same = _same_weights(stage, windows, axes, *values)[which.ravel()]
    entries = np.unique(np.stack([same, n_r, n_c, base // 256], axis=1), axis=0)
    _, n_r, n_c, high = entries.T
    max_index = int((256 * high + ((n_r - 1) * width + n_c) * depth - 1).max(initial=0))
    bits_per_weight = WEIGHT_BITS + _index_bits(max_index)
    bits = _bits_per_axon(c_in * n_r * n_c * depth, bits_per_weight).sum()
    if whole:
        used = np.ones_like(used)
    use = {"compartments": (r1 - r0) * width * depth, "in_axons": int(used.sum())}
    return {**use, "synapse_bits": int(bits)}, used.ravel()


def _dense_block(stage: Stage, lo: int, hi: int) -> dict:
    """In-axons and synapse bits of one block of a dense stage (no index bits)."""
    n_in = stage.in_size
    bits = n_in * int(_bits_per_axon(hi - lo, WEIGHT_BITS))
    return {"compartments": hi - lo, "in_axons": n_in, "synapse_bits": bits}


def _count(shape: tuple[int, ...], block: tuple[int, ...]) -> int:
    return math.prod(math.ceil(n / b) for n, b in zip(shape, block, strict=True))


def _regions(shape: tuple[int, ...], block: tuple[int, ...]) -> list[tuple]:
    return list(itertools.product(*(_ranges(n, b) for n, b in zip(shape, block, strict=True))))


def _is_window(stage: Stage) -> bool:
    return stage.kind in ("conv", "pool") and len(stage.output_shape) == 3


def _inputs_use(stage: Stage, block: tuple[int, ...]) -> tuple[list[dict], np.ndarray | None]:
    """Per block: compartments, in-axons, synapse bits; and which input pixels feed it."""
    regions = _regions(stage.output_shape, block)
    if not _is_window(stage):
        return [_dense_block(stage, *region[0]) for region in regions], None
    axes = _window_axes(stage)
    results = [_conv_block(stage, axes, region, len(regions) == 1) for region in regions]
    return [r[0] for r in results], np.array([r[1] for r in results])


def _first_block_fits(stage: Stage, block: tuple[int, ...]) -> bool:
    """Quick screen: whether the first (corner) block fits, output axons aside."""
    regions = _regions(stage.output_shape, block)
    if _is_window(stage):
        use = _conv_block(stage, _window_axes(stage), regions[0], len(regions) == 1)[0]
    else:
        use = _dense_block(stage, *regions[0][0])
    return all(use[k] <= LIMITS[k] for k in use)


def _out_axons(source_shape, block, target: StagePartition | None, feeds, slots: int):
    """Output axon slots of each block of a stage feeding ``target`` (None: last stage)."""
    regions = _regions(source_shape, block)
    if target is None:
        return [0] * len(regions)
    if feeds is None:  # dense target: one axon per neuron and target block
        return [math.prod(b - a for a, b in region) * target.cores for region in regions]
    pixels = feeds.shape[1]  # the target's input pixels; its channels are the atoms
    channels = math.prod(source_shape) // pixels
    flat = np.arange(math.prod(source_shape)).reshape(source_shape)
    member = np.zeros((len(regions), pixels), bool)
    for index, region in enumerate(regions):
        member[index, flat[tuple(slice(a, b) for a, b in region)].ravel() // channels] = True
    return (slots * (member.astype(np.int64) @ feeds.T.astype(np.int64)).sum(axis=1)).tolist()


# ---------------------------------------------------------------- the search


def _candidates(shape: tuple[int, ...]) -> list[tuple[int, ...]]:
    """Block shapes with at most 1024 compartments, fewest blocks first, whole channels first."""
    options = [sorted({math.ceil(n / m) for m in range(1, n + 1)}, reverse=True) for n in shape]
    found = [b for b in itertools.product(*options) if math.prod(b) <= LIMITS["compartments"]]
    cores = {b: _count(shape, b) for b in found}
    return sorted(found, key=lambda b: (cores[b], -b[-1], [-s for s in b]))


def _evaluate(stage, block, target, target_feeds, slots) -> tuple[StagePartition, object]:
    blocks, feeds = _inputs_use(stage, block)
    out = _out_axons(stage.output_shape, block, target, target_feeds, slots)
    for use, axons in zip(blocks, out, strict=True):
        use["out_axons"] = int(axons)
    return StagePartition(stage.name, stage.output_shape, tuple(block), blocks=blocks), feeds


def _fits(part: StagePartition) -> bool:
    return not part.over()


def _unplaceable(stage: Stage, smallest: StagePartition) -> LoihiPartitionError:
    return LoihiPartitionError(
        f"stage {stage.name!r} cannot be placed on Loihi cores: even one neuron per core "
        f"exceeds a per-core limit ({'; '.join(smallest.over())}). A dense stage takes one "
        "input axon per input neuron and stores all its weights on each core: shrink the "
        "layer before it (more pooling or fewer channels before Flatten), or use fewer "
        "neurons per stage."
    )


def _pinned(stage: Stage, shape) -> tuple[int, ...]:
    block = tuple(int(b) for b in shape)
    if len(block) != len(stage.output_shape) or min(block, default=0) < 1:
        raise LoihiPartitionError(
            f"block shape {block} pinned for stage {stage.name!r}: give one positive size "
            f"per axis of its output {stage.output_shape} (channels last), e.g. "
            f"{tuple(max(1, n // 2) for n in stage.output_shape)}."
        )
    return block


def partition(
    stages: list[Stage], pinned: dict | None = None, pop_type: int = 32
) -> list[StagePartition]:
    """A block shape for every stage in ``stages`` (the on-chip ones, in order).

    Args:
        stages: the on-chip stages, input side first.
        pinned: ``{stage name: block shape}`` kept as given (checked, not changed).
        pop_type: population axon type of convolutions (32 takes two output slots).

    Raises:
        LoihiPartitionError: a stage that fits no block shape, or a pinned shape that
            exceeds a per-core limit (with the numbers and what to change).

    Example:
        >>> import numpy as np
        >>> dense = Stage("d", "dense", (5000,), (10,), np.ones((5000, 10), "float32"))
        >>> partition([dense])  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        whetstone.backends.loihi_partition.LoihiPartitionError: stage 'd' cannot be placed ...
    """
    pinned = dict(pinned or {})
    slots = 2 if pop_type == 32 else 1
    plan: list[StagePartition] = []
    target, target_feeds = None, None
    for stage in reversed(stages):
        if stage.name in pinned:
            block = _pinned(stage, pinned[stage.name])
            part, feeds = _evaluate(stage, block, target, target_feeds, slots)
            part.pinned = True
            if not _fits(part):
                raise LoihiPartitionError(
                    f"block shape {block} pinned for stage {stage.name!r} (output "
                    f"{stage.output_shape}) exceeds Loihi's per-core limits: "
                    f"{'; '.join(part.over())}. Pin a smaller shape, or drop the pin to "
                    "let whetstone choose one."
                )
        else:
            part = feeds = None
            for block in _candidates(stage.output_shape):
                if not _first_block_fits(stage, block):
                    continue
                part, feeds = _evaluate(stage, block, target, target_feeds, slots)
                if _fits(part):
                    break
            if part is None or not _fits(part):
                smallest = _evaluate(stage, (1,) * len(stage.output_shape), target,
                                     target_feeds, slots)[0]  # fmt: skip
                raise _unplaceable(stage, smallest)
        plan.append(part)
        target, target_feeds = part, feeds
    return plan[::-1]


def check_chips(plan: list[StagePartition], chips: int | None) -> None:
    """Raise when the partition needs more cores than ``chips`` chips hold (None: no limit).

    Example:
        >>> check_chips([StagePartition("d", (300,), (1,))], chips=2)
        Traceback (most recent call last):
        ...
        whetstone.backends.loihi_partition.LoihiPartitionError: the network needs 300 Loihi \
cores (3 chips at 128 cores each) but 2 chips (256 cores) are available; ...
    """
    cores = sum(p.cores for p in plan)
    available = None if chips is None else chips * LIMITS["cores_per_chip"]
    if available is None or cores <= available:
        return
    per_stage = ", ".join(f"{p.name}: {p.cores}" for p in plan)
    raise LoihiPartitionError(
        f"the network needs {cores} Loihi cores "
        f"({math.ceil(cores / LIMITS['cores_per_chip'])} chips at "
        f"{LIMITS['cores_per_chip']} cores each) but {chips} chips ({available} cores) are "
        f"available; cores per stage: {per_stage}. Allow more chips (chips=...), or shrink "
        "the largest stages (fewer channels, more pooling, smaller dense layers)."
    )
