"""Spike budget: accuracy against synaptic operations and Loihi energy on conv_mnist.

The committed sharpened conv_mnist (``benchmarks.trained.sharpened_model``) is
fine-tuned for ``EPOCHS`` honing epochs (the recipe's honing learning rate, seed 0) with a
``whetstone.spike_budget.SpikeBudget`` of each strength in ``STRENGTHS`` on the OR-pools
whose spikes feed an on-chip convolution or dense layer (``budget_layers``; BatchNorm folded
first); strength 0 is the same fine-tune without a budget, so the curve separates what the
budget does from what the extra epochs do. Each model is converted and run on the full
test set by the reference simulator, which counts synaptic operations and spikes; the
Loihi energy per inference comes from ``whetstone.energy`` (pipelined, one neuron update
per inference). The committed model itself is the first point.

    python -m benchmarks run spike_budget                           # full: 10,000 test images
    python -m benchmarks.spike_budget --quick --dataset demo --out /tmp/sb   # smoke

Writes ``results/spike_budget.json`` and ``results/spike_budget.png``.

Example:
    >>> round(reduction(100.0, 75.0), 3)
    0.25
"""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import click
import numpy as np

from benchmarks.common import RESULTS, write_result
from whetstone import files

MODEL = "conv_mnist"
STRENGTHS = (0.0, 2.0, 8.0, 32.0)
"""Budget strengths (loss per unit of firing rate above the budget rate); 0: no budget."""
LAYERS = None
"""Where the budget goes (None: :func:`budget_layers` of the model). On conv_mnist that is
pool_1, whose spikes each reach up to 576 synapses of conv_2 (3 x 3 x 64), and pool_2,
which feeds dense_1: almost every synaptic operation (the others reach the OR-pools, one
synapse each)."""
RATE = 0.0
"""The budget rate: every spike costs."""
EPOCHS = 2
SEED = 0


def budget_layers(net) -> list[str]:
    """The OR-pools whose spikes feed an on-chip Dense/Conv stage (wide fan-out).

    Example:
        >>> from types import SimpleNamespace as S
        >>> net = S(stages=[S(name="conv_1", kind="conv"), S(name="pool_1", kind="pool"),
        ...                 S(name="conv_2", kind="conv"), S(name="pool_2", kind="pool")])
        >>> budget_layers(net)
        ['pool_1']
    """
    pairs = zip(net.stages, net.stages[1:], strict=False)
    return [stage.name for stage, after in pairs if stage.kind == "pool" and after.kind != "pool"]


def reduction(before: float, after: float) -> float:
    """The fraction by which ``after`` is below ``before``."""
    return 1.0 - after / before


def fine_tune(data_dir, data, strength: float, epochs: int, batch_size: int, layers=LAYERS):
    """The committed sharp model, honed ``epochs`` more epochs with a budget of ``strength``."""
    import keras

    import whetstone as ws
    from benchmarks import trained
    from whetstone.spike_budget import set_spike_budget

    recipe = trained.RECIPES[MODEL]
    (x, y), _ = data
    keras.utils.set_random_seed(SEED)
    model = ws.quantize.fold_batch_norm(trained.sharpened_model(MODEL, data_dir))
    layers = budget_layers(ws.convert.to_spiking(model)) if layers is None else list(layers)
    set_spike_budget(model, strength, RATE, layers)
    optimizer = keras.optimizers.get(
        {"class_name": recipe.optimizer, "config": {"learning_rate": recipe.hone_learning_rate}}
    )
    model.compile(optimizer, "categorical_crossentropy", metrics=["accuracy"])
    started = time.perf_counter()
    model.fit(x, keras.utils.to_categorical(y, 10), epochs=epochs, batch_size=batch_size,
              verbose=2)  # fmt: skip
    return model, round(time.perf_counter() - started, 1)


def evaluate(model, x_test: np.ndarray, y_test: np.ndarray) -> dict:
    """Accuracy (Keras and reference), spikes, synaptic operations and Loihi energy."""
    import whetstone as ws

    net = ws.convert.to_spiking(model)
    keras_pred = model.predict(x_test, verbose=0, batch_size=1000).argmax(axis=1)
    result = ws.simulate.run(net, x_test)
    energy = ws.energy.estimate(net, result)
    return {
        "keras_accuracy": round(float((keras_pred == y_test).mean()), 6),
        "accuracy": round(float((result.predictions == y_test).mean()), 6),
        "agreement_with_keras": round(float((result.predictions == keras_pred).mean()), 6),
        "spikes_per_stage": dict(
            zip(
                [s.name for s in net.stages],
                result.spikes_per_inference.round(2).tolist(),
                strict=True,
            )
        ),
        "synaptic_operations": energy["synaptic_operations"],
        "on_chip_spikes": energy["spikes"],
        "neuron_updates": energy["neuron_updates"],
        "ann_macs": result.ann_macs,
        "energy_nj": round(energy["energy_nj"], 2),
        "energy_parts_nj": {
            part: round(energy[f"{part}_j"] * 1e9, 2)
            for part in ("synaptic_ops", "spikes", "neuron_updates")
        },
    }


def measure(data_dir, dataset: str | None = None, quick: bool = False) -> dict:
    """The committed model, then one fine-tune per strength, each evaluated."""
    import whetstone as ws
    from benchmarks import trained

    recipe = trained.RECIPES[MODEL]
    epochs, n_train, n_test = EPOCHS, None, None
    if quick:
        epochs, (n_train, n_test) = 1, (trained.QUICK_IMAGES[0], 200)
    dataset = dataset or recipe.dataset
    (x, y), (x_test, y_test) = ws.datasets.load(dataset, data_dir)
    data = (x[:n_train], y[:n_train]), (x_test[:n_test], y_test[:n_test])
    committed = trained.sharpened_model(MODEL, data_dir)
    points = [{"strength": None, "epochs": 0, "train_seconds": 0.0,
               **evaluate(committed, *data[1])}]  # fmt: skip
    print(points[-1], flush=True)
    for strength in STRENGTHS:
        model, seconds = fine_tune(data_dir, data, strength, epochs, recipe.batch_size)
        points.append({"strength": strength, "epochs": epochs, "train_seconds": seconds,
                       **evaluate(model, *data[1])})  # fmt: skip
        print(points[-1], flush=True)
    base = points[1]  # the same fine-tune without a budget
    for point in points:
        point["accuracy_change_points"] = round(100 * (point["accuracy"] - base["accuracy"]), 3)
        point["synaptic_operations_reduction"] = round(
            reduction(base["synaptic_operations"], point["synaptic_operations"]), 4
        )
        point["energy_reduction"] = round(reduction(base["energy_nj"], point["energy_nj"]), 4)
    return {
        "model": MODEL,
        "dataset": dataset,
        "quick": quick,
        "seed": SEED,
        "fine_tune": {
            "from": f"benchmarks.trained.sharpened_model({MODEL!r})",
            "epochs": epochs,
            "learning_rate": recipe.hone_learning_rate,
            "optimizer": recipe.optimizer,
            "batch_size": recipe.batch_size,
            "budget_rate": RATE,
            "budget_layers": LAYERS or budget_layers(ws.convert.to_spiking(committed)),
            "batch_norm": "folded into the convolutions before fine-tuning",
        },
        "energy_costs": dataclasses.asdict(ws.energy.LOIHI),
        "train_images": len(data[0][0]),
        "test_images": len(data[1][0]),
        "points": points,
    }


def plot(result: dict, path: Path) -> Path:
    """Accuracy against synaptic operations per image; each point labelled with its energy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    tuned = [p for p in result["points"] if p["strength"] is not None]
    ax.plot([p["synaptic_operations"] for p in tuned], [100 * p["accuracy"] for p in tuned],
            "-", color="grey", lw=1, zorder=1)  # fmt: skip
    for point in result["points"]:
        name = "committed" if point["strength"] is None else f"strength {point['strength']:g}"
        xy = (point["synaptic_operations"], 100 * point["accuracy"])
        ax.plot(*xy, "s" if point["strength"] is None else "o", zorder=2)
        below = point["strength"] is None  # apart from the no-budget fine-tune beside it
        ax.annotate(f"{name}\n{point['energy_nj'] / 1000:.2f} µJ", xy, textcoords="offset points",
                    xytext=(5, -22 if below else 4), fontsize=8)  # fmt: skip
    ax.set_xlabel("synaptic operations per image")
    ax.set_ylabel(f"test accuracy (%), {result['test_images']:,} images")
    ax.set_title(f"{result['model']}: spike budget, {result['fine_tune']['epochs']} honing "
                 "epochs each; label: Loihi energy per image", fontsize=9)  # fmt: skip
    ax.margins(x=0.15, y=0.15)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    with files.staged(path, force=True) as staging:
        fig.savefig(staging, dpi=120)
    plt.close(fig)
    return path


@click.command()
@click.option("--data", "data_dir", envvar="WHETSTONE_DATA", default="../shared/data",
              show_default=True, help="folder with mnist/")  # fmt: skip
@click.option("--dataset", default=None, help="another dataset (e.g. demo); default: mnist")
@click.option("--quick", is_flag=True, help="smoke run: a few hundred images, one epoch")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="results folder (default: benchmarks/results; needed with --quick)")  # fmt: skip
def main(data_dir: str, dataset: str | None, quick: bool, out: Path | None) -> None:
    """Fine-tune conv_mnist under spike budgets; write spike_budget.json and .png."""
    if quick and out is None:
        raise click.UsageError("--quick needs --out: smoke results never replace committed ones.")
    folder = out or RESULTS
    started = time.perf_counter()
    result = measure(data_dir, dataset, quick)
    result["wall_seconds"] = round(time.perf_counter() - started, 1)
    click.echo(f"wrote {write_result('spike_budget', result, folder=folder)}")
    click.echo(f"wrote {plot(result, folder / 'spike_budget.png')}")


if __name__ == "__main__":
    main()
