"""``export`` and ``plot``: the files a model is turned into."""

from __future__ import annotations

import json
from pathlib import Path

import click

from whetstone import files
from whetstone.backends import names
from whetstone.cli.app import main
from whetstone.cli.inputs import (
    first_test_images,
    fit_shape,
    load_model_or_network,
    require_network,
)
from whetstone.cli.options import BLOCK_SHAPE, DATA_DIR, DATA_HELP, DATASET, MODEL, backend_options
from whetstone.cli.output import Output, reporting_options


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
    options = backend_options(target, block_shapes)
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
