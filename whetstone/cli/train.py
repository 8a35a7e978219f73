"""``demo`` and ``sharpen``: training with a sharpener."""

from __future__ import annotations

import os
import time
from pathlib import Path

import click

import whetstone
from whetstone import files
from whetstone.backends import names
from whetstone.cli.app import main
from whetstone.cli.check import run_with_progress
from whetstone.cli.inputs import load_data, load_model_or_network
from whetstone.cli.options import (
    BATCH_SIZE,
    DATA_DIR,
    DATA_HELP,
    DATASET,
    MODEL,
    layer_copies,
    positive_rate,
)
from whetstone.cli.output import Output, reporting_options, result_row


@main.command()
@click.option(
    "--dataset",
    type=click.Choice(["demo", "mnist", "fashion-mnist"]),
    default="demo",
    show_default=True,
    help="'demo' is an MNIST subset shipped with the package; the others need --data-dir.",
)
@DATA_DIR
@click.option("--epochs", type=click.IntRange(min=1), default=14, show_default=True)
@click.option(
    "--plain-epochs",
    type=click.IntRange(min=0),
    default=5,
    show_default=True,
    help="Epochs of ordinary training before sharpening starts.",
)
@click.option(
    "--hone-epochs",
    type=click.IntRange(min=0),
    default=3,
    show_default=True,
    help="Epochs of honing once fully sharp (exact steps forward, surrogate gradient).",
)
@click.option(
    "--backend",
    "backends",
    multiple=True,
    type=click.Choice(names()),
    default=("nengo", "loihi"),
    show_default=True,
    help="Back ends to run the sharpened network on (repeat the option for several).",
)
@click.option(
    "-n", "--limit", type=click.IntRange(min=1), default=None, help="Test on the first N images."
)
@click.option("--seed", type=int, default=0, show_default=True)
@reporting_options
@click.pass_obj
def demo(
    out: Output, dataset, data_dir, epochs, plain_epochs, hone_epochs, backends, limit, seed
) -> None:
    """Train a small network with a sharpener, convert it and run it spiking.

    Trains the Whetstone MNIST dense network (784-256-64, softmax readout) for
    --plain-epochs, measures its accuracy, sharpens it bottom-up in the remaining
    epochs, hones it for --hone-epochs more, converts it into a SpikingNetwork and runs
    it on the reference simulator and the chosen back ends.

    \b
    Example:
      whetstone demo --epochs 14 --plain-epochs 5 --backend nengo
    """
    import keras

    from whetstone import backends as registry
    from whetstone import callbacks, convert, datasets, models, simulate

    if epochs <= plain_epochs:
        raise click.BadParameter(
            f"--epochs ({epochs}) must exceed --plain-epochs ({plain_epochs}) to leave "
            "epochs for sharpening.",
            param_hint="--epochs",
        )
    started = time.perf_counter()
    (x, y), (x_test, y_test) = datasets.load(dataset, data_dir)
    x_test, y_test = x_test[:limit], y_test[:limit]
    out.say(f"{dataset}: {len(x)} training and {len(x_test)} test images")
    keras.utils.set_random_seed(seed)
    model = models.dense_mnist(input_shape=x.shape[1:], seed=seed, head="readout")
    model.compile(keras.optimizers.Adam(1e-3), "categorical_crossentropy")
    targets = keras.utils.to_categorical(y, 10)

    def accuracy(predictions) -> float:
        return float((predictions == y_test).mean())

    if plain_epochs:
        out.say(f"training {plain_epochs} plain epochs")
        model.fit(x, targets, epochs=plain_epochs, batch_size=128, verbose=0,
                  callbacks=out.epoch_lines(plain_epochs))  # fmt: skip
    before = accuracy(model.predict(x_test, verbose=0).argmax(axis=1))
    layers = len(whetstone.sharpness.spiking_layers(model))
    steps = max(1, (epochs - plain_epochs) // layers)
    out.say(f"sharpening {layers} layers bottom-up, {steps} epoch(s) each")
    sharpener = callbacks.SimpleSharpener(
        plain_epochs,
        steps,
        stop_when_sharp=True,
        hone_epochs=hone_epochs,
        hone_learning_rate=1e-4,
        verbose=int(not (out.quiet or out.as_json)),
    )
    model.fit(
        x,
        targets,
        epochs=epochs + hone_epochs,
        initial_epoch=plain_epochs,
        batch_size=128,
        callbacks=[sharpener, *out.epoch_lines(epochs + hone_epochs)],
        verbose=0,
    )
    keras_predictions = model.predict(x_test, verbose=0).argmax(axis=1)
    net = convert.to_spiking(model)
    reference = simulate.run(net, x_test)
    rows = [
        {"stage": "Keras, before sharpening", "accuracy": before, "agreement": None,
         "timesteps": None},
        {"stage": "Keras, sharpened and honed", "accuracy": accuracy(keras_predictions),
         "agreement": None, "timesteps": None},
        result_row("reference simulator", reference.predictions, y_test, keras_predictions,
             reference.latency),
    ]  # fmt: skip
    for name in backends:
        backend = registry.get(name)
        if not getattr(backend, "is_available", lambda: True)():
            click.echo(f"{name}: skipped, needs: pip install -e '.[{backend.extra}]'", err=True)
            continue
        result = run_with_progress(out, backend, net, x_test)
        rows.append(result_row(name, result.predictions, y_test, reference.predictions,
                         result.info.get("latency", net.latency)))  # fmt: skip
    out.table(
        rows,
        f"whetstone demo: {dataset}, {len(x_test)} test images "
        "(agreement: reference vs Keras, back ends vs reference)",
    )
    out.document(
        {
            "dataset": dataset,
            "train_images": len(x),
            "test_images": len(x_test),
            "epochs": epochs,
            "plain_epochs": plain_epochs,
            "fully_sharpened": whetstone.sharpness.is_fully_sharpened(model),
            "results": rows,
            "reference_ties": int(reference.ties.sum()),
            "seconds": time.perf_counter() - started,
        }
    )


def _check_output(output: str, force: bool, model: str) -> Path:
    """The output path, checked before any training: a .keras file we may write."""
    path = Path(output)
    if path.suffix != ".keras":
        raise click.UsageError(
            f"{output}: the sharpened model is saved in Keras's format; give the output a "
            f".keras suffix, e.g. {path.with_suffix('.keras').name}."
        )
    try:
        files.check_target(path, force, sources=[model])
    except OSError as error:
        raise click.UsageError(str(error)) from error
    folder = path.absolute().parent
    if not os.access(folder, os.W_OK | os.X_OK):
        raise click.UsageError(f"cannot write {output}: the folder {folder} is not writable.")
    return path


def _sparse_labels(model) -> bool:
    """True when the model's compiled loss takes integer labels (sparse cross-entropy)."""
    loss = getattr(model, "loss", None)
    name = loss if isinstance(loss, str) else getattr(loss, "name", None)
    return "sparse" in str(name or getattr(loss, "__name__", "")).lower()


def _recompiled(model, source, learning_rate, default_optimizer, loss=None):
    """Compile ``model`` with ``source``'s optimizer (fresh state) and loss at ``learning_rate``."""
    import keras

    if getattr(source, "compiled", False) and source.optimizer is not None:
        config = source.optimizer.get_config()
        if learning_rate is not None:
            config["learning_rate"] = learning_rate
        optimizer = type(source.optimizer).from_config(config)
        loss = loss or source.loss
    else:
        optimizer = default_optimizer(learning_rate)
        last = getattr(model.layers[-1], "activation", None)
        logits = getattr(last, "__name__", "") == "linear"
        loss = loss or keras.losses.CategoricalCrossentropy(from_logits=logits)
    model.compile(optimizer, loss)
    return model


def _rewritten(out: Output, keras_model, x, y, learning_rate, percentile, head, sample):
    """A plain ReLU model rewritten into a sharpenable one, compiled like the original."""
    import keras
    import numpy as np

    from whetstone import rewrite

    index = np.random.default_rng(0).permutation(len(x))[:sample]
    result = rewrite.rewrite(keras_model, x[index], y[index], percentile=percentile, head=head)
    out.say(
        f"rewrote {keras_model.name!r} into {len(result.scales)} normalised spiking layers "
        f"(percentile {percentile}) on {len(index)} training images: accuracy "
        f"{100 * result.ann_accuracy:.2f}% as an ANN, {100 * result.accuracy:.2f}% rewritten"
    )
    loss = None
    if head == "key":
        sparse = _sparse_labels(keras_model)
        loss = "sparse_categorical_crossentropy" if sparse else "categorical_crossentropy"

    def adam(rate):
        return keras.optimizers.Adam(rate or 1e-4)

    _recompiled(result.model, keras_model, learning_rate, adam, loss)
    report = {
        "head": head,
        "percentile": percentile,
        "sample_images": len(index),
        "scales": result.scales,
        "clipped": result.clipped,
        "ann_accuracy": result.ann_accuracy,
        "accuracy": result.accuracy,
    }
    return result.model, report


def _widened(out: Output, keras_model, layer: str, copies: int, spread: float, learning_rate):
    """``keras_model`` with ``layer`` widened into staggered copies, compiled like it
    (its optimizer afresh; Adam at ``learning_rate`` or 1e-4 if it was not compiled)."""
    import keras

    from whetstone import widen

    try:
        wide = widen.widen(keras_model, layer, copies, spread)
    except widen.WidenError as error:
        raise click.UsageError(f"--widen {layer}:{copies}:{spread:g}: {error}") from None
    out.say(f"widened {layer!r} into {copies} staggered copies of each unit (spread {spread:g})")
    return _recompiled(
        wide, keras_model, learning_rate, lambda rate: keras.optimizers.Adam(rate or 1e-4)
    )


@main.command()
@MODEL
@click.option(
    "--data", "dataset", type=DATASET, required=True, help=f"Training and test data: {DATA_HELP}."
)
@DATA_DIR
@click.option("--epochs", type=click.IntRange(min=1), required=True, help="Most epochs to train.")
@BATCH_SIZE
@click.option("--seed", type=int, default=None, help="Seed Keras's random numbers (shuffling, "
              "dropout, initializers) for a repeatable run.")  # fmt: skip
@click.option("--start-epoch", type=click.IntRange(min=0), default=0, show_default=True)
@click.option(
    "--steps",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Epochs per layer: sharpening steps per layer, one per epoch (a rewritten plain "
    "model steps every batch over the same epochs).",
)
@click.option(
    "--hone-epochs",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Epochs of honing (training with exact steps) once the model is fully sharp.",
)
@click.option(
    "--hone-learning-rate",
    type=float,
    default=None,
    callback=positive_rate,
    help="Learning rate from the moment the model is fully sharp (default: unchanged).",
)
@click.option(
    "--hone-schedule",
    type=click.Choice(["constant", "cosine"]),
    default="constant",
    show_default=True,
    help="Keep the honing rate, or anneal it along a cosine over the honing epochs (needs "
    "--hone-epochs and --hone-learning-rate).",
)
@click.option(
    "--learning-rate",
    type=float,
    default=None,
    callback=positive_rate,
    help="Train with the model's own optimizer at this rate (an uncompiled model: Adadelta, "
    "or Adam for a plain model).",
)
@click.option(
    "--percentile",
    type=click.FloatRange(0, 100, min_open=True),
    default=99.9,
    show_default=True,
    help="Plain models: the percentile of each ReLU's activations that maps to 1.",
)
@click.option(
    "--head",
    type=click.Choice(["readout", "key"]),
    default="readout",
    show_default=True,
    help="Plain models: keep the softmax layer as a host readout, or use an N-hot key.",
)
@click.option(
    "--sample",
    type=click.IntRange(min=1),
    default=1000,
    show_default=True,
    help="Plain models: training images used to normalise the activations.",
)
@click.option(
    "--widen",
    metavar="LAYER:COPIES[:SPREAD]",
    multiple=True,
    callback=layer_copies,
    help="Before sharpening, make each unit of spiking layer LAYER (a Dense or Conv) COPIES "
    "units firing at staggered thresholds, so the next layer reads COPIES + 1 levels; the "
    "thresholds cover SPREAD (default 1; lower it for an early convolution). "
    "(whetstone.widen; repeatable).",
)
@click.option("-o", "--output", type=click.Path(dir_okay=False), required=True)
@click.option("--force", is_flag=True, help="Overwrite OUTPUT if it exists.")
@reporting_options
@click.pass_obj
def sharpen(
    out: Output, model, dataset, data_dir, epochs, batch_size, seed, start_epoch, steps,
    hone_epochs, hone_learning_rate, hone_schedule, learning_rate, percentile, head, sample,
    widen, output, force,
) -> None:  # fmt: skip
    """Continue training MODEL with a sharpener and save the sharpened model.

    MODEL either uses whetstone's spiking layers already, or is a plain trained Keras
    classifier (relu hidden layers, softmax head): it is then rewritten first
    (whetstone.rewrite: relu -> SpikingBRelu, activations normalised on --sample
    training images) and sharpened from epoch --start-epoch, every batch. Labels match
    the model's loss (integers for sparse_categorical_crossentropy). DATA is a built-in
    dataset or the user's own (.npz or image folder, as for verify): training on its
    train split (x_train, y_train; else x, y), accuracy on its test split.

    \b
    Examples:
      whetstone sharpen model.keras --data mnist --data-dir ../shared/data \\
          --epochs 8 --start-epoch 2 --steps 2 -o sharp.keras
      whetstone sharpen plain_relu.keras --data mnist --data-dir ../shared/data \\
          --epochs 5 --hone-epochs 3 --hone-learning-rate 1e-4 --hone-schedule cosine \\
          -o sharp.keras
      whetstone sharpen model.keras --data my.npz --epochs 8 --batch-size 64 --seed 0 \\
          -o sharp.keras
      whetstone sharpen plain_relu.keras --data mnist --data-dir ../shared/data \\
          --widen dense_1:4 --epochs 5 -o sharp.keras
    """
    import keras

    from whetstone import callbacks, datasets, sharpness

    if hone_schedule == "cosine" and not (hone_epochs and hone_learning_rate):
        raise click.UsageError(
            "--hone-schedule cosine anneals --hone-learning-rate over --hone-epochs: give both."
        )
    target = _check_output(output, force, model)
    keras_model, _ = load_model_or_network(model)
    if keras_model is None:
        raise click.UsageError(f"{model} is a SpikingNetwork; sharpen needs a .keras model.")
    if seed is not None:
        keras.utils.set_random_seed(seed)
    shape, classes = keras_model.input_shape[1:], keras_model.output_shape[-1]
    x, y = load_data(out, dataset, "train", data_dir, shape, classes)
    x_test, y_test = load_data(out, dataset, "test", data_dir, shape, classes)
    if not datasets.has_splits(dataset):
        out.say(f"note: {dataset} has no separate test split: accuracy is measured on the "
                "training images.")  # fmt: skip
    plain = not sharpness.spiking_layers(keras_model)
    rewritten = None
    if plain:
        keras_model, rewritten = _rewritten(
            out, keras_model, x, y, learning_rate, percentile, head, sample
        )
    elif learning_rate is not None or not getattr(keras_model, "compiled", False):

        def adadelta(rate):
            return keras.optimizers.Adadelta(rate or 4.0)

        _recompiled(keras_model, keras_model, learning_rate, adadelta)
    for layer, copies, spread in widen:
        keras_model = _widened(out, keras_model, layer, copies, spread, learning_rate)
    layers = len(sharpness.spiking_layers(keras_model))
    batches = -(-len(x) // batch_size)
    needed = start_epoch + layers * steps + hone_epochs
    if epochs < needed:
        out.say(
            f"note: {layers} layers x {steps} epoch(s) from epoch {start_epoch} plus "
            f"{hone_epochs} honing epochs need --epochs {needed}; training stops at {epochs}."
        )
    sharpener = callbacks.SimpleSharpener(
        start_epoch,
        steps * batches if plain else steps,
        per="batch" if plain else "epoch",
        stop_when_sharp=True,
        verbose=int(not (out.quiet or out.as_json)),
        hone_epochs=hone_epochs,
        hone_learning_rate=hone_learning_rate,
        hone_schedule=hone_schedule,
    )
    sparse, classes = _sparse_labels(keras_model), keras_model.output_shape[-1]
    history = keras_model.fit(
        x,
        y if sparse else keras.utils.to_categorical(y, classes),
        epochs=epochs,
        batch_size=batch_size,
        callbacks=[sharpener, *out.epoch_lines(epochs)],
        verbose=0,
    )
    predictions = keras_model.predict(x_test, batch_size=batch_size, verbose=0).argmax(axis=1)
    accuracy = float((predictions == y_test).mean())
    with files.staged(target, force, sources=[model]) as staging:
        keras_model.save(staging)
    values = sharpness.get_sharpness(keras_model)
    rows = [{"layer": name, "sharpness": value} for name, value in values.items()]
    out.table(rows, f"{output}: test accuracy {100 * accuracy:.2f}%")
    out.document(
        {
            "file": model,
            "output": output,
            "rewrite": rewritten,
            "widened": [dict(zip(("layer", "copies", "spread"), w, strict=True)) for w in widen],
            "sharpness": values,
            "fully_sharpened": sharpness.is_fully_sharpened(keras_model),
            "epochs_trained": len(history.epoch),
            "honing_epochs": int(sum(history.history.get("honing", []))),
            "labels": "sparse" if sparse else "one-hot",
            "test_accuracy": accuracy,
        }
    )
    if not sharpness.is_fully_sharpened(keras_model):
        out.say(f"not fully sharp yet: train more epochs (e.g. --epochs {epochs * 2})")
