"""One entry point for every benchmark: ``python -m benchmarks``.

    python -m benchmarks list                      # the suites
    python -m benchmarks run mnist fashion peer    # full runs -> benchmarks/results/
    python -m benchmarks run mnist --quick --out /tmp/smoke   # smoke run, tiny subset
    python -m benchmarks report                    # benchmarks/README.md, plots, README

Each model suite writes ``suite_<name>.json`` (every figure, versions, machine, seed,
command, wall time) and ``suite_<name>.csv`` (one row of headline numbers per model).
"""

from __future__ import annotations

import csv
import os
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import click

from benchmarks import suite, trained
from benchmarks.common import RESULTS, write_result
from whetstone import files

OTHER_SUITES = {
    "peer": "NengoDL's rate-coded converter on the same architectures (own environment)",
    "overhead": "training time per epoch with and without a sharpener, interleaved",
    "cli": "the README's command-line examples and their output",
    "from_relu": "a trained keras.io ReLU convnet rewritten, sharpened in 5 epochs, run spiking",
    "seeds": "dense_mnist sharpened and not over 3 seeds: mean and standard deviation",
    "honing": "honing variants (surrogate width, learning rate) and decoders, dense MNIST",
    "weight_sharpening": "dense_mnist with and without weight sharpening for Loihi and SpiNNaker",
    "weight_sharpening_conv": "conv_mnist fine-tuned with and without weight sharpening",
    "spike_budget": "conv_mnist fine-tuned under spike budgets: accuracy, synaptic ops, energy",
    "scaling": "simulator and back-end throughput against width and depth, generated networks",
}


def _write_csv(path: Path, rows: list[dict]) -> None:
    with files.staged(path, force=True) as staging, open(staging, "x", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def run_model_suite(name: str, data_dir: str, out: Path, quick: bool) -> None:
    """Evaluate every model of suite ``name``; write its JSON and CSV into ``out``."""
    started = time.perf_counter()
    models = suite.SUITES[name]
    datasets = sorted({trained.RECIPES[m].dataset for m in models})
    try:
        import whetstone as ws

        for dataset in datasets:
            ws.datasets.load(dataset, data_dir)
    except Exception as error:  # e.g. CIFAR-10 without network access
        note = f"skipped: {dataset} could not be loaded ({type(error).__name__}: {error})"
        click.echo(f"{name}: {note}", err=True)
        write_result(f"suite_{name}", {"suite": name, "skipped": note}, folder=out)
        return
    figures = [suite.evaluate(model, data_dir, quick=quick) for model in models]
    rows = [suite.summary_row(f) for f in figures]
    result = {
        "suite": name,
        "quick": quick,
        "datasets": datasets,
        "seed": 0,
        "subsets": {
            **{
                b: {f["model"]: f["sizes"][b]["images"] for f in figures} for b in ("loihi", "nest")
            },
            **{b: {m: suite.subset(b, m, quick) for m in models} for b in suite.SUBSETS},
        },
        "summary": rows,
        "models": figures,
        "wall_seconds": round(time.perf_counter() - started, 1),
    }
    click.echo(f"wrote {write_result(f'suite_{name}', result, folder=out)}")
    _write_csv(out / f"suite_{name}.csv", rows)


def run_other_suite(name: str, data_dir: str, out: Path, quick: bool) -> None:
    if name == "peer":
        from benchmarks import peer_nengodl

        args = ["--data", data_dir, "--out", str(out)] + (["--quick"] if quick else [])
        if peer_nengodl.main(args) != 0:
            raise click.ClickException("the NengoDL peer benchmark failed (see above).")
    elif name == "overhead":
        from benchmarks import sharpener_overhead

        args = ["--data-dir", data_dir, "--out", str(out), "--repeats", "3"]
        if quick:
            args = ["--data-dir", data_dir, "--out", str(out), "--dataset", "demo"]
            args += ["--repeats", "1", "--epochs", "2", "--limit", "1000"]
        sharpener_overhead.main(args)
    elif name == "cli":
        from benchmarks import cli_examples

        cli_examples.main(out)
    elif name == "from_relu":
        from benchmarks import from_relu

        from_relu.main(["--data", data_dir, "--out", str(out)] + (["--quick"] if quick else []))
    elif name == "seeds":
        from benchmarks import seeds

        n_test = 100 if quick else None
        result = seeds.measure(data_dir, seeds=(0, 1) if quick else seeds.SEEDS, n_test=n_test)
        click.echo(f"wrote {write_result('seeds', result, folder=out)}")
    elif name == "honing":
        from benchmarks import honing

        if quick:  # it needs a fully sharp network: no one-epoch version of it
            click.echo("honing: no quick mode (it sharpens dense_mnist fully); skipped", err=True)
            return
        honing.main(["--data", data_dir, "--out", str(out)], standalone_mode=False)
    elif name == "weight_sharpening":
        from benchmarks import weight_sharpening

        args = ["--data", data_dir, "--out", str(out)] + (["--quick"] if quick else [])
        weight_sharpening.main(args, standalone_mode=False)
    elif name == "weight_sharpening_conv":
        from benchmarks import weight_sharpening

        args = ["--data", data_dir, "--out", str(out), "--model", "conv_mnist"]
        weight_sharpening.main(args + (["--quick"] if quick else []), standalone_mode=False)
    elif name == "spike_budget":
        from benchmarks import spike_budget

        args = ["--data", data_dir, "--out", str(out)] + (["--quick"] if quick else [])
        spike_budget.main(args, standalone_mode=False)
    elif name == "scaling":
        from benchmarks import scaling

        quick_args = ["--images", "200", "--repeats", "1", "--backend-images", "5",
                      "--backend-synapses", "100000"]  # fmt: skip
        args = ["--out", str(out)] + (quick_args if quick else [])
        scaling.main(args, standalone_mode=False)


@click.group()
def main() -> None:
    """Whetstone's benchmarks: accuracy, latency and speed, against the peers."""


@main.command("list")
def list_suites() -> None:
    """Name and describe every suite."""
    for name, models in suite.SUITES.items():
        click.echo(f"{name:10s} models: {', '.join(models)}")
    for name, text in OTHER_SUITES.items():
        click.echo(f"{name:10s} {text}")


@main.command()
@click.argument(
    "suites", nargs=-1, required=True, type=click.Choice([*suite.SUITES, *OTHER_SUITES, "all"])
)
@click.option(
    "--data",
    "data_dir",
    envvar="WHETSTONE_DATA",
    default="../shared/data",
    show_default=True,
    help="folder with mnist/ and fashion-mnist/",
)
@click.option("--quick", is_flag=True, help="smoke run: a few images, one epoch")
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="results folder (default benchmarks/results; required with --quick)",
)
def run(suites: tuple[str, ...], data_dir: str, quick: bool, out: Path | None) -> None:
    """Run SUITES (``all``: every suite) and write their results."""
    if quick and out is None:
        raise click.UsageError("--quick needs --out: smoke results never replace committed ones.")
    out = out or RESULTS
    out.mkdir(parents=True, exist_ok=True)
    if quick:
        trained.configure(cache=out / "models", quick=True)
    names = [*suite.SUITES, *OTHER_SUITES] if "all" in suites else list(dict.fromkeys(suites))
    for name in names:
        click.echo(f"== suite {name}", err=True)
        if name in suite.SUITES:
            run_model_suite(name, data_dir, out, quick)
        else:
            run_other_suite(name, data_dir, out, quick)


@main.command()
@click.option(
    "--results",
    type=click.Path(file_okay=False, path_type=Path),
    default=RESULTS,
    show_default=True,
)
@click.option("--readme/--no-readme", default=True, help="also update the project README's blocks")
def report(results: Path, readme: bool) -> None:
    """Write benchmarks/README.md and the plots from the results files."""
    from benchmarks import report as report_module

    for path in report_module.write_all(results, update_readme=readme):
        click.echo(f"wrote {path}")


if __name__ == "__main__":
    main()
