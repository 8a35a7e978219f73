"""Options and argument types that several commands share."""

from __future__ import annotations

import math
from pathlib import Path

import click


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


def parse_block_shapes(_ctx, param, values) -> dict:
    """``("conv_2=6x11x8", ...)`` -> ``{"conv_2": (6, 11, 8)}`` (click: exit 2 if malformed).

    Example:
        >>> parse_block_shapes(None, None, ["conv_2=6x11x8"])
        {'conv_2': (6, 11, 8)}
    """
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
    callback=parse_block_shapes,
    help="Loihi: pin a stage's block (one core) shape, e.g. conv_2=6x11x8 (repeatable); "
    "other stages are partitioned automatically.",
)


def backend_options(target: str, block_shapes: dict) -> dict:
    """Back-end keywords from CLI options (--block-shape is Loihi's).

    Example:
        >>> backend_options("loihi", {"conv_2": (6, 11, 8)})
        {'block_shapes': {'conv_2': (6, 11, 8)}}
    """
    if block_shapes and target != "loihi":
        raise click.UsageError(f"--block-shape applies to --to loihi, not --to {target}.")
    return {"block_shapes": block_shapes} if block_shapes else {}


def positive_rate(_ctx, param, value: float | None) -> float | None:
    """A learning rate must be a finite number > 0 (click: exit 2 otherwise).

    Example:
        >>> positive_rate(None, None, 0.01)
        0.01
    """
    if value is not None and not (math.isfinite(value) and value > 0):
        raise click.BadParameter(f"must be a finite number > 0, got {value}.", param=param)
    return value


def layer_copies(_ctx, param, values: tuple[str, ...]) -> list[tuple[str, int, float]]:
    """``--widen LAYER:COPIES[:SPREAD]`` (repeatable) as ``[(layer, copies, spread), ...]``
    (``spread`` 1 unless given: see :func:`whetstone.widen.widen`).

    Example:
        >>> layer_copies(None, None, ("dense_1:4", "conv_1:2:0.5"))
        [('dense_1', 4, 1.0), ('conv_1', 2, 0.5)]
    """
    triples = []
    for value in values:
        parts = value.split(":")
        spread = parts.pop() if len(parts) > 2 and parts[-2].isdigit() else "1"
        layer, copies = ":".join(parts[:-1]), parts[-1]
        if not layer or not copies.isdigit() or int(copies) < 1 or not _positive(spread):
            raise click.BadParameter(
                f"{value!r} is not LAYER:COPIES[:SPREAD] (a layer name, a whole number >= 1 "
                "and optionally a spread > 0, e.g. dense_1:4 or conv_1:2:0.5).",
                param=param,
            )
        triples.append((layer, int(copies), float(spread)))
    return triples


def _positive(text: str) -> bool:
    try:
        return float(text) > 0
    except ValueError:
        return False
