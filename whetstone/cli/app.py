"""The ``whetstone`` click group: one-line errors, exit status, quiet libraries.

Bad input and an unusable environment exit with 2 and one line on stderr (``-v``:
the traceback first); library prints go to stderr, or nowhere with ``-q``/``--json``.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import traceback

import click

import whetstone
from whetstone import _imports, files
from whetstone.backends import MissingDependencyError
from whetstone.cli.output import Output, reporting_options
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
