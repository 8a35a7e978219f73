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
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import click
import numpy as np

from benchmarks.common import write_result

# (back end, run options, test images): the slow emulators run on the first images.
RUNS = (
    ("nengo", {}, None),
    ("loihi", {"target": "simreal"}, 1000),
    ("loihi", {"target": "sim"}, 1000),
    ("spinnaker", {"simulator": "nest"}, 300),
    ("nir", {}, None),
)


def agreement(predictions, reference, tie_mask) -> dict:
    """How often ``predictions`` equal the reference's, and the differences outside ties."""
    differ = np.asarray(predictions) != np.asarray(reference)
    return {
        "agreement": round(float(1 - differ.mean()), 6),
        "differing": int(differ.sum()),
        "differing_not_ties": int((differ & ~np.asarray(tie_mask)).sum()),
    }


def measure(model_path: Path, x: np.ndarray, y: np.ndarray, runs=RUNS) -> dict:
    """Reference and back-end figures of one saved model on ``x``."""
    import keras

    import whetstone as ws

    model = keras.models.load_model(model_path)
    net = ws.convert.to_spiking(model)
    keras_pred = model.predict(x, verbose=0, batch_size=1000).argmax(axis=1)
    ref = ws.simulate.run(net, x)
    figures = {
        "model": str(model_path),
        "test_images": len(x),
        "timesteps": net.latency,
        "keras_accuracy": float((keras_pred == y).mean()),
        "reference": {
            "accuracy": float((ref.predictions == y).mean()),
            **agreement(ref.predictions, keras_pred, ref.tie_mask),
            "tie_images": int(ref.tie_mask.sum()),
        },
        "backends": [],
    }
    for name, options, limit in runs:
        n = len(x) if limit is None else min(limit, len(x))
        started = time.perf_counter()
        result = ws.backends.get(name).run(net, x[:n], **options)
        seconds = time.perf_counter() - started
        row = {"backend": name, **options, "images": n}
        row["accuracy"] = float((result.predictions == y[:n]).mean())
        row.update(agreement(result.predictions, ref.predictions[:n], ref.tie_mask[:n]))
        row["images_per_second"] = round(n / seconds, 1)
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
