"""Every back end against the reference simulator, for any saved sharpened model.

Converts MODEL once, runs the reference simulator on the test images once, then runs
each back end on its share of them and records accuracy, agreement with the reference,
disagreements that are not ties, and images/s.

    python -m benchmarks.agreement benchmarks/results/models/from_relu.keras \\
        --data mnist --out benchmarks/results/from_relu_backends.json

Example:
    >>> agreement([0, 1, 2], [0, 1, 1], [False, False, True])
    {'agreement': 0.666667, 'differing': 1, 'differing_not_ties': 0}
"""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import click
import numpy as np

from benchmarks.common import write_result
from whetstone import backends

# (back end, run options, test images): the slow emulators run on the first images.
RUNS = (
    ("nengo", {}, None),
    ("loihi", {"target": "simreal"}, 1000),
    ("loihi", {"target": "sim"}, 1000),
    ("spinnaker", {"simulator": "nest"}, 300),
    ("nir", {}, None),
)


def agreement(predictions, reference, tie_mask) -> dict:
    """How often ``predictions`` equal the reference's, and the differences outside ties
    (a summary of :func:`whetstone.backends.agreement`)."""
    record = backends.agreement(predictions, reference, tie_mask)
    keys = ("differing", "differing_not_ties")
    return {"agreement": round(record["agreement"], 6), **{k: record[k] for k in keys}}


def measure(model_path: Path, x: np.ndarray, y: np.ndarray, runs=RUNS) -> dict:
    """Reference and back-end figures of one saved model on ``x`` (loaded and run once)."""
    import keras

    import whetstone  # noqa: F401  (registers the layers)
    from benchmarks.subject import from_model

    loaded = from_model(str(model_path), keras.models.load_model(model_path), x, y)
    ref = loaded.reference
    figures = {
        "model": str(model_path),
        "test_images": len(x),
        "timesteps": loaded.net.latency,
        "keras_accuracy": float((loaded.keras_predictions == y).mean()),
        "reference": {
            "accuracy": float((ref.predictions == y).mean()),
            **agreement(ref.predictions, loaded.keras_predictions, ref.tie_mask),
            "tie_images": int(ref.tie_mask.sum()),
        },
        "backends": [],
    }
    for name, options, limit in runs:
        xs, ys, ref_n = loaded.first(limit)
        result = backends.get(name).run(loaded.net, xs, **options)
        row = {"backend": name, **options, "images": len(xs)}
        row["accuracy"] = float((result.predictions == ys).mean())
        row.update(agreement(result.predictions, ref_n.predictions, ref_n.tie_mask))
        row["images_per_second"] = round(result.images_per_second, 1)
        figures["backends"].append(row)
        click.echo(f"{name} {options}: {row}", err=True)
    return figures


@click.command()
@click.argument("model_path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--data", "dataset", default="mnist", show_default=True)
@click.option("--data-dir", envvar="WHETSTONE_DATA", default="../shared/data", show_default=True)
@click.option("-n", "--limit", type=int, default=None, help="first N test images (default all)")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True)
def main(model_path: Path, dataset: str, data_dir: str, limit: int | None, out: Path) -> None:
    """Run MODEL_PATH on every back end and write the figures to OUT (JSON)."""
    import whetstone as ws

    _, (x, y) = ws.datasets.load(dataset, data_dir)
    figures = measure(model_path, x[:limit], y[:limit])
    click.echo(f"wrote {write_result(out.stem, {'dataset': dataset, **figures}, out.parent)}")


if __name__ == "__main__":
    main()
