"""Throughput against network width and depth, for the reference simulator and the back ends.

Generated dense chains (``depth`` stages of ``width`` neurons, 784 binary inputs, about
one neuron in seven firing) run on the simulator's fast path and its oracle
(``--images`` each, best of ``--repeats``) and on every installed back end (Nengo, the
Loihi integer emulator ``target="sim"``, PyNN on NEST; ``--backend-images`` each, on the
sizes up to ``--backend-synapses``). Per size and path it records images/s, build seconds,
synaptic operations and synapses per image. Then, per path and part (run, build), it fits
how the seconds grow with the work (a power law in the synaptic operations; for a build,
in the synapses): an exponent above 1 is a part that grows faster than the work. Writes
``results/scaling.json``, ``results/scaling.png`` and the table ``results/scaling.md``.
The defaults take under ten minutes on two quiet cores:

    python -m benchmarks.scaling

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
from whetstone import backends, files, simulate
from whetstone.network import SpikingNetwork, Stage

INPUTS = 784
WIDTHS = (64, 256, 1024)
DEPTHS = (1, 2, 4, 8)
BACKENDS = {
    "nengo": ("nengo", {}),
    "loihi": ("loihi emulator", {"target": "sim"}),
    "spinnaker": ("PyNN/NEST", {"simulator": "nest"}),
}
"""Back ends measured: the name of their rows and their run options (Loihi: the integer
emulator; the SpiNNaker back end's PyNN network on NEST)."""


def network(width: int, depth: int, seed: int = 0) -> SpikingNetwork:
    """A dense chain on binary inputs whose neurons fire about one time in seven."""
    rng = np.random.default_rng(seed)
    stages, n_in = [], INPUTS
    for i in range(depth):
        w = rng.normal(0, 1 / np.sqrt(n_in), (n_in, width)).astype(np.float32)
        stages.append(Stage(f"d{i}", "dense", (n_in,), (width,), w, None, 0.4))
        n_in = width
    return SpikingNetwork((INPUTS,), stages, input_encoding="binary")


def images(n: int) -> np.ndarray:
    """``n`` binary images, 15% of the inputs on."""
    return (np.random.default_rng(1).uniform(size=(n, INPUTS)) < 0.15).astype(np.float32)


def _rate(net: SpikingNetwork, x: np.ndarray, mode: str, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        simulate.run(net, x, mode)
        times.append(time.perf_counter() - start)
    return len(x) / min(times)


def measure(width: int, depth: int, n_images: int, repeats: int) -> list[dict]:
    """One size on the simulator: rows for the fast path and the oracle."""
    net = network(width, depth)
    x = images(n_images)
    result = simulate.run(net, x[:200])  # compiles and measures the BLAS order once
    work = _work(net, result.synops_per_inference)
    return [
        {**work, "path": "simulator", "images_per_s": round(_rate(net, x, "fast", repeats), 1)},
        {**work, "path": "oracle", "images_per_s": round(_rate(net, x, "batch", repeats), 1)},
    ]


def measure_backend(name: str, width: int, depth: int, n_images: int) -> dict:
    """One size on one back end: images/s of its run and seconds of its build."""
    net = network(width, depth)
    x = images(n_images)
    label, options = BACKENDS[name]
    result = backends.get(name).run(net, x, **options)
    synops = simulate.run(net, x).synops_per_inference
    return {
        **_work(net, synops),
        "path": label,
        "images_per_s": round(result.images_per_second, 2),
        "build_seconds": round(result.build_seconds, 3),
    }


def _work(net: SpikingNetwork, synops: float) -> dict:
    stage = net.stages[0]
    return {"width": stage.num_neurons, "depth": len(net.stages), "synapses": net.num_synapses,
            "synops_per_image": round(synops, 1)}  # fmt: skip


def growth(rows: list[dict]) -> list[dict]:
    """Per path and part, the exponent ``a`` of ``seconds ~ work ** a`` (least squares in
    logs): run seconds per image against synaptic operations per image, build seconds
    against synapses. ``a > 1``: the part grows faster than the work.

    Example:
        >>> rows = [{"path": "p", "synops_per_image": s, "synapses": s, "images_per_s": 1e6 / s}
        ...         for s in (10, 100, 1000)]
        >>> growth(rows)
        [{'path': 'p', 'part': 'run', 'against': 'synops_per_image', 'exponent': 1.0, 'faster_than_work': False}]
    """  # noqa: E501
    out = []
    for path in dict.fromkeys(r["path"] for r in rows):
        mine = [r for r in rows if r["path"] == path]
        parts = [("run", "synops_per_image", [1 / r["images_per_s"] for r in mine])]
        if all("build_seconds" in r for r in mine):
            parts.append(("build", "synapses", [r["build_seconds"] for r in mine]))
        for part, against, seconds in parts:
            work = [r[against] for r in mine]
            if len(set(work)) < 2 or min(seconds) <= 0:
                continue
            slope = float(np.polyfit(np.log(work), np.log(seconds), 1)[0])
            out.append({"path": path, "part": part, "against": against,
                        "exponent": round(slope, 2), "faster_than_work": slope > 1.1})  # fmt: skip
    return out


def table(rows: list[dict], growths: list[dict]) -> str:
    """The Markdown table of every row, then one line per fitted growth."""
    lines = ["| path | width | depth | synapses | synops/image | images/s | build s |",
             "|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        build = f"{r['build_seconds']:.2f}" if "build_seconds" in r else ""
        cells = [r["path"], r["width"], r["depth"], f"{r['synapses']:,}",
                 f"{r['synops_per_image']:,.0f}", f"{r['images_per_s']:,.1f}", build]  # fmt: skip
        lines.append("| " + " | ".join(map(str, cells)) + " |")
    lines.append("")
    for g in growths:
        verdict = "grows faster than the work" if g["faster_than_work"] else "grows with the work"
        lines.append(f"- {g['path']} {g['part']}: seconds ~ {g['against']}^{g['exponent']} "
                     f"({verdict})")  # fmt: skip
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], path) -> None:
    """Images/s against synaptic operations per image, one line per path and width."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    marks = dict(zip(dict.fromkeys(r["path"] for r in rows), "ox^sdv*", strict=False))
    for (name, width), mine in _lines(rows).items():
        ax.loglog([r["synops_per_image"] for r in mine], [r["images_per_s"] for r in mine],
                  f"{marks[name]}-", label=f"{name}, {width}")  # fmt: skip
    ax.set_xlabel("synaptic operations per image (depth grows along each line)")
    ax.set_ylabel("images/s")
    ax.legend(title="path, width", fontsize=6, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def _lines(rows: list[dict]) -> dict:
    lines: dict = {}
    for r in rows:
        lines.setdefault((r["path"], r["width"]), []).append(r)
    return lines


@click.command()
@click.option("--images", "n_images", default=2000, show_default=True, help="per simulator run")
@click.option("--repeats", default=2, show_default=True)
@click.option("--backend-images", default=50, show_default=True, help="per back-end run")
@click.option("--backend-synapses", default=1_300_000, show_default=True,
              help="back ends run the sizes with at most this many synapses")  # fmt: skip
@click.option("--backends", "names", default=",".join(BACKENDS), show_default=True)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=RESULTS)
def main(n_images, repeats, backend_images, backend_synapses, names, out: Path) -> None:
    """Measure every width and depth; write ``scaling.json``, ``.png`` and ``.md`` into ``out``."""
    started = time.perf_counter()
    rows = [row for w in WIDTHS for d in DEPTHS for row in measure(w, d, n_images, repeats)]
    skipped = []
    for name in [n for n in names.split(",") if n]:
        if not backends.get(name).is_available():
            skipped.append(name)
            click.echo(f"{name}: not installed, skipped", err=True)
            continue
        for w in WIDTHS:
            for d in DEPTHS:
                if network(w, d).num_synapses <= backend_synapses:
                    rows.append(measure_backend(name, w, d, backend_images))
                    click.echo(f"{name} {w}x{d}: {rows[-1]['images_per_s']} img/s", err=True)
    growths = growth(rows)
    out.mkdir(parents=True, exist_ok=True)
    plot(rows, out / "scaling.png")
    files.write_bytes(out / "scaling.md", table(rows, growths).encode(), force=True)
    click.echo(table(rows, growths))
    result = {"images": n_images, "backend_images": backend_images, "skipped": skipped,
              "rows": rows, "growth": growths,
              "minutes": round((time.perf_counter() - started) / 60, 1)}  # fmt: skip
    click.echo(f"wrote {write_result('scaling', result, folder=out)}")


if __name__ == "__main__":
    main()
