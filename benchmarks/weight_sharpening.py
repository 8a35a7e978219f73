"""Weight sharpening: models trained with and without a weight sharpener per target.

The dense_mnist recipe (``benchmarks/trained.py``) is trained three times from the same
seed: as the recipe says (sharpened and honed), and the same with a
``WeightSharpener`` for Loihi and for SpiNNaker that moves the weights onto the target's
grid during the honing epochs. Each model is run on the test set in Keras, in the Loihi
integer emulator (``target="sim"``) and in SpiNNaker's fixed-point model
(``fixed_point_run``), and the benchmark reports accuracy, agreement with Keras, the
images that differ, and how many of those are not ties (the reference's ``tie_mask``).

conv_mnist is not trained from scratch: the committed sharpened model
(``benchmarks.trained.sharpened_model``) has its BatchNormalization folded into the
convolutions (``whetstone.quantize.fold_batch_norm``) and is fine-tuned for
``CONV_EPOCHS`` honing epochs, once without a weight sharpener and once with one per
target (``CONV_WEIGHT_STEPS`` blending epochs, then on the grid). Its SpiNNaker-format
models also run on PyNN/NEST (``NEST_IMAGES`` images): on the grid the float weights
NEST simulates are the 16-bit ones the chip stores.

    python -m benchmarks run weight_sharpening                  # dense_mnist, 10,000 images
    python -m benchmarks run weight_sharpening_conv             # conv_mnist fine-tune
    python -m benchmarks.weight_sharpening --quick --dataset demo --out /tmp/ws   # smoke
    python -m benchmarks.weight_sharpening --model conv_mnist --quick --out /tmp/ws

Writes ``results/weight_sharpening.json`` (dense_mnist) and
``results/weight_sharpening_conv_mnist.json``.

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
CONV = "conv_mnist"
CONV_EPOCHS = 2
"""Honing epochs of the conv_mnist fine-tune (with and without weight sharpening)."""
CONV_WEIGHT_STEPS = 1
"""conv_mnist: weight sharpness 0 in the first epoch, 1 (on the grid) from its end on."""
NEST_IMAGES = 300
LOIHI_IMAGES = {None: 1000, "spinnaker": 1000}
"""conv_mnist: Loihi emulator images per variant (default: the whole test set)."""


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
    return model, _fit(model, x, y, recipe.epochs, recipe.batch_size, callbacks, target)


def fine_tune(data_dir, data, target: str | None, weight_steps: int, epochs: int, seed: int = 0):
    """The committed sharp conv_mnist, BatchNorm folded, honed ``epochs`` more epochs with
    a WeightSharpener for ``target`` (None: none)."""
    import keras

    import whetstone as ws
    from whetstone.weight_sharpening import WeightSharpener

    recipe = trained.RECIPES[CONV]
    (x, y), _ = data
    keras.utils.set_random_seed(seed)
    model = ws.quantize.fold_batch_norm(trained.sharpened_model(CONV, data_dir))
    optimizer = keras.optimizers.get(
        {"class_name": recipe.optimizer, "config": {"learning_rate": recipe.hone_learning_rate}}
    )
    model.compile(optimizer, "categorical_crossentropy", metrics=["accuracy"])
    callbacks = [] if target is None else [WeightSharpener(target, steps=weight_steps, verbose=0)]
    return model, _fit(model, x, y, epochs, recipe.batch_size, callbacks, target)


def _fit(model, x, y, epochs: int, batch_size: int, callbacks, target) -> dict:
    """Train ``model``; what the result files record of the run."""
    import keras

    started = time.perf_counter()
    history = model.fit(x, keras.utils.to_categorical(y, 10), epochs=epochs,
                        batch_size=batch_size, callbacks=callbacks, verbose=2)  # fmt: skip
    return {
        "weight_target": target,
        "epochs": len(history.history["loss"]),
        "train_seconds": round(time.perf_counter() - started, 1),
        "weight_sharpness": history.history.get("weight_sharpness", [None])[-1],
    }


def nest(model, x_test: np.ndarray, keras_pred: np.ndarray, n: int) -> dict:
    """The SpiNNaker back end's PyNN network on NEST, first ``n`` images."""
    import whetstone as ws

    net = ws.convert.to_spiking(model)
    reference = ws.simulate.run(net, x_test[:n])
    result = ws.backends.get("spinnaker").run(net, x_test[:n], simulator="nest")
    return {
        "images": n,
        "off_grid": ws.quantize.off_grid(net, "spinnaker"),
        **agreement(result.predictions, keras_pred[:n], reference.tie_mask),
    }


def evaluate(
    model, x_test: np.ndarray, y_test: np.ndarray, loihi_images: int | None = None
) -> dict:
    """Keras, reference, Loihi integer emulator (first ``loihi_images``, default all) and
    SpiNNaker fixed point on the test set."""
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
    n = len(x_test) if loihi_images is None else min(loihi_images, len(x_test))
    loihi = ws.backends.get("loihi").run(net, x_test[:n], target="sim").predictions
    fixed, _ = spinnaker.fixed_point_run(net, x_test)
    return {
        "keras_accuracy": round(float((keras_pred == y_test).mean()), 6),
        "tie_images": int(reference.tie_mask.sum()),
        "rounded_after_training_accuracy": rounded,
        "reference": agreement(reference.predictions, keras_pred, reference.tie_mask),
        "loihi_sim": {
            "images": n,
            "accuracy": round(float((loihi == y_test[:n]).mean()), 6),
            "off_grid": ws.quantize.off_grid(net, "loihi"),
            **agreement(loihi, keras_pred[:n], reference.tie_mask[:n]),
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
        figures = evaluate(model, *data[1])
        keras_pred = model.predict(data[1][0], verbose=0, batch_size=1000).argmax(axis=1)
        figures["nest"] = nest(model, data[1][0], keras_pred, len(data[1][0]))  # every image
        runs.append({**info, **figures})
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


def measure_conv(
    data_dir,
    quick: bool = False,
    n_train: int | None = None,
    loihi_images: int | None = None,
    n_test: int | None = None,
) -> dict:
    """Fine-tune the committed conv_mnist without and with weight sharpening; evaluate.

    ``n_train``, ``n_test``: the first training and test images (default all);
    ``loihi_images``: the Loihi emulator's images for every variant (default
    ``LOIHI_IMAGES``: the whole test set for the Loihi-trained model)."""
    import whetstone as ws

    recipe = trained.RECIPES[CONV]
    epochs, weight_steps, n_nest = CONV_EPOCHS, CONV_WEIGHT_STEPS, NEST_IMAGES
    if quick:
        epochs, weight_steps = 2, 1
        n_train, n_test, n_nest = trained.QUICK_IMAGES[0], 200, 20
    (x, y), (x_test, y_test) = ws.datasets.load(recipe.dataset, data_dir)
    data = (x[:n_train], y[:n_train]), (x_test[:n_test], y_test[:n_test])
    committed = trained.sharpened_model(CONV, data_dir)
    committed_accuracy = float(
        (
            committed.predict(data[1][0], verbose=0, batch_size=1000).argmax(axis=1) == data[1][1]
        ).mean()
    )
    runs = []
    for target in VARIANTS:
        model, info = fine_tune(data_dir, data, target, weight_steps, epochs)
        n_loihi = loihi_images or LOIHI_IMAGES.get(target, n_test)
        figures = evaluate(model, *data[1], loihi_images=n_loihi)
        keras_pred = model.predict(data[1][0], verbose=0, batch_size=1000).argmax(axis=1)
        figures["nest"] = nest(model, data[1][0], keras_pred, n_nest)
        runs.append({**info, **figures})
        print({k: v for k, v in runs[-1].items() if k != "reference"}, flush=True)
    base = runs[0]["keras_accuracy"]
    for run in runs:
        run["accuracy_change_points"] = round(100 * (run["keras_accuracy"] - base), 3)
        run["change_from_committed_points"] = round(
            100 * (run["keras_accuracy"] - committed_accuracy), 3
        )
    return {
        "model": CONV,
        "dataset": recipe.dataset,
        "quick": quick,
        "seed": 0,
        "method": (
            "fine-tuned from the committed sharpened model (benchmarks.trained), BatchNorm "
            "folded, not trained from scratch; the baseline is the same fine-tune without a "
            "weight sharpener"
        ),
        "committed_accuracy": round(committed_accuracy, 6),
        "fine_tune": {
            "epochs": epochs,
            "learning_rate": recipe.hone_learning_rate,
            "optimizer": recipe.optimizer,
            "batch_size": recipe.batch_size,
        },
        "weight_steps": weight_steps,
        "train_images": len(data[0][0]),
        "test_images": len(data[1][0]),
        "nest_images": n_nest,
        "runs": runs,
    }


@click.command()
@click.option("--data", "data_dir", envvar="WHETSTONE_DATA", default="../shared/data",
              show_default=True, help="folder with mnist/")  # fmt: skip
@click.option("--model", "model_name", type=click.Choice([MODEL, CONV]), default=MODEL,
              show_default=True, help="dense_mnist: trained; conv_mnist: fine-tuned")  # fmt: skip
@click.option("--dataset", default=None, help="another dataset (e.g. demo); default: the recipe's")
@click.option("--quick", is_flag=True, help="smoke run: a few hundred images, 3 epochs")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="results folder (default: benchmarks/results; needed with --quick)")  # fmt: skip
@click.option("--train-images", type=int, default=None,
              help="conv_mnist: fine-tune on the first N training images")  # fmt: skip
@click.option("--loihi-images", type=int, default=None,
              help="conv_mnist: Loihi emulator images per variant")  # fmt: skip
@click.option("--test-images", type=int, default=None,
              help="conv_mnist: evaluate on the first N test images")  # fmt: skip
def main(
    data_dir: str,
    model_name: str,
    dataset: str | None,
    quick: bool,
    out: Path | None,
    train_images: int | None,
    loihi_images: int | None,
    test_images: int | None,
) -> None:
    """Train with and without weight sharpening; write weight_sharpening[_conv_mnist].json."""
    if quick and out is None:
        raise click.UsageError("--quick needs --out: smoke results never replace committed ones.")
    started = time.perf_counter()
    if model_name == CONV:
        result = measure_conv(data_dir, quick, train_images, loihi_images, test_images)
        name = f"weight_sharpening_{CONV}"
    else:
        result, name = measure(data_dir, dataset, quick), "weight_sharpening"
    result["wall_seconds"] = round(time.perf_counter() - started, 1)
    click.echo(f"wrote {write_result(name, result, folder=out or RESULTS)}")


if __name__ == "__main__":
    main()
