"""From a trained Keras model: a plain ReLU convnet rewritten, sharpened and run spiking (issue 20).

    python -m benchmarks.from_relu --data ../shared/data        # full run -> results/
    python -m benchmarks.from_relu --quick --out /tmp/smoke     # smoke run, demo subset
    python -m benchmarks run from_relu                          # the same, as a suite
    python -m benchmarks.from_relu --ann benchmarks/results/models/from_relu_ann.keras \
        --percentile 99 --learning-rate 1e-4                    # reuse the ANN, vary a setting

1. The keras.io MNIST convnet (Conv2D 32 3x3 relu, MaxPool 2, Conv2D 64 3x3 relu, MaxPool 2,
   Flatten, Dropout 0.5, Dense 10 softmax) trained as keras.io trains it (Adam, batch 128,
   15 epochs, 10% held out), with integer labels (sparse categorical cross-entropy); saved.
2. ``whetstone.rewrite``: relu -> SpikingBRelu, each layer normalised to the 99.9th
   percentile of its activations on 1,000 training images (Rueckauer et al. 2017); the
   softmax layer stays a host readout. Accuracy before and after, and without normalisation.
3. Sharpening from epoch 0: ``SimpleSharpener`` per batch, bottom-up, one epoch per spiking
   layer, then honing (exact steps forward, surrogate gradient back) up to 5 epochs in all.
4. ``whetstone.convert.to_spiking`` and the reference simulator on the full test set;
   agreement with Keras (ties counted).
5. The same from the command line on the saved ``.keras`` file (``whetstone sharpen``).

Writes ``from_relu.json`` (atomically) and the three models into ``OUT/models``.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras
import numpy as np

import whetstone as ws
from benchmarks.common import RESULTS, accuracy, write_result
from benchmarks.trained import EpochTimer

L = keras.layers
PERCENTILE = 99.9
SHARPEN_LEARNING_RATE = 3e-4  # Adam; the ANN trained at 1e-3
HONE_LEARNING_RATE = 1e-4
EPOCHS = 5  # issue 20: rewrite + sharpening in at most 5 epochs


def keras_io_convnet() -> keras.Model:
    """The keras.io "Simple MNIST convnet", unchanged."""
    return keras.Sequential([
        keras.Input((28, 28, 1)),
        L.Conv2D(32, 3, activation="relu"), L.MaxPooling2D(2),
        L.Conv2D(64, 3, activation="relu"), L.MaxPooling2D(2),
        L.Flatten(), L.Dropout(0.5), L.Dense(10, activation="softmax"),
    ], name="keras_io_convnet")  # fmt: skip


def floats(history: dict) -> dict:
    return {name: [float(v) for v in values] for name, values in history.items()}


def spiking(model: keras.Model, x, y) -> dict:
    """The converted network on the reference simulator, next to Keras."""
    keras_predictions = model.predict(x, verbose=0, batch_size=500).argmax(axis=1)
    started = time.perf_counter()
    result = ws.simulate.run(ws.convert.to_spiking(model), x)
    agree = result.predictions == keras_predictions
    return {
        "keras_accuracy": float((keras_predictions == y).mean()),
        "reference_accuracy": float((result.predictions == y).mean()),
        "agreement": float(agree.mean()),
        "disagreements_not_ties": int((~agree & ~result.tie_mask).sum()),
        "tie_images": int(result.tie_mask.sum()),
        "latency": int(result.latency),
        "synops_per_image": float(np.mean(result.synaptic_operations)),
        "ann_macs": int(result.ann_macs),
        "simulator_seconds": round(time.perf_counter() - started, 1),
    }


def train_ann(x, y, epochs: int) -> tuple[keras.Model, dict]:
    keras.utils.set_random_seed(0)
    model = keras_io_convnet()
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    timer = EpochTimer()
    history = model.fit(x, y, batch_size=128, epochs=epochs, validation_split=0.1,
                        callbacks=[timer], verbose=2)  # fmt: skip
    return model, {
        "epochs": epochs,
        "epoch_seconds": timer.seconds,
        "history": floats(history.history),
    }


def sharpen(clone: keras.Model, x, y, epochs: int, hone_epochs: int, args) -> dict:
    """Sharpen per batch from epoch 0, one epoch per spiking layer, then hone."""
    layers = len(ws.sharpness.spiking_layers(clone))
    batches = -(-len(x) // 128)
    clone.compile(keras.optimizers.Adam(args.learning_rate), "sparse_categorical_crossentropy")
    sharpener = ws.callbacks.SimpleSharpener(
        0, batches, per="batch", stop_when_sharp=True, hone_epochs=hone_epochs,
        hone_learning_rate=args.hone_learning_rate,
    )  # fmt: skip
    timer = EpochTimer()
    history = clone.fit(x, y, batch_size=128, epochs=epochs, callbacks=[sharpener, timer],
                        verbose=2)  # fmt: skip
    return {
        "schedule": f"SimpleSharpener(0, steps={batches}, per='batch'): {layers} layers "
        f"bottom-up, one epoch each, then up to {hone_epochs} honing epochs",
        "learning_rate": args.learning_rate,
        "hone_learning_rate": args.hone_learning_rate,
        "epochs_trained": len(history.epoch),
        "honing_epochs": int(sum(history.history.get("honing", []))),
        "fully_sharpened": ws.sharpness.is_fully_sharpened(clone),
        "epoch_seconds": timer.seconds,
        "history": floats(history.history),
    }


def from_cli(ann_path: Path, output: Path, dataset: str, data_dir: str, args: list[str]) -> dict:
    """``whetstone sharpen`` on the saved ANN, as a user would run it."""
    from click.testing import CliRunner

    from whetstone.cli import main

    command = ["--json", "-q", "sharpen", str(ann_path), "--data", dataset, "--data-dir",
               data_dir, *args, "-o", str(output), "--force"]  # fmt: skip
    done = CliRunner().invoke(main, command)
    if done.exit_code != 0:
        raise RuntimeError(f"whetstone {' '.join(command)} failed: {done.output}")
    return {"command": "whetstone " + " ".join(command), "report": json.loads(done.stdout)}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=os.environ.get("WHETSTONE_DATA", "../shared/data"))
    parser.add_argument("--out", type=Path, default=RESULTS, help="results folder")
    parser.add_argument("--quick", action="store_true", help="smoke run: demo subset, 1 epoch")
    parser.add_argument("--ann", type=Path, default=None, help="a trained ANN to reuse")
    parser.add_argument("--percentile", type=float, default=PERCENTILE)
    parser.add_argument("--learning-rate", type=float, default=SHARPEN_LEARNING_RATE)
    parser.add_argument("--hone-learning-rate", type=float, default=HONE_LEARNING_RATE)
    args = parser.parse_args(argv)

    started = time.perf_counter()
    dataset = "demo" if args.quick else "mnist"
    (x, y), (x_test, y_test) = ws.datasets.load(dataset, args.data)
    x, x_test = x[..., None], x_test[..., None]
    if args.quick:
        x, y, x_test, y_test = x[:2000], y[:2000], x_test[:200], y_test[:200]
    models = args.out / "models"
    models.mkdir(parents=True, exist_ok=True)
    ann_epochs, epochs, hone = (1, 2, 0) if args.quick else (15, EPOCHS, EPOCHS - 2)

    ann_path = models / "from_relu_ann.keras"
    if args.ann is not None:
        ann, training = keras.models.load_model(args.ann), {"loaded_from": str(args.ann)}
    else:
        ann, training = train_ann(x, y, ann_epochs)
    with ws.files.staged(ann_path, force=True) as staging:
        ann.save(staging)
    sample = np.random.default_rng(0).permutation(len(x))[:1000]
    plain = ws.rewrite.rewrite(ann, x[sample], y[sample], percentile=None)
    rewritten = ws.rewrite.rewrite(ann, x[sample], y[sample], percentile=args.percentile)
    rewrite = {
        "percentile": args.percentile,
        "sample_images": len(sample),
        "scales": rewritten.scales,
        "clipped": rewritten.clipped,
        "test_accuracy_unnormalised": accuracy(plain.model, x_test, y_test),
        "test_accuracy": accuracy(rewritten.model, x_test, y_test),
    }
    clone = rewritten.model
    sharpening = sharpen(clone, x, y, epochs, hone, args)
    with ws.files.staged(models / "from_relu.keras", force=True) as staging:
        clone.save(staging)

    cli_args = ["--epochs", str(epochs), "--steps", "1", "--hone-epochs", str(hone),
                "--percentile", str(args.percentile), "--learning-rate", str(args.learning_rate),
                "--hone-learning-rate", str(args.hone_learning_rate)]  # fmt: skip
    cli = from_cli(ann_path, models / "from_relu_cli.keras", dataset, args.data, cli_args)
    cli_model = keras.models.load_model(models / "from_relu_cli.keras")
    cli_x_test, cli_y_test = ws.datasets.load(dataset, args.data)[1]
    cli["spiking"] = spiking(cli_model, cli_x_test[..., None], cli_y_test)

    ann_accuracy = accuracy(ann, x_test, y_test)
    result = {
        "quick": args.quick,
        "dataset": dataset,
        "test_images": len(x_test),
        "train_images": len(x),
        "seed": 0,
        "ann": {"test_accuracy": ann_accuracy, **training},
        "rewrite": rewrite,
        "sharpening": sharpening,
        "spiking": spiking(clone, x_test, y_test),
        "cli": cli,
        "wall_seconds": None,
    }
    sharp = result["spiking"]["keras_accuracy"]
    result["done_when"] = {
        "ann_at_least_98.5": ann_accuracy >= 0.985,
        "epochs_at_most_5": sharpening["epochs_trained"] <= EPOCHS,
        "loss_to_ann_points": round(100 * (ann_accuracy - sharp), 2),
        "within_0.5_points": ann_accuracy - sharp <= 0.005,
        "reference_equals_keras": result["spiking"]["disagreements_not_ties"] == 0,
        "cli_loss_to_ann_points": round(100 * (ann_accuracy - cli["spiking"]["keras_accuracy"]), 2),
        "cli_reference_equals_keras": cli["spiking"]["disagreements_not_ties"] == 0,
    }
    result["wall_seconds"] = round(time.perf_counter() - started, 1)
    path = write_result("from_relu", result, folder=args.out)
    print(f"wrote {path}: ANN {100 * ann_accuracy:.2f}%, rewritten "
          f"{100 * rewrite['test_accuracy']:.2f}%, sharpened {100 * sharp:.2f}%, reference "
          f"simulator agrees on {100 * result['spiking']['agreement']:.2f}%")  # fmt: skip
    return result


if __name__ == "__main__":
    main()
