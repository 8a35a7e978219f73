"""vgg_cifar10 sharpened with its last hidden layer widened into staggered copies.

Sharpening cost vgg_cifar10 most at its last hidden layer (256 units, one binary spike
each). Here the trained ANN (the cached baseline) is widened first, Net2Net-style: each
unit of ``dense_1`` becomes ``copies`` units with the same weights, their BatchNorm
offsets spread by ``(k - (copies - 1) / 2) / copies`` (k = 0 .. copies - 1), and the
readout's weights of the unit shared among them (divided by ``copies``). While the
activations are bounded ReLUs the widened network computes nearly the ANN's function;
once sharp, the copies fire at staggered thresholds, so the readout sees each unit's
value on ``copies + 1`` levels instead of two. The widened network is then sharpened and
honed as the recipe sharpens the original one, and checked on the reference simulator.

    python -m benchmarks.widened --copies 4 --save widened.keras

Writes ``results/widened_vgg_cifar10_copies<N>.json``: the ANN's and the widened ANN's
test accuracy, the per-epoch history, the sharpened accuracy in Keras and on the
reference simulator, and the size of the spiking network. About 14 epochs of the
recipe (50 minutes on 2 cores). The comparison with an ANN of the widened shape trained
from scratch is not made here.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import click
import keras
import numpy as np

import whetstone as ws
from benchmarks import trained
from benchmarks.common import RESULTS, accuracy, write_result
from whetstone import files

MODEL = "vgg_cifar10"
WIDTH = 256  # the recipe's last hidden layer


def widened_recipe(copies: int) -> trained.Recipe:
    """The vgg_cifar10 recipe with ``copies * 256`` units in its last hidden layer."""
    options = (("input_shape", (32, 32, 3)), ("filters", (32, 64, 128)),
               ("hidden", (WIDTH * copies,)), ("name", MODEL))  # fmt: skip
    return dataclasses.replace(trained.RECIPES[MODEL], build="conv_mnist", options=options)


def widen(ann: keras.Model, recipe: trained.Recipe, copies: int) -> keras.Model:
    """``ann`` (a :func:`whetstone.models.conv_mnist`-style network with a readout head
    and one hidden layer ``dense_1``) with each ``dense_1`` unit as ``copies`` staggered
    copies (see above), in ``recipe``'s model of that width."""
    wide = recipe.build_model()
    width = ann.get_layer("dense_1").units
    shifts = np.repeat((np.arange(copies) - (copies - 1) / 2) / copies, width).astype("float32")
    for layer in wide.layers:
        if not layer.weights:
            continue
        weights = ann.get_layer(layer.name).get_weights()
        if layer.name == "dense_1":
            weights = [np.tile(weights[0], (1, copies)), np.tile(weights[1], copies)]
        elif layer.name == "norm_dense_1":
            gamma, beta, mean, variance = (np.tile(w, copies) for w in weights)
            weights = [gamma, beta + shifts, mean, variance]
        elif layer.name == "readout":
            weights = [np.tile(weights[0], (copies, 1)) / copies, weights[1]]
        layer.set_weights(weights)
    return wide


@click.command()
@click.option("--data", "data_dir", envvar="WHETSTONE_DATA", default="../shared/data")
@click.option("--copies", type=click.IntRange(2, 16), default=4, show_default=True)
@click.option("--save", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="save the sharpened widened model here (.keras)")  # fmt: skip
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=RESULTS)
def main(data_dir, copies: int, save: Path | None, out: Path) -> None:
    """Widen, sharpen and check vgg_cifar10; write widened_vgg_cifar10_copies<N>.json."""
    recipe = widened_recipe(copies)
    (_, _), (x_test, y_test) = ws.datasets.load(recipe.dataset, data_dir)
    ann = trained.baseline_model(MODEL, data_dir)
    wide = widen(ann, recipe, copies)
    before = {"ann": accuracy(ann, x_test, y_test), "widened_ann": accuracy(wide, x_test, y_test)}
    click.echo(f"ANN {before['ann']:.4f}, widened ANN {before['widened_ann']:.4f}", err=True)
    model, report = trained.train(recipe, data_dir, sharpen=True, start=wide)
    if save is not None:
        with files.staged(save, force=True) as staging:
            model.save(staging)
    net = ws.convert.to_spiking(model)
    reference = ws.simulate.run(net, x_test)
    keras_predictions = model.predict(x_test, verbose=0, batch_size=500).argmax(axis=1)
    result = {
        "model": MODEL,
        "copies": copies,
        "recipe": recipe.__dict__,
        "test_images": len(y_test),
        "test_accuracy_before": before,
        "keras_accuracy": report["test_accuracy"],
        "fully_sharpened": report["fully_sharpened"],
        "reference_accuracy": float((reference.predictions == y_test).mean()),
        "reference_differs_from_keras": int((reference.predictions != keras_predictions).sum()),
        "neurons": int(sum(s.num_neurons for s in net.stages)),
        "synops_per_inference": round(reference.synops_per_inference, 1),
        "epoch_seconds": report["epoch_seconds"],
        "history": report["history"],
    }
    click.echo(f"wrote {write_result(f'widened_{MODEL}_copies{copies}', result, folder=out)}")


if __name__ == "__main__":
    main()
