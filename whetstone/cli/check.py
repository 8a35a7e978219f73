"""``inspect`` and ``verify``: what a model is, and whether a back end agrees with it."""

from __future__ import annotations

import sys

import click

from whetstone.backends import names
from whetstone.cli.app import main
from whetstone.cli.inputs import (
    load_data,
    load_model_or_network,
    network_classes,
    require_network,
    sample,
)
from whetstone.cli.options import (
    BATCH_SIZE,
    BLOCK_SHAPE,
    DATA_DIR,
    DATA_HELP,
    DATASET,
    MODEL,
    Fraction,
    backend_options,
)
from whetstone.cli.output import Output, is_scalar, reporting_options, result_row


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
            summary = ", ".join(f"{k}={v}" for k, v in resources.items() if is_scalar(v))
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
                options = backend_options(name, block_shapes) if name == "loihi" else {}
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
@click.option(
    "--processes", type=click.IntRange(min=1), default=1, show_default=True,
    help="Run the back end on this many chunks of the images at once, one process each "
    "(for the one-core simulators: loihi, nengo).",
)  # fmt: skip
@reporting_options
@click.pass_obj
def verify(
    out: Output, model, target, dataset, data_dir, limit, batch_size, seed, min_agreement,
    block_shapes, processes,
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
      whetstone verify sharp.keras --to loihi --data mnist -n 10000 --processes 2
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
        rows.append(result_row("Keras", predictions, y, reference.predictions, None))
    rows.append(result_row("reference simulator", reference.predictions, y, reference.predictions,
                     reference.latency))  # fmt: skip
    options = backend_options(target, block_shapes)
    backend = registry.get(target)
    if min_agreement is None:
        min_agreement = exports.default_min_agreement(backend)
    result = run_with_progress(out, backend, net, x, batch_size=batch_size, processes=processes,
                               **options)  # fmt: skip
    rows.append(result_row(target, result.predictions, y, reference.predictions,
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
            "backend_info": {k: v for k, v in result.info.items() if is_scalar(v)},
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


def run_with_progress(
    out: Output,
    backend,
    net,
    x,
    chunks: int = 10,
    batch_size: int | None = None,
    processes: int = 1,
    **options,
):
    """``backend.run(net, x, **options)`` with a progress bar on stderr.

    With ``processes`` > 1 the images run in that many chunks at once, one process each
    (:func:`whetstone.backends.chunks.run_chunks`). Else a back end whose ``run`` takes
    ``progress`` builds its network once and reports; others run in ``chunks`` chunks (or
    chunks of at most ``batch_size`` images, if more), each from a fresh network, which
    changes nothing: neurons keep no state from one image to the next.
    """
    import inspect as signature

    import numpy as np

    from whetstone.backends.chunks import join, run_chunks

    if batch_size:
        chunks = max(chunks, -(-len(x) // batch_size))
    parts = np.array_split(np.arange(len(x)), min(chunks, len(x)))
    results = []
    with click.progressbar(
        length=len(x), label=f"{backend.name}", file=sys.stderr, hidden=out.quiet or out.as_json
    ) as bar:

        def progress(done: int) -> None:
            bar.update(done - bar.pos)

        if processes > 1:
            return run_chunks(backend.name, net, x, processes, progress=progress, **options)
        if "progress" in signature.signature(backend.run).parameters:
            return backend.run(net, x, progress=progress, **options)
        for index in parts:
            results.append(backend.run(net, x[index], **options))
            bar.update(len(index))
    return join(results)
