"""The ``whetstone`` command line: composes the library, adds only presentation."""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time

import click

import whetstone


@contextlib.contextmanager
def _native_stderr_silenced():
    """Hide what TensorFlow's C++ runtime prints on import (absl/CUDA probing lines)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _import_keras():
    with _native_stderr_silenced():
        import keras
    return keras


class Output:
    """Where commands report: a human table on stdout, or one JSON document with --json."""

    def __init__(self, as_json: bool, quiet: bool):
        self.as_json, self.quiet = as_json, quiet

    def say(self, message: str) -> None:
        if not (self.quiet or self.as_json):
            click.echo(message, err=True)

    def table(self, rows: list[dict], title: str) -> None:
        if self.as_json:
            return
        columns = list(rows[0])
        widths = [max(len(str(c)), *(len(_cell(r[c])) for r in rows)) for c in columns]
        click.secho(title, bold=True)
        click.echo("  ".join(str(c).ljust(w) for c, w in zip(columns, widths, strict=True)))
        for row in rows:
            cells = (_cell(row[c]).ljust(w) for c, w in zip(columns, widths, strict=True))
            click.echo("  ".join(cells))

    def document(self, payload: dict) -> None:
        if self.as_json:
            click.echo(json.dumps(payload, indent=2))


def _cell(value) -> str:
    if isinstance(value, float):
        return f"{100 * value:.2f}%"
    return "-" if value is None else str(value)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(whetstone.__version__, prog_name="whetstone")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document instead of tables.")
@click.option("-q", "--quiet", is_flag=True, help="No progress output.")
@click.pass_context
def main(ctx: click.Context, as_json: bool, quiet: bool) -> None:
    """Sharpen Keras networks into single-spike networks and run them on neuromorphic back ends.

    \b
    Examples:
      whetstone demo                     # train, sharpen, convert, simulate (embedded data)
      whetstone demo --dataset mnist --data-dir ../shared/data --epochs 21
      whetstone --json demo -q           # machine-readable result
    """
    ctx.obj = Output(as_json, quiet)


@main.command()
@click.option(
    "--dataset",
    type=click.Choice(["demo", "mnist", "fashion-mnist"]),
    default="demo",
    show_default=True,
    help="'demo' is an MNIST subset shipped with the package; the others need --data-dir.",
)
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False),
    envvar="WHETSTONE_DATA",
    help="Folder holding mnist/ and fashion-mnist/ IDX files [env: WHETSTONE_DATA].",
)
@click.option("--epochs", type=click.IntRange(min=1), default=14, show_default=True)
@click.option(
    "--plain-epochs",
    type=click.IntRange(min=0),
    default=5,
    show_default=True,
    help="Epochs of ordinary training before sharpening starts.",
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.pass_obj
def demo(out: Output, dataset: str, data_dir, epochs: int, plain_epochs: int, seed: int) -> None:
    """Train a small network with a sharpener, convert it and run it spiking.

    Trains the Whetstone MNIST dense network (784-256-64-100, N-hot key) for
    PLAIN_EPOCHS, measures its accuracy, sharpens it bottom-up in the remaining epochs,
    converts it into a SpikingNetwork and runs it on the reference simulator.

    \b
    Example:
      whetstone demo --epochs 14 --plain-epochs 5
    """
    keras = _import_keras()
    from whetstone import callbacks, convert, datasets, models, simulate

    if epochs <= plain_epochs:
        raise click.BadParameter(
            f"--epochs ({epochs}) must exceed --plain-epochs ({plain_epochs}) to leave "
            "epochs for sharpening.",
            param_hint="--epochs",
        )
    started = time.perf_counter()
    (x, y), (x_test, y_test) = datasets.load(dataset, data_dir)
    out.say(f"{dataset}: {len(x)} training and {len(x_test)} test images")
    keras.utils.set_random_seed(seed)
    model = models.dense_mnist(input_shape=x.shape[1:], seed=seed)
    model.compile(keras.optimizers.Adadelta(4.0), "categorical_crossentropy")
    targets = keras.utils.to_categorical(y, 10)
    verbose = 0 if (out.quiet or out.as_json) else (1 if sys.stderr.isatty() else 2)

    def accuracy(predict) -> float:
        return float((predict(x_test).argmax(axis=1) == y_test).mean())

    def keras_predict(images):
        return model.predict(images, verbose=0)

    if plain_epochs:
        out.say(f"training {plain_epochs} plain epochs")
        model.fit(x, targets, epochs=plain_epochs, batch_size=128, verbose=verbose)
    before = accuracy(keras_predict)
    layers = len(whetstone.sharpness.spiking_layers(model))
    steps = max(1, (epochs - plain_epochs) // layers)
    out.say(f"sharpening {layers} layers bottom-up, {steps} epoch(s) each")
    sharpener = callbacks.SimpleSharpener(
        plain_epochs, steps, stop_when_sharp=True, verbose=int(verbose > 0)
    )
    model.fit(
        x,
        targets,
        epochs=epochs,
        initial_epoch=plain_epochs,
        batch_size=128,
        callbacks=[sharpener],
        verbose=verbose,
    )
    after = accuracy(keras_predict)
    net = convert.to_spiking(model)
    result = simulate.run(net, x_test)
    reference = float((result.predictions == y_test).mean())
    rows = [
        {"stage": "Keras, before sharpening", "accuracy": before, "timesteps": None},
        {"stage": "Keras, sharpened", "accuracy": after, "timesteps": None},
        {"stage": "reference simulator", "accuracy": reference, "timesteps": result.latency},
    ]
    out.table(rows, f"whetstone demo: {dataset}, {len(x_test)} test images")
    out.document(
        {
            "dataset": dataset,
            "train_images": len(x),
            "test_images": len(x_test),
            "epochs": epochs,
            "plain_epochs": plain_epochs,
            "fully_sharpened": whetstone.sharpness.is_fully_sharpened(model),
            "results": rows,
            "ties": int(result.ties.sum()),
            "seconds": time.perf_counter() - started,
        }
    )


if __name__ == "__main__":
    main()
