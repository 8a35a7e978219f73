"""Weight sharpening: dense_mnist trained with and without a weight sharpener per target.

The dense_mnist recipe (``benchmarks/trained.py``) is trained three times from the same
seed: as the recipe says (sharpened and honed), and the same with a
``WeightSharpener`` for Loihi and for SpiNNaker that moves the weights onto the target's
grid during the honing epochs. Each model is run on the test set in Keras, in the Loihi
integer emulator (``target="sim"``) and in SpiNNaker's fixed-point model
(``fixed_point_run``), and the benchmark reports accuracy, agreement with Keras, the
images that differ, and how many of those are not ties (the reference's ``tie_mask``).

    python -m benchmarks run weight_sharpening                  # full: 10,000 test images
    python -m benchmarks.weight_sharpening --quick --dataset demo --out /tmp/ws   # smoke

Writes ``results/weight_sharpening.json``.

Example:
    >>> agreement(np.array([1, 2, 3]), np.array([1, 2, 0]), np.array([False, False, True]))
    {'agreement': 0.666667, 'differing': 1, 'differing_not_ties': 0}
"""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import click
import numpy as np

from benchmarks import trained
from benchmarks.common import RESULTS, write_result

MODEL = "dense_mnist"
WEIGHT_STEPS = 5
"""Epochs from weight sharpness 0 to 1; the recipe's remaining honing epochs stay on grid."""
VARIANTS = (None, "loihi", "spinnaker")


def agreement(predictions: np.ndarray, keras_pred: np.ndarray, ties: np.ndarray) -> dict:
    """How often ``predictions`` equal Keras's; the images that differ and are no tie."""
    differ = predictions != keras_pred
    return {
        "agreement": round(float(1.0 - differ.mean()), 6),
        "differing": int(differ.sum()),
        "differing_not_ties": int((differ & ~ties).sum()),
    }


def train(recipe, data, target: str | None, weight_steps: int):
    """The recipe's training loop, plus a WeightSharpener for ``target`` (None: none)."""
    import keras

    import whetstone as ws
    from whetstone.weight_sharpening import WeightSharpener

    (x, y), _ = data
    keras.utils.set_random_seed(recipe.seed)
    model = recipe.build_model()
    optimizer = keras.optimizers.get(
        {"class_name": recipe.optimizer, "config": {"learning_rate": recipe.learning_rate}}
    )
    model.compile(optimizer, "categorical_crossentropy", metrics=["accuracy"])
    callbacks = [
        ws.callbacks.SimpleSharpener(
            recipe.start_epoch, recipe.steps, per=recipe.per, stop_when_sharp=True,
            hone_epochs=recipe.hone_epochs, hone_learning_rate=recipe.hone_learning_rate,
            verbose=0,
        )
    ]  # fmt: skip
    if target is not None:
        callbacks.append(WeightSharpener(target, steps=weight_steps, verbose=0))
    started = time.perf_counter()
    history = model.fit(x, keras.utils.to_categorical(y, 10), epochs=recipe.epochs,
                        batch_size=recipe.batch_size, callbacks=callbacks, verbose=2)  # fmt: skip
    info = {
        "weight_target": target,
        "epochs": len(history.history["loss"]),
        "train_seconds": round(time.perf_counter() - started, 1),
        "weight_sharpness": history.history.get("weight_sharpness", [None])[-1],
    }
    return model, info


def evaluate(model, x_test: np.ndarray, y_test: np.ndarray) -> dict:
    """Keras, reference, Loihi integer emulator and SpiNNaker fixed point on the test set."""
    import whetstone as ws
    from whetstone.backends import spinnaker

    net = ws.convert.to_spiking(model)
    keras_pred = model.predict(x_test, verbose=0, batch_size=1000).argmax(axis=1)
    reference = ws.simulate.run(net, x_test)
    rounded = {  # the same network rounded onto each grid after training, no retraining
        target: round(float((ws.simulate.run(ws.quantize.project(net, target), x_test)
                             .predictions == y_test).mean()), 6)
        for target in ("loihi", "spinnaker")
    }  # fmt: skip
    loihi = ws.backends.get("loihi").run(net, x_test, target="sim").predictions
    fixed, _ = spinnaker.fixed_point_run(net, x_test)
    return {
        "keras_accuracy": round(float((keras_pred == y_test).mean()), 6),
        "tie_images": int(reference.tie_mask.sum()),
        "rounded_after_training_accuracy": rounded,
        "reference": agreement(reference.predictions, keras_pred, reference.tie_mask),
        "loihi_sim": {
            "accuracy": round(float((loihi == y_test).mean()), 6),
            "off_grid": ws.quantize.off_grid(net, "loihi"),
            **agreement(loihi, keras_pred, reference.tie_mask),
        },
        "spinnaker_fixed_point": {
            "accuracy": round(float((fixed == y_test).mean()), 6),
            "off_grid": ws.quantize.off_grid(net, "spinnaker"),
            **agreement(fixed, keras_pred, reference.tie_mask),
        },
    }


def measure(data_dir, dataset: str | None = None, quick: bool = False) -> dict:
    """Train the three variants and evaluate each (``quick``: a smoke run)."""
    import whetstone as ws

    recipe = trained.RECIPES[MODEL]
    n_train = n_test = None
    weight_steps = WEIGHT_STEPS
    if quick:  # one epoch to sharp, one honing epoch that puts the weights on the grid
        recipe = dataclasses.replace(trained.quick_recipe(recipe), epochs=3, hone_epochs=1)
        # 200 test images: a multiple of the Nengo back end's 256-step chunk trips its stream
        (n_train, n_test), weight_steps = (trained.QUICK_IMAGES[0], 200), 1
    dataset = dataset or recipe.dataset
    (x, y), (x_test, y_test) = ws.datasets.load(dataset, data_dir)
    data = (x[:n_train], y[:n_train]), (x_test[:n_test], y_test[:n_test])
    runs = []
    for target in VARIANTS:
        model, info = train(recipe, data, target, weight_steps)
        runs.append({**info, **evaluate(model, *data[1])})
        print({k: v for k, v in runs[-1].items() if k != "reference"}, flush=True)
    base = runs[0]["keras_accuracy"]
    for run in runs:
        run["accuracy_change_points"] = round(100 * (run["keras_accuracy"] - base), 3)
    return {
        "model": MODEL,
        "dataset": dataset,
        "quick": quick,
        "recipe": dataclasses.asdict(recipe),
        "weight_steps": weight_steps,
        "train_images": len(data[0][0]),
        "test_images": len(data[1][0]),
        "runs": runs,
    }


@click.command()
@click.option("--data", "data_dir", envvar="WHETSTONE_DATA", default="../shared/data",
              show_default=True, help="folder with mnist/")  # fmt: skip
@click.option("--dataset", default=None, help="another dataset (e.g. demo); default: the recipe's")
@click.option("--quick", is_flag=True, help="smoke run: a few hundred images, 3 epochs")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="results folder (default: benchmarks/results; needed with --quick)")  # fmt: skip
def main(data_dir: str, dataset: str | None, quick: bool, out: Path | None) -> None:
    """Train dense_mnist with and without weight sharpening; write weight_sharpening.json."""
    if quick and out is None:
        raise click.UsageError("--quick needs --out: smoke results never replace committed ones.")
    result = measure(data_dir, dataset, quick)
    click.echo(f"wrote {write_result('weight_sharpening', result, folder=out or RESULTS)}")


if __name__ == "__main__":
    main()
