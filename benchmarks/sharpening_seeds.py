"""The sharpening step over seeds: is a margin to the 3-point target wider than the spread
of sharpening itself? One trained ANN (a ``from_baseline`` recipe's committed baseline) is
sharpened and honed again by the same recipe with other seeds (batch order and
augmentation), and every run, the committed one (the recipe's seed) included, is measured
on the whole test set in Keras and in the reference simulator, in
``results/sharpening_seeds_<model>.json``:

    python -m benchmarks.sharpening_seeds vgg_cifar10_64 --seeds 1

``--weights DIR`` also saves each new run's model there (``<model>_seed<seed>.keras``).

Example:
    >>> lost_to(0.8205, [{"keras_accuracy": 0.7921}, {"keras_accuracy": 0.79}])
    {'mean': 0.02945, 'std': 0.00105}
"""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path

import click

from benchmarks import trained
from benchmarks.common import RESULTS, write_result
from benchmarks.seeds import mean_std
from whetstone import files


def evaluate(model, x, y) -> dict:
    """Keras's and the reference simulator's accuracy, and where they differ."""
    import whetstone as ws

    keras_pred = model.predict(x, verbose=0, batch_size=1000).argmax(axis=1)
    result = ws.simulate.run(ws.convert.to_spiking(model), x)
    differ = result.predictions != keras_pred
    return {
        "keras_accuracy": float((keras_pred == y).mean()),
        "reference_accuracy": float((result.predictions == y).mean()),
        "disagreements": int(differ.sum()),
        "disagreements_without_tie": int((differ & ~result.tie_mask).sum()),
        "decoder_ties": result.decoder_ties,
    }


def lost_to(ann: float, runs: list[dict]) -> dict:
    """Mean and spread of the points each run lost to the ANN."""
    return mean_std([ann - run["keras_accuracy"] for run in runs])


def sharpen_again(name: str, seed: int, data_dir) -> tuple:
    """Recipe ``name``'s committed ANN sharpened and honed with ``seed``: model, seconds."""
    recipe = dataclasses.replace(trained.RECIPES[name], seed=seed)
    if not recipe.from_baseline:
        raise click.UsageError(f"{name}: not sharpened from a trained ANN (from_baseline).")
    start = trained.baseline_model(name, data_dir)
    model, report = trained.train(recipe, data_dir, start=start)
    return model, report["train_seconds"]


def measure(name: str, seeds: list[int], data_dir, weights: Path | None = None) -> dict:
    """The committed run and one run per seed in ``seeds``, with the mean, the spread and
    the most lost to the recipe's ANN; ``weights``: a folder for the new runs' models."""
    import whetstone as ws

    _, (x, y) = ws.datasets.load(trained.RECIPES[name].dataset, data_dir)
    committed = trained.report(name, True)
    runs = [{"seed": trained.RECIPES[name].seed, "train_seconds": committed["train_seconds"],
             **evaluate(trained.sharpened_model(name, data_dir), x, y)}]  # fmt: skip
    for seed in seeds:
        model, seconds = sharpen_again(name, seed, data_dir)
        if weights is not None:
            weights.mkdir(parents=True, exist_ok=True)
            with files.staged(weights / f"{name}_seed{seed}.keras", force=True) as staging:
                model.save(staging)
        runs.append({"seed": seed, "train_seconds": seconds, **evaluate(model, x, y)})
        click.echo(runs[-1])
    ann = trained.report(name, False)["test_accuracy"]
    return {
        "model": name,
        "test_images": len(x),
        "ann_accuracy": ann,
        "runs": runs,
        "summary": {
            "keras_accuracy": mean_std([r["keras_accuracy"] for r in runs]),
            "lost": lost_to(ann, runs),
            "worst_lost": round(ann - min(r["keras_accuracy"] for r in runs), 6),
        },
    }


@click.command()
@click.argument("name")
@click.option("--seeds", default="1", help="comma-separated seeds to sharpen with")
@click.option("--data", "data_dir", default=os.environ.get("WHETSTONE_DATA", "../shared/data"))
@click.option("--out", type=click.Path(path_type=Path), default=RESULTS)
@click.option("--weights", type=click.Path(path_type=Path), default=None)
def main(name: str, seeds: str, data_dir: str, out: Path, weights: Path | None) -> None:
    """Sharpen recipe NAME's committed ANN again with other seeds; measure every run."""
    started = time.perf_counter()
    result = measure(name, [int(s) for s in seeds.split(",")], data_dir, weights)
    result["wall_seconds"] = round(time.perf_counter() - started, 1)
    click.echo(f"wrote {write_result(f'sharpening_seeds_{name}', result, folder=out)}")


if __name__ == "__main__":
    main()
