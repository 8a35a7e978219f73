"""The ``whetstone`` command line: composes the library, adds only presentation."""

from __future__ import annotations

import click

import whetstone


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(whetstone.__version__, prog_name="whetstone")
def main() -> None:
    """Sharpen Keras networks into single-spike networks and run them on neuromorphic back ends.

    \b
    Examples:
      whetstone --version
      whetstone demo --epochs 8
    """


if __name__ == "__main__":
    main()
