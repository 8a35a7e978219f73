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

The parts: ``app`` (the click group, errors and exit status), ``output`` (tables and
JSON), ``options`` (shared options), ``inputs`` (models and data), and the commands:
``check`` (inspect, verify), ``train`` (demo, sharpen), ``write`` (export, plot).

Example:
    >>> from whetstone.cli import main
    >>> sorted(main.commands)
    ['demo', 'export', 'inspect', 'plot', 'sharpen', 'verify']
"""

from whetstone.cli import check, train, write
from whetstone.cli.app import main, quiet_tensorflow, silenced

__all__ = ["check", "main", "quiet_tensorflow", "silenced", "train", "write"]
