"""Longer schedules without retraining: continue a cached reference model and its baseline.

From the committed sharpened model of a recipe (fully sharp, so training it further is
honing: the exact step forward, the surrogate gradient backward) and from its
never-sharpened baseline, train ``--epochs`` more epochs with the recipe's augmentation,
at the honing learning rate (and, for the sharpened model, at any ``--rates`` to compare),
with a fresh Adam. Records the test accuracy after every epoch, so one run shows whether a
longer honing phase closes the gap to the ANN trained as long. The committed models are
not changed.

    python -m benchmarks.continued vgg_cifar10 --epochs 8 --rates 1e-4 --rates 3e-4

``--teacher A`` distils the sharpened model from the baseline ANN while honing: the
targets are ``(1 - A) * labels + A * ann(x)`` on the same augmented images, the ANN's
softmax as soft labels (Hinton et al. 2015, temperature 1). The ANN is the committed
baseline of the same recipe, so the comparison stays with the same architecture.

``--frozen-norm`` hones with every BatchNormalization in inference mode (the forward pass
of the test, its statistics fixed); ``--dropout R`` sets every Dropout layer's rate to
``R`` while honing (0: none; with dropout and augmentation the sharpened network's
training accuracy stays below its test accuracy); ``--ema M`` averages the weights along
the way (Adam's exponential moving average at momentum ``M``, put in the model at the end
and evaluated as one more entry). ``--start FILE`` continues a model saved earlier (e.g.
by ``--save``) instead of the committed one, its test accuracy recorded as the start.

Writes ``results/continued_<model>[_<which>][_rate<r>...][_teacher<A>][_frozen_norm]
[_ema<M>][_dropout<R>].json``.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import click
import keras

import whetstone as ws
from benchmarks import trained
from benchmarks.common import RESULTS, accuracy, write_result
from whetstone import files


class TestAccuracy(keras.callbacks.Callback):
    """Test accuracy (Keras ``predict``) and training seconds after every epoch."""

    def __init__(self, x, y):
        super().__init__()
        self.x, self.y, self.accuracy, self.seconds = x, y, [], []

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(round(time.perf_counter() - self._start, 1))
        self.record(f"epoch {epoch + 1}")

    def record(self, label: str) -> None:
        """Append the model's test accuracy now (``label`` names it in the log)."""
        self.accuracy.append(accuracy(self.model, self.x, self.y))
        click.echo(f"  {label}: test accuracy {self.accuracy[-1]:.4f}", err=True)


class SoftTargets(keras.utils.PyDataset):
    """``batches`` with each label mixed with a teacher's output on the same images:
    ``(1 - share) * y + share * teacher(x)`` (distillation with soft labels).

    Example:
        >>> import numpy as np
        >>> teacher = keras.Sequential([keras.Input((2,)), keras.layers.Softmax()])
        >>> soft = SoftTargets([(np.zeros((1, 2)), np.array([[1.0, 0.0]]))], teacher, 0.5)
        >>> soft[0][1].tolist()
        [[0.75, 0.25]]
    """

    def __init__(self, batches, teacher: keras.Model, share: float):
        super().__init__()
        self.batches, self.teacher, self.share = batches, teacher, share

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, i):
        x, y = self.batches[i]
        soft = keras.ops.convert_to_numpy(self.teacher(x, training=False))
        return x, (1 - self.share) * y + self.share * soft

    def on_epoch_end(self) -> None:
        if hasattr(self.batches, "on_epoch_end"):
            self.batches.on_epoch_end()


def continue_training(
    model: keras.Model,
    recipe: trained.Recipe,
    data,
    rate: float,
    epochs: int,
    teacher: keras.Model | None = None,
    share: float = 0.0,
    frozen_norm: bool = False,
    ema: float | None = None,
    dropout: float | None = None,
):
    """Train ``model`` ``epochs`` more epochs at ``rate`` (distilled from ``teacher`` with
    soft-label ``share`` if given; with ``frozen_norm``, every BatchNormalization layer in
    inference mode, its statistics and scale fixed; with ``ema``, Adam keeps an exponential
    moving average of the weights at that momentum, which replaces them at the end: the
    last entry of the accuracies is then the averaged model's; with ``dropout``, every
    Dropout layer at that rate); the per-epoch test accuracy."""
    (x, y), (x_test, y_test) = data
    for layer in model.layers:
        if frozen_norm and isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False  # Keras 3: a frozen BatchNorm runs in inference mode
        if dropout is not None and isinstance(layer, keras.layers.Dropout):
            layer.rate = dropout  # read when fit traces its training step
    optimizer = keras.optimizers.Adam(rate, use_ema=ema is not None, ema_momentum=ema or 0.99)
    model.compile(optimizer, "categorical_crossentropy", metrics=["accuracy"])
    labels = keras.utils.to_categorical(y, 10)
    batches = trained.ShiftedImages(
        x, labels, recipe.batch_size, recipe.shift, recipe.seed + 1, recipe.flip
    )
    if teacher is not None:
        batches = SoftTargets(batches, teacher, share)
    tracker = TestAccuracy(x_test, y_test)
    model.fit(batches, epochs=epochs, callbacks=[tracker], verbose=0)
    if ema is not None:  # fit has put the averaged weights in the model
        tracker.record("averaged weights")
    run = {"learning_rate": rate, "test_accuracy": tracker.accuracy, "seconds": tracker.seconds}
    run |= {"frozen_norm": True} if frozen_norm else {}
    run |= {"ema_momentum": ema, "last_is_average": True} if ema is not None else {}
    run |= {"dropout": dropout} if dropout is not None else {}
    return run | ({"teacher_share": share} if teacher is not None else {})


@click.command()
@click.argument("model_name")
@click.option("--data", "data_dir", envvar="WHETSTONE_DATA", default="../shared/data")
@click.option("--epochs", default=8, show_default=True, help="epochs to continue")
@click.option("--rates", type=float, multiple=True, help="honing rates (default: the recipe's)")
@click.option("--which", type=click.Choice(["both", "sharpened", "baseline"]), default="both")
@click.option(
    "--teacher",
    "share",
    type=float,
    default=0.0,
    show_default=True,
    help="distil from the baseline ANN: the soft-label share (0: no teacher)",
)
@click.option(
    "--frozen-norm",
    is_flag=True,
    help="keep every BatchNormalization in inference mode (the forward pass of the test)",
)
@click.option(
    "--ema",
    type=click.FloatRange(0, 1, min_open=True, max_open=True),
    default=None,
    help="average the weights (Adam's exponential moving average at this momentum)",
)
@click.option(
    "--dropout",
    type=click.FloatRange(0, 1, max_open=True),
    default=None,
    help="every Dropout layer's rate while continuing (default: the model's own)",
)
@click.option(
    "--start",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="continue this saved sharpened model (.keras, e.g. an earlier --save) instead",
)
@click.option(
    "--save",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="save the (last) continued sharpened model here (.keras)",
)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=RESULTS)
def main(
    model_name: str,
    data_dir,
    epochs: int,
    rates,
    which: str,
    share: float,
    frozen_norm: bool,
    ema: float | None,
    dropout: float | None,
    start: Path | None,
    save: Path | None,
    out: Path,
) -> None:
    """Continue MODEL_NAME's sharpened and baseline models; write continued_<model>.json."""
    recipe = trained.RECIPES[model_name]
    data = ws.datasets.load(recipe.dataset, data_dir)
    before = {
        "sharpened": trained.report(model_name)["test_accuracy"],
        "baseline": trained.report(model_name, sharpen=False)["test_accuracy"],
    }
    if start is not None:
        before["sharpened"] = accuracy(keras.models.load_model(start), *data[1])
    runs: dict = {"sharpened": [], "baseline": []}
    if which in ("both", "sharpened"):
        teacher = trained.baseline_model(model_name, data_dir) if share else None
        for rate in rates or (recipe.hone_learning_rate,):
            click.echo(f"{model_name} sharpened, rate {rate}", err=True)
            model = (
                keras.models.load_model(start)
                if start is not None
                else trained.sharpened_model(model_name, data_dir)
            )
            runs["sharpened"].append(
                continue_training(
                    model, recipe, data, rate, epochs, teacher, share, frozen_norm, ema, dropout
                )
            )
            runs["sharpened"][-1]["fully_sharpened"] = ws.sharpness.is_fully_sharpened(model)
            if save is not None:
                with files.staged(save, force=True) as staging:
                    model.save(staging)
    if which in ("both", "baseline"):
        click.echo(f"{model_name} baseline, rate {recipe.hone_learning_rate}", err=True)
        model = trained.baseline_model(model_name, data_dir)
        runs["baseline"].append(
            continue_training(model, recipe, data, recipe.hone_learning_rate, epochs)
        )
    name = f"continued_{model_name}" + ("" if which == "both" else f"_{which}")
    name += "".join(f"_rate{r:g}" for r in rates) + (f"_teacher{share:g}" if share else "")
    name += ("_frozen_norm" if frozen_norm else "") + (f"_ema{ema:g}" if ema else "")
    name += f"_dropout{dropout:g}" if dropout is not None else ""
    name += f"_from_{start.stem}" if start is not None else ""
    result = {
        "model": model_name,
        "recipe": recipe.__dict__,
        "epochs_before": len(trained.report(model_name)["epoch_seconds"]),
        "epochs_continued": epochs,
        "optimizer": "Adam, fresh state (the committed models' optimizer state is not kept)",
        "started_from": str(start) if start is not None else "the committed models",
        "test_accuracy_before": before,
        "test_images": len(data[1][1]),
        "runs": runs,
        "best_gap_points": _best_gap(runs),
    }
    click.echo(f"wrote {write_result(name, result, folder=out)}")


def _best_gap(runs: dict) -> float | None:
    """The ANN's final accuracy minus the best sharpened final accuracy, in points."""
    if not (runs["sharpened"] and runs["baseline"]):
        return None  # one side only (--which): compare the two result files
    best = max(r["test_accuracy"][-1] for r in runs["sharpened"])
    return round(100 * (runs["baseline"][-1]["test_accuracy"][-1] - best), 2)


if __name__ == "__main__":
    main()
