"""The ``whetstone`` command line: composes the library, adds only presentation.

Every reporting command prints a table, or one JSON document with ``--json``. Bad
input (a missing or damaged file, a model that is not sharp, an unknown back end,
data of the wrong shape) and an unusable environment (a read-only or full disk, no
data and no network) give a one-line error on stderr (with ``--json``: a JSON error
document on stdout too) and exit status 2; a verification below its threshold exits
with 1. ``-v`` shows tracebacks.

TensorFlow and Keras are imported only by the commands that need them, so ``--help``
and ``--version`` answer at once; their start-up log lines are kept off the terminal
unless ``TF_CPP_MIN_LOG_LEVEL`` is set.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
import time
import traceback
import zipfile
from pathlib import Path

import click

import whetstone
from whetstone import _imports, files
from whetstone.backends import BackendResult, MissingDependencyError, names
from whetstone.datasets import DataUnavailableError

BAD_INPUT = (ValueError, OSError, MissingDependencyError, KeyError, DataUnavailableError)
"""Errors that exit with status 2: bad input or an unusable environment (OSError)."""


def quiet_tensorflow() -> None:
    """Keep TensorFlow's start-up log lines off stderr, unless the user set its log level.

    Example:
        >>> quiet_tensorflow()  # before anything imports TensorFlow
    """
    if "TF_CPP_MIN_LOG_LEVEL" in os.environ:
        return
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    for name in ("tensorflow", "keras"):
        _imports.around_import(name, _quietly)


def _quietly(load) -> None:
    with _imports.quiet_stderr():
        load()


# ---------------------------------------------------------------- presentation


class Output:
    """Where commands report: tables on stdout and progress on stderr, or one JSON document."""

    def __init__(self):
        self.as_json = self.quiet = self.verbose = False
        self.stdout = sys.stdout  # results only; everything else is sent to stderr

    def echo(self, message: str = "") -> None:
        click.echo(message, file=self.stdout)

    def epoch_lines(self, epochs: int) -> list:
        """Keras callbacks that report training: one short line per epoch on stderr.

        Keras's own progress bar would list every layer's sharpness and wrap the line.
        """
        if self.quiet or self.as_json:
            return []
        import keras

        say = self.say

        class EpochLines(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch, logs=None):
                self.started = time.perf_counter()

            def on_epoch_end(self, epoch, logs=None):
                say(_epoch_line(epoch, epochs, logs or {}, time.perf_counter() - self.started))

        return [EpochLines()]

    def say(self, message: str) -> None:
        if not (self.quiet or self.as_json):
            click.echo(message, err=True)

    def table(self, rows: list[dict], title: str) -> None:
        if self.as_json or not rows:
            return
        columns = list(rows[0])
        text = [[_cell(row.get(c), c) for c in columns] for row in rows]
        widths = [max(len(c), *(len(r[i]) for r in text)) for i, c in enumerate(columns)]
        click.secho(title, bold=True, file=self.stdout)
        self.echo("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip())
        for cells in text:
            self.echo("  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip())

    def document(self, payload: dict) -> None:
        if self.as_json:
            self.echo(json.dumps(payload, indent=2, default=_jsonable))


def _epoch_line(epoch: int, epochs: int, logs: dict, seconds: float) -> str:
    """``epoch 3/14  loss 0.2345  sharpness 0.33  2.1s`` (``honing`` once honing).

    Example:
        >>> _epoch_line(2, 14, {"loss": 0.23449, "sharpness": 1 / 3, "honing": 0.0}, 2.07)
        'epoch  3/14  loss 0.2345  sharpness 0.33  2.1s'
    """
    parts = [f"epoch {epoch + 1:>{len(str(epochs))}}/{epochs}"]
    parts += [f"{name} {logs[name]:.4f}" for name in ("loss", "accuracy") if name in logs]
    if "sharpness" in logs:
        parts.append(f"sharpness {logs['sharpness']:.2f}")
    if logs.get("honing"):
        parts.append("honing")
    return "  ".join([*parts, f"{seconds:.1f}s"])


PERCENT_COLUMNS = ("accuracy", "agreement")


def _cell(value, column: str) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{100 * value:.2f}%" if column in PERCENT_COLUMNS else f"{value:.4g}"
    return str(value)


def _jsonable(value):
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


def reporting_options(command):
    """--json, -q and -v on a command (also accepted before the command name)."""

    def set_flag(name):
        def callback(ctx, _param, value):
            if value:
                setattr(ctx.ensure_object(Output), name, True)

        return callback

    for flags, name, text in (
        (("--json",), "as_json", "Print one JSON document instead of tables."),
        (
            ("-q", "--quiet"),
            "quiet",
            "No progress, library logs or warnings: stderr shows errors only.",
        ),
        (("-v", "--verbose"), "verbose", "Show tracebacks of errors."),
    ):
        command = click.option(
            *flags, is_flag=True, expose_value=False, callback=set_flag(name), help=text
        )(command)
    return command


class Command(click.Command):
    """Runs a command with library prints sent to stderr (its --help still goes to stdout).

    Keras progress bars, sPyNNaker's reports and other libraries' prints go to stderr,
    so stdout holds only the table or the JSON document. With ``-q`` or ``--json`` they
    go nowhere: library logging (sPyNNaker, NEST, TensorFlow), warnings and anything C
    code writes to stderr are dropped, and stderr shows only an error, if one occurs
    (``-v`` replays the dropped lines before it).
    """

    def invoke(self, ctx: click.Context):
        out = ctx.ensure_object(Output)
        if not (out.quiet or out.as_json):
            with contextlib.redirect_stdout(sys.stderr):
                return super().invoke(ctx)
        with silenced(replay_on_error=out.verbose):
            return super().invoke(ctx)


@contextlib.contextmanager
def silenced(replay_on_error: bool = False):
    """No library output: prints, logging, warnings and file descriptor 2 (C code) dropped.

    Example:
        >>> with silenced():
        ...     print("sPyNNaker's progress bar")
    """
    import logging
    import warnings

    with open(os.devnull, "w") as devnull, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        logging.disable(logging.CRITICAL)
        try:
            with contextlib.redirect_stdout(devnull), _dropped_stderr(replay_on_error):
                yield
        finally:
            logging.disable(logging.NOTSET)


@contextlib.contextmanager
def _dropped_stderr(replay_on_error: bool):
    """File descriptor 2 into a temp file, dropped (replayed on an error if asked)."""
    if not replay_on_error:
        with contextlib.suppress(ValueError, OSError):
            sys.stderr.flush()
        saved = os.dup(2)
        try:
            with open(os.devnull, "w") as devnull, contextlib.redirect_stderr(devnull):
                os.dup2(devnull.fileno(), 2)
                yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        return
    with _imports.quiet_stderr():
        yield


class Group(click.Group):
    """Turns library errors into one-line messages (exit 2), unless -v asks for tracebacks."""

    command_class = Command

    def main(self, *args, **kwargs):
        quiet_tensorflow()
        os.environ.setdefault("PYNEST_QUIET", "1")  # no NEST banner
        with files.sigterm_as_exit():  # kill, timeout, a CI cancel: clean up as for Ctrl-C
            return super().main(*args, **kwargs)

    def invoke(self, ctx: click.Context):
        out = ctx.ensure_object(Output)
        out.stdout = sys.stdout
        try:
            return super().invoke(ctx)
        except click.ClickException as error:
            _json_error(out, error.format_message(), error.exit_code)
            raise
        except (click.exceptions.Exit, click.Abort):
            raise
        except Exception as error:
            if out.verbose:  # the traceback, then the same message and exit status
                traceback.print_exc(file=sys.stderr)
            message = str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
            status = 2 if isinstance(error, BAD_INPUT) else 1
            click.secho(f"Error: {message}", err=True, fg="red")
            _json_error(out, message, status)
            ctx.exit(status)


def _json_error(out: Output, message: str, status: int) -> None:
    """With --json, the error as a JSON document on stdout too."""
    if out.as_json:
        out.echo(json.dumps({"error": message, "exit_status": status}, indent=2))


# ---------------------------------------------------------------- loading


def load_model_or_network(path: str):
    """``(keras_model or None, SpikingNetwork or conversion error)`` from a file.

    A ``.keras`` file is loaded with Keras and converted; anything else must be a
    saved ``SpikingNetwork``.
    """
    from whetstone import network

    if Path(path).suffix == ".keras":
        if not zipfile.is_zipfile(path):
            raise ValueError(
                f"{path} is not a loadable Keras model: it is damaged or of another format "
                "(a .keras file is a zip archive written by model.save())."
            )
        import keras

        from whetstone import convert

        try:
            model = keras.models.load_model(path, compile=True)
        except Exception as error:
            raise ValueError(f"{path} is not a loadable Keras model: {error}") from error
        try:
            return model, convert.to_spiking(model)
        except convert.ConversionError as error:
            return model, error
    try:
        return None, network.load(path)
    except network.NetworkFileError as error:
        raise ValueError(
            f"{error} (whetstone reads .keras models and saved SpikingNetwork files)"
        ) from error


def require_network(model, net, path: str):
    """The network, or the conversion error with a hint to sharpen."""
    if isinstance(net, Exception):
        hint = ""
        if model is not None and "not fully sharpened" in str(net):
            hint = f" Run: whetstone sharpen {path} --data DATASET -o SHARP.keras"
        raise ValueError(f"{net}{hint}".replace("\n", " "))
    return net


def fit_shape(x, shape: tuple, where: str):
    """Images reshaped to the model's input ``shape`` (same size), or a clear error."""
    import numpy as np

    shape = tuple(shape)
    if tuple(x.shape[1:]) == shape:
        return x
    if int(np.prod(x.shape[1:])) == int(np.prod(shape)):
        return x.reshape((len(x), *shape))
    raise ValueError(
        f"{where}: the data has images of shape {tuple(x.shape[1:])}, the model expects "
        f"{shape}. Choose a dataset that matches the model."
    )


def image_options(shape: tuple) -> dict:
    """How to read an image folder for a model of input ``shape``: size and color mode."""
    shape = tuple(shape)
    if len(shape) == 2:
        return {"image_size": shape, "color_mode": "grayscale"}
    if len(shape) == 3 and shape[-1] in (1, 3, 4):
        modes = {1: "grayscale", 3: "rgb", 4: "rgba"}
        return {"image_size": shape[:2], "color_mode": modes[shape[-1]]}
    return {}


def load_data(out: Output, source: str, split: str, data_dir, shape: tuple, classes: int):
    """``(x, y)`` of one split of ``source``, shaped for the model and checked against it."""
    from whetstone import datasets

    x, y = datasets.load_split(source, split, data_dir, **image_options(shape))
    x = fit_shape(x, shape, source)
    datasets.check_labels(y, classes, source)
    if source not in datasets.DATASETS and (x.min() < 0 or x.max() > 1):
        out.say(
            f"note: {source}: the images range from {x.min():.4g} to {x.max():.4g}; they are "
            "used as given (the built-in data lie in [0, 1]: divide by 255 if the model was "
            "trained on scaled images)."
        )
    return x, y


def sample(x, y, limit: int | None, seed: int | None):
    """The first ``limit`` images, or ``limit`` drawn at random with ``seed``."""
    import numpy as np

    if seed is None:
        return x[:limit], y[:limit]
    index = np.random.default_rng(seed).permutation(len(x))[:limit]
    return x[index], y[index]


def network_classes(net) -> int:
    """How many classes a SpikingNetwork tells apart (its decoder's outputs)."""
    from whetstone.network import KeyDecoder, ReadoutDecoder

    if isinstance(net.decoder, KeyDecoder):
        return net.decoder.key.shape[0]
    if isinstance(net.decoder, ReadoutDecoder):
        return net.decoder.weights.shape[1]
    return net.stages[-1].num_neurons


def first_test_images(out: Output, dataset: str, data_dir, limit: int | None, net):
    """The first ``limit`` test images of a dataset, shaped and checked for ``net``."""
    classes = network_classes(net)
    x, y = load_data(out, dataset, "test", data_dir, net.input_shape, classes)
    return x[:limit], y[:limit]


def replace_atomically(written: Path, target: Path, force: bool) -> None:
    """Move a finished file or folder onto ``target`` with one rename (whetstone.files)."""
    files.replace(written, target, force)


# ---------------------------------------------------------------- commands


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(whetstone.__version__, prog_name="whetstone")
@reporting_options
@click.pass_context
def main(ctx: click.Context) -> None:
    """Sharpen Keras networks into single-spike networks and run them on neuromorphic back ends.

    \b
    Examples:
      whetstone demo                                   # the main job, embedded data
      whetstone inspect model.keras                    # layers, sharpness, size, cost
      whetstone export model.keras --to nir -o model.nir
      whetstone verify model.keras --to nengo --data mnist --data-dir ../shared/data -n 1000
      whetstone sharpen model.keras --data mnist --epochs 10 -o sharp.keras
      whetstone --json inspect model.keras             # machine-readable output
    """
    ctx.ensure_object(Output)


class Fraction(click.FloatRange):
    """A number from 0 to 1; NaN is refused (it would disable the comparison)."""

    def __init__(self) -> None:
        super().__init__(0, 1)

    def convert(self, value, param, ctx):
        value = super().convert(value, param, ctx)
        if math.isnan(value):
            self.fail("nan is not a number from 0 to 1.", param, ctx)
        return value


DATA_DIR = click.option(
    "--data-dir",
    type=click.Path(file_okay=False),
    envvar="WHETSTONE_DATA",
    help="Folder holding mnist/ and fashion-mnist/ IDX files [env: WHETSTONE_DATA].",
)


class DataSource(click.ParamType):
    """A built-in dataset name, or a path: a .npz file, an image folder or a zip of one."""

    name = "DATA"

    def get_metavar(self, *args, **kwargs) -> str:
        return "NAME|FILE"

    def convert(self, value, param, ctx):
        from whetstone.datasets import DATASETS

        if value in DATASETS:
            return value
        path = Path(value)
        if (path.suffix in (".npz", ".zip") and path.is_file()) or path.is_dir():
            return value
        self.fail(
            f"{value!r} is neither a dataset ({', '.join(DATASETS)}) nor an existing .npz "
            "file, image folder or .zip of one.",
            param,
            ctx,
        )


DATASET = DataSource()
DATA_HELP = (
    "a dataset (demo, mnist, fashion-mnist, cifar10), a .npz with x and y (or x_test, "
    "y_test / x_train, y_train), or a folder-per-class image directory or its .zip"
)
BATCH_SIZE = click.option(
    "--batch-size", type=click.IntRange(min=1), default=128, show_default=True,
    help="Images per batch.",
)  # fmt: skip
MODEL = click.argument("model", type=click.Path(exists=True, dir_okay=False))


def _block_shapes(_ctx, param, values) -> dict:
    """``("conv_2=6x11x8", ...)`` -> ``{"conv_2": (6, 11, 8)}`` (click: exit 2 if malformed)."""
    shapes = {}
    for value in values:
        stage, _, shape = value.partition("=")
        try:
            shapes[stage] = tuple(int(n) for n in shape.lower().replace(",", "x").split("x"))
        except ValueError:
            raise click.BadParameter(
                f"{value!r}: give STAGE=SHAPE with the block's size per output axis, "
                "channels last, e.g. conv_2=6x11x8.",
                param=param,
            ) from None
    return shapes


BLOCK_SHAPE = click.option(
    "--block-shape",
    "block_shapes",
    multiple=True,
    metavar="STAGE=SHAPE",
    callback=_block_shapes,
    help="Loihi: pin a stage's block (one core) shape, e.g. conv_2=6x11x8 (repeatable); "
    "other stages are partitioned automatically.",
)


def _backend_options(target: str, block_shapes: dict) -> dict:
    """Back-end keywords from CLI options (--block-shape is Loihi's)."""
    if block_shapes and target != "loihi":
        raise click.UsageError(f"--block-shape applies to --to loihi, not --to {target}.")
    return {"block_shapes": block_shapes} if block_shapes else {}


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
        _row("reference simulator", reference.predictions, y_test, keras_predictions,
             reference.latency),
    ]  # fmt: skip
    for name in backends:
        backend = registry.get(name)
        if not getattr(backend, "is_available", lambda: True)():
            click.echo(f"{name}: skipped, needs: pip install -e '.[{backend.extra}]'", err=True)
            continue
        result = run_with_progress(out, backend, net, x_test)
        rows.append(_row(name, result.predictions, y_test, reference.predictions,
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


def run_with_progress(
    out: Output, backend, net, x, chunks: int = 10, batch_size: int | None = None, **options
):
    """``backend.run(net, x, **options)`` with a progress bar on stderr.

    A back end whose ``run`` takes ``progress`` builds its network once and reports;
    others run in ``chunks`` chunks (or chunks of at most ``batch_size`` images, if
    more), each from a fresh network, which changes nothing: neurons keep no state from
    one image to the next.
    """
    import inspect as signature

    import numpy as np

    if batch_size:
        chunks = max(chunks, -(-len(x) // batch_size))
    parts = np.array_split(np.arange(len(x)), min(chunks, len(x)))
    results = []
    with click.progressbar(
        length=len(x), label=f"{backend.name}", file=sys.stderr, hidden=out.quiet or out.as_json
    ) as bar:
        if "progress" in signature.signature(backend.run).parameters:
            return backend.run(net, x, progress=lambda done: bar.update(done - bar.pos), **options)
        for index in parts:
            results.append(backend.run(net, x[index], **options))
            bar.update(len(index))
    return BackendResult(
        np.concatenate([r.predictions for r in results]),
        np.concatenate([r.output_spikes for r in results]),
        np.sum([r.spike_counts for r in results], axis=0),
        results[-1].info,
    )


def _row(stage: str, predictions, labels, compare_to, timesteps=None) -> dict:
    """Accuracy of ``predictions``, their agreement with ``compare_to``, and timesteps."""
    return {
        "stage": stage,
        "accuracy": float((predictions == labels).mean()),
        "agreement": float((predictions == compare_to).mean()),
        "timesteps": timesteps,
    }


@main.command()
@MODEL
@BLOCK_SHAPE
@click.option(
    "--board", is_flag=True, help="SpiNNaker: map onto a virtual board with sPyNNaker for "
    "cores, chips and boards (slow: about a minute for a convnet) instead of the core plan.",
)  # fmt: skip
@reporting_options
@click.pass_obj
def inspect(out: Output, model: str, block_shapes: dict, board: bool) -> None:
    """Show a model's layers, sharpness, spiking size and back-end cost.

    MODEL is a .keras file or a saved SpikingNetwork. Loihi's cost is its partition onto
    cores; SpiNNaker's is the core plan of the on-chip populations (neurons per core,
    cores, longest synapse row), or with --board sPyNNaker's placement on a virtual board.

    \b
    Examples:
      whetstone inspect sharp.keras
      whetstone inspect sharp.keras --board --json
    """
    keras_model, net = load_model_or_network(model)
    report: dict = {"file": model, "layers": [], "converts": not isinstance(net, Exception)}
    if keras_model is not None:
        report["layers"] = _layer_rows(keras_model)
        out.table(report["layers"], f"{model}: Keras model {keras_model.name!r}")
    if isinstance(net, Exception):
        report["conversion_error"] = str(net)
        out.document(report)
        if not out.as_json:
            out.echo(f"\nDoes not convert: {net}")
            if "not fully sharpened" in str(net):
                out.echo(f"Hint: whetstone sharpen {model} --data DATASET -o SHARP.keras")
        return
    report["stages"] = _stage_rows(net)
    report["totals"] = {"neurons": net.num_neurons, "synapses": net.num_synapses}
    report["latency"] = net.latency
    report["resources"] = _resources(net, block_shapes, board)
    out.table(report["stages"], f"\nSpikingNetwork ({net.input_encoding} input encoding)")
    if not out.as_json:
        out.echo(
            f"total: {net.num_neurons} neurons, {net.num_synapses} synapses, "
            f"{net.latency} timesteps from input to output"
        )
        for name, resources in report["resources"].items():
            summary = ", ".join(f"{k}={v}" for k, v in resources.items() if _scalar(v))
            out.echo(f"{name}: {summary}")
    out.document(report)


def _resources(net, block_shapes: dict, board: bool) -> dict:
    """Each available back end's cost of ``net``; SpiNNaker's core plan unless ``board``."""
    from whetstone import backends as registry

    report = {}
    for name in registry.names():
        backend = registry.get(name)
        if not (hasattr(backend, "resources") and backend.is_available()):
            continue
        try:  # a cost estimate must not hide the rest
            if name == "spinnaker" and not board:
                report[name] = _core_plan(net)
            else:
                options = _backend_options(name, block_shapes) if name == "loihi" else {}
                report[name] = backend.resources(net, **options)
        except Exception as error:
            report[name] = {"error": str(error)}
    return report


def _core_plan(net) -> dict:
    """SpiNNaker's on-chip populations, without sPyNNaker: cores of each, in a second."""
    from whetstone.backends.spinnaker import build_plan, core_plan

    plan = core_plan(build_plan(net))
    return {
        "population_cores": sum(entry["cores"] for entry in plan),
        "longest_row": max((entry["longest_row"] for entry in plan), default=0),
        "mapped": "core plan (--board: placement on a virtual board)",
        "populations": plan,
    }


def _scalar(value) -> bool:
    return isinstance(value, int | float | str | bool)


def _layer_rows(model) -> list[dict]:
    from whetstone.convert import layer_chain
    from whetstone.layers import Spiking

    try:
        layers = layer_chain(model)
    except Exception:
        layers = model.layers
    return [
        {
            "layer": layer.name,
            "type": type(layer).__name__,
            "output": str(tuple(layer.output.shape[1:])) if hasattr(layer, "output") else None,
            "sharpness": layer.get_sharpness() if isinstance(layer, Spiking) else None,
        }
        for layer in layers
    ]


def _stage_rows(net) -> list[dict]:
    return [
        {
            "stage": stage.name,
            "kind": stage.kind,
            "output": str(stage.output_shape),
            "neurons": stage.num_neurons,
            "synapses": stage.num_synapses,
            "fan_in": stage.fan_in,
            "fan_out": stage.fan_out,
        }
        for stage in net.stages
    ]


def _shipped_inputs(out: Output, net, inputs_file, dataset, data_dir, limit, model: str) -> dict:
    """``{"x": ..., "y": ...}`` to ship with an export (empty when none were asked for)."""
    from whetstone.backends import exports

    if inputs_file and dataset:
        raise click.UsageError("give --inputs FILE or --data DATASET, not both.")
    if inputs_file:
        data = exports.load_inputs(inputs_file)
        shipped = {"x": data["x"][:limit], "y": data["y"][:limit] if "y" in data else None}
    elif dataset:
        x, y = first_test_images(out, dataset, data_dir, limit or EXPORT_IMAGES, net)
        shipped = {"x": x, "y": y}
    else:
        return {}
    shipped["x"] = fit_shape(shipped["x"], net.input_shape, inputs_file or model)
    return shipped


EXPORT_IMAGES = 100
"""Test images an export ships with --data when -n is not given."""


@main.command()
@MODEL
@click.option("--to", "target", type=click.Choice(names()), required=True, help="Back end.")
@click.option("-o", "--output", type=click.Path(), required=True, help="File or folder to write.")
@click.option("--force", is_flag=True, help="Overwrite OUTPUT if it exists.")
@click.option(
    "--inputs",
    "inputs_file",
    type=click.Path(exists=True, dir_okay=False),
    help="Inputs to ship (folder exports): a .npz with x [and y] (or x_test [y_test]), "
    "or a .npy of x.",
)
@click.option("--data", "dataset", type=DATASET, help=f"Ship test images instead: {DATA_HELP}.")
@DATA_DIR
@click.option(
    "-n",
    "--limit",
    type=click.IntRange(min=1),
    default=None,
    help=f"Ship the first N inputs [default: all of --inputs, {EXPORT_IMAGES} of --data].",
)
@BLOCK_SHAPE
@click.option(
    "--nir-variant", type=click.Choice(["memoryless", "one_step"]), default=None,
    help="NIR: how neurons and OR-pools are written: memoryless (default; whetstone, "
    "snnTorch) or one_step (snnTorch, Sinabs, SpikingJelly: exact in one step from rest).",
)  # fmt: skip
@reporting_options
@click.pass_obj
def export(
    out: Output, model, target, output, force, inputs_file, dataset, data_dir, limit, block_shapes,
    nir_variant,
) -> None:  # fmt: skip
    """Write the back end's deployable artifact for MODEL.

    The artifact is written beside OUTPUT and moved into place when complete, so a
    failed export leaves nothing behind, and only for a network that fits the target
    (Loihi: the partition; SpiNNaker: synapse rows per core): one too large is refused
    with the numbers. The nengo, loihi and spinnaker exports are folders with a run.py
    that runs the shipped inputs (--inputs or --data) and prints the agreement with the
    reference simulator's decisions, stored with them.

    \b
    Examples:
      whetstone export sharp.keras --to nir -o sharp.nir
      whetstone export sharp.keras --to nir --nir-variant one_step -o sharp_sinabs.nir
      whetstone export sharp.keras --to loihi -o loihi_run --data mnist -n 200
      python loihi_run/run.py                  # on the emulator here, the chip with NxSDK
      whetstone export sharp.keras --to spinnaker -o spinnaker_run --inputs test.npz
      python spinnaker_run/run.py              # on NEST; --simulator spinnaker on a board
    """
    from whetstone import backends as registry

    target_path = Path(output)  # checked now (the back end checks file or folder)
    files.check_target(target_path, force, sources=[model], folder=None)
    if target == "nir" and (inputs_file or dataset):
        raise click.UsageError("--to nir writes one .nir file and ships no inputs; drop "
                               "--inputs/--data.")  # fmt: skip
    keras_model, net = load_model_or_network(model)
    net = require_network(keras_model, net, model)
    options = _backend_options(target, block_shapes)
    if nir_variant and target != "nir":
        raise click.UsageError(f"--nir-variant applies to --to nir, not --to {target}.")
    if nir_variant:
        options["variant"] = nir_variant
    shipped = _shipped_inputs(out, net, inputs_file, dataset, data_dir, limit, model)
    registry.get(target).export(net, target_path, force=force, **options, **shipped)
    out.say(f"wrote {target_path}")
    if target != "nir" and not shipped:
        out.say(f"no inputs shipped: run it with python {target_path / 'run.py'} INPUTS.npz "
                "(or export with --inputs FILE or --data DATASET)")  # fmt: skip
    count = len(shipped["x"]) if shipped else 0
    out.document({"file": model, "backend": target, "output": str(target_path), "inputs": count})
    if not out.as_json:
        out.echo(str(target_path))


@main.command()
@MODEL
@click.option("--to", "target", type=click.Choice(names()), required=True, help="Back end.")
@click.option("--data", "dataset", type=DATASET, required=True, help=f"Test data: {DATA_HELP}.")
@DATA_DIR
@click.option("-n", "--limit", type=click.IntRange(min=1), default=1000, show_default=True)
@BATCH_SIZE
@click.option(
    "--seed", type=int, default=None, help="Draw the -n images at random with this seed "
    "[default: the first N].",
)  # fmt: skip
@click.option(
    "--min-agreement",
    type=Fraction(),
    default=None,
    help="Exit with status 1 when back end and reference agree on a smaller fraction of "
    "the images without a tie [default: the back end's gate: 0.999; loihi 0.97 for its "
    "8-bit weights].",
)
@BLOCK_SHAPE
@reporting_options
@click.pass_obj
def verify(
    out: Output, model, target, dataset, data_dir, limit, batch_size, seed, min_agreement,
    block_shapes,
) -> None:  # fmt: skip
    """Run MODEL on a back end next to Keras and the reference simulator.

    The gate: images where the reference meets a tie (a neuron within 1e-6 of its
    threshold) are counted and reported, and left out; on the others the back end must
    agree with the reference on at least --min-agreement of the images. Each back end has
    its default: 0.999 for those that compute the contract exactly (nengo, spinnaker on
    NEST, nir); 0.97 for loihi, whose 8-bit weights change up to 2% of the decisions of
    the reference models.

    DATA is a built-in dataset or the user's own: a .npz file (x_test and y_test, else x
    and y; uint8 images are scaled by 1/255, float images used as given) or a
    folder-per-class image directory or zip (its test/ folder where it has one; images
    resized to the model's input).

    \b
    Examples:
      whetstone verify sharp.keras --to nengo --data mnist --data-dir ../shared/data -n 1000
      whetstone verify sharp.keras --to nengo --data my.npz
      whetstone verify sharp.keras --to nir --data my_images.zip -n 500 --seed 1
    """
    from whetstone import backends as registry
    from whetstone import simulate
    from whetstone.backends import exports

    keras_model, net = load_model_or_network(model)
    net = require_network(keras_model, net, model)
    x, y = load_data(out, dataset, "test", data_dir, net.input_shape, network_classes(net))
    x, y = sample(x, y, limit, seed)
    reference = simulate.run(net, x)
    rows = []
    if keras_model is not None:
        predictions = keras_model.predict(x, batch_size=batch_size, verbose=0).argmax(axis=1)
        rows.append(_row("Keras", predictions, y, reference.predictions, None))
    rows.append(_row("reference simulator", reference.predictions, y, reference.predictions,
                     reference.latency))  # fmt: skip
    options = _backend_options(target, block_shapes)
    backend = registry.get(target)
    if min_agreement is None:
        min_agreement = exports.default_min_agreement(backend)
    result = run_with_progress(out, backend, net, x, batch_size=batch_size, **options)
    rows.append(_row(target, result.predictions, y, reference.predictions,
                     result.info.get("latency", reference.latency)))  # fmt: skip
    gate = exports.agreement(
        result.predictions, reference.predictions, exports.gate_ties(reference)
    )
    agreement = gate["agreement_excluding_ties"]
    out.table(
        rows, f"{model} on {target}: {len(x)} {dataset} test images (agreement: vs reference)"
    )
    if not out.as_json:
        out.echo(
            f"gate: {100 * agreement:.2f}% agree on the {gate['images'] - gate['tie_images']} "
            f"images without a tie ({gate['tie_images']} with a tie left out); "
            f"--min-agreement {min_agreement}"
        )
    out.document(
        {
            "file": model,
            "backend": target,
            "dataset": dataset,
            "images": len(x),
            "results": rows,
            "reference_ties": int(reference.ties.sum()),
            "backend_info": {k: v for k, v in result.info.items() if _scalar(v)},
            "gate": gate,
            "min_agreement": min_agreement,
            "passed": agreement >= min_agreement,
        }
    )
    if agreement < min_agreement:
        click.secho(
            f"agreement {agreement:.4f} on the images without a tie is below --min-agreement "
            f"{min_agreement}",
            err=True,
        )
        sys.exit(1)


def _positive_rate(_ctx, param, value):
    """A learning rate must be a finite number > 0 (click: exit 2 otherwise)."""
    import math

    if value is not None and not (math.isfinite(value) and value > 0):
        raise click.BadParameter(f"must be a finite number > 0, got {value}.", param=param)
    return value


def _check_output(output: str, force: bool, model: str) -> Path:
    """The output path, checked before any training: a .keras file we may write."""
    from whetstone import files

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
    callback=_positive_rate,
    help="Learning rate from the moment the model is fully sharp (default: unchanged).",
)
@click.option(
    "--learning-rate",
    type=float,
    default=None,
    callback=_positive_rate,
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
@click.option("-o", "--output", type=click.Path(dir_okay=False), required=True)
@click.option("--force", is_flag=True, help="Overwrite OUTPUT if it exists.")
@reporting_options
@click.pass_obj
def sharpen(
    out: Output, model, dataset, data_dir, epochs, batch_size, seed, start_epoch, steps,
    hone_epochs,
    hone_learning_rate, learning_rate, percentile, head, sample, output, force,
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
          --epochs 5 --hone-epochs 3 --hone-learning-rate 1e-4 -o sharp.keras
      whetstone sharpen model.keras --data my.npz --epochs 8 --batch-size 64 --seed 0 \\
          -o sharp.keras
    """
    import keras

    from whetstone import callbacks, datasets, sharpness

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
    staging = target.with_name(f".{target.name}.partial.keras")
    try:
        keras_model.save(staging)
        replace_atomically(staging, target, force)
    finally:
        staging.unlink(missing_ok=True)
    values = sharpness.get_sharpness(keras_model)
    rows = [{"layer": name, "sharpness": value} for name, value in values.items()]
    out.table(rows, f"{output}: test accuracy {100 * accuracy:.2f}%")
    out.document(
        {
            "file": model,
            "output": output,
            "rewrite": rewritten,
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


PLOTS = ("raster", "rates", "resources", "sharpening", "accuracy")


@main.command()
@click.argument("kind", type=click.Choice(PLOTS))
@click.argument("source", type=click.Path(exists=True, dir_okay=False))
@click.option("-o", "--output", type=click.Path(dir_okay=False), required=True, help="PNG file.")
@click.option("--force", is_flag=True, help="Overwrite OUTPUT if it exists.")
@click.option("--data", "dataset", type=DATASET, default="demo", show_default=True)
@DATA_DIR
@click.option("-n", "--limit", type=click.IntRange(min=1), default=1000, show_default=True)
@click.option("--index", type=click.IntRange(min=0), default=0, help="raster: the test image.")
@click.option(
    "--to",
    "target",
    type=click.Choice(["loihi", "spinnaker"]),
    default="loihi",
    show_default=True,
    help="resources: the back end.",
)
@reporting_options
@click.pass_obj
def plot(out: Output, kind, source, output, force, dataset, data_dir, limit, index, target):
    """Draw a PNG: spikes, firing rates, core use, a sharpening trace or accuracy.

    SOURCE is a model (.keras or saved network) for raster, rates and resources, a
    CSVLogger file (or a JSON History dict) for sharpening, and a JSON file
    {label: {"timesteps": ..., "accuracy": ...}} for accuracy.

    \b
    Examples:
      whetstone plot raster sharp.keras --data demo --index 3 -o raster.png
      whetstone plot rates sharp.keras --data demo -n 500 -o rates.png
      whetstone plot resources sharp.keras --to loihi -o cores.png
      whetstone plot sharpening training.csv -o sharpening.png
      whetstone plot accuracy sweep.json -o accuracy.png
    """
    from whetstone import plot as plots

    files.check_target(output, force, sources=[source])
    if kind == "sharpening":
        log = json.loads(Path(source).read_text()) if source.endswith(".json") else source
        plots.sharpening(log, output, force)
    elif kind == "accuracy":
        plots.accuracy_vs_timesteps(json.loads(Path(source).read_text()), path=output, force=force)
    else:
        from whetstone import backends as registry

        keras_model, net = load_model_or_network(source)
        net = require_network(keras_model, net, source)
        if kind == "resources":
            plots.resources(registry.get(target).resources(net), output, force)
        else:
            count = index + 1 if kind == "raster" else limit
            x = first_test_images(out, dataset, data_dir, count, net)[0]
            if kind == "raster":
                plots.raster(net, x, index, output, force)
            else:
                plots.firing_rates(net, x, path=output, force=force)
    out.document({"kind": kind, "source": source, "output": output})
    if not out.as_json:
        out.echo(output)


if __name__ == "__main__":
    main()
