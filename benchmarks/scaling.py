"""Throughput of the reference simulator against network width and depth (generated networks).

Random dense chains (``depth`` stages of ``width`` neurons, 784 binary inputs, thresholds
set so that about a tenth of the neurons fire) run on the fast path and its oracle; per
size it records images/s, synaptic operations and synapses per image, and the time per
synaptic operation and per synapse, so that the table says which part grows faster than
the work. Writes ``results/scaling.json`` and ``results/scaling.png``.

    python -m benchmarks.scaling --images 2000

Example:
    >>> from benchmarks.scaling import network
    >>> net = network(width=16, depth=2)
    >>> [s.output_shape for s in net.stages]
    [(16,), (16,)]
"""

from __future__ import annotations

import time
from pathlib import Path

import click
import numpy as np

from benchmarks.common import RESULTS, write_result
from whetstone import simulate
from whetstone.network import SpikingNetwork, Stage

INPUTS = 784
WIDTHS = (64, 256, 1024)
DEPTHS = (1, 2, 4, 8)


def network(width: int, depth: int, seed: int = 0) -> SpikingNetwork:
    """A dense chain on binary inputs whose neurons fire about one time in ten."""
    rng = np.random.default_rng(seed)
    stages, n_in = [], INPUTS
    for i in range(depth):
        w = rng.normal(0, 1 / np.sqrt(n_in), (n_in, width)).astype(np.float32)
        stages.append(Stage(f"d{i}", "dense", (n_in,), (width,), w, None, 0.4))
        n_in = width
    return SpikingNetwork((INPUTS,), stages, input_encoding="binary")


def _rate(net: SpikingNetwork, x: np.ndarray, mode: str, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        simulate.run(net, x, mode)
        times.append(time.perf_counter() - start)
    return len(x) / min(times)


def measure(width: int, depth: int, images: int, repeats: int) -> dict:
    """One size: images/s of both paths, work per image, seconds per unit of work."""
    net = network(width, depth)
    x = (np.random.default_rng(1).uniform(size=(images, INPUTS)) < 0.15).astype(np.float32)
    result = simulate.run(net, x[:200])  # compiles and measures the BLAS order once
    fast, oracle = _rate(net, x, "fast", repeats), _rate(net, x, "batch", repeats)
    synops = result.synops_per_inference  # binary input: every stage is on chip
    return {
        "width": width,
        "depth": depth,
        "synapses": net.num_synapses,
        "synops_per_image": round(synops, 1),
        "fast_images_per_s": round(fast, 1),
        "oracle_images_per_s": round(oracle, 1),
        "fast_ns_per_synop": round(1e9 / fast / max(synops, 1), 3),
        "oracle_ns_per_synapse": round(1e9 / oracle / net.num_synapses, 3),
    }


def plot(rows: list[dict], path) -> None:
    """Images/s against synapses, one line per path and width."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for width in sorted({r["width"] for r in rows}):
        mine = [r for r in rows if r["width"] == width]
        synapses = [r["synapses"] for r in mine]
        ax.loglog(synapses, [r["fast_images_per_s"] for r in mine], "o-", label=f"fast, {width}")
        ax.loglog(synapses, [r["oracle_images_per_s"] for r in mine], "x--", label=f"BLAS, {width}")
    ax.set_xlabel("synapses (depth grows along each line)")
    ax.set_ylabel("images/s")
    ax.legend(title="path, width", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


@click.command()
@click.option("--images", default=2000, show_default=True)
@click.option("--repeats", default=2, show_default=True)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=RESULTS)
def main(images: int, repeats: int, out: Path) -> None:
    """Measure every width and depth; write ``scaling.json`` and ``scaling.png`` into ``out``."""
    rows = [measure(w, d, images, repeats) for w in WIDTHS for d in DEPTHS]
    out.mkdir(parents=True, exist_ok=True)
    plot(rows, out / "scaling.png")
    click.echo(f"wrote {write_result('scaling', {'images': images, 'rows': rows}, folder=out)}")


if __name__ == "__main__":
    main()
