"""How commands report: tables and progress, or one JSON document."""

from __future__ import annotations

import json
import sys
import time

import click

from whetstone.backends import agreement


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


def result_row(stage: str, predictions, labels, compare_to, timesteps=None) -> dict:
    """Accuracy of ``predictions``, their agreement with ``compare_to``, and timesteps.

    Example:
        >>> import numpy as np
        >>> result_row("nir", np.array([1, 2]), np.array([1, 1]), np.array([1, 2]), 3)
        {'stage': 'nir', 'accuracy': 0.5, 'agreement': 1.0, 'timesteps': 3}
    """
    return {
        "stage": stage,
        "accuracy": float((predictions == labels).mean()),
        "agreement": agreement(predictions, compare_to)["agreement"],
        "timesteps": timesteps,
    }


def is_scalar(value) -> bool:
    """True for a value a table cell shows (a number, a string, a flag).

    Example:
        >>> is_scalar(3), is_scalar([3])
        (True, False)
    """
    return isinstance(value, int | float | str | bool)
