"""Honing and decoding study: from one sharpened network, what honing and which decoder buy.

Per seed and head (``key``: N-hot vote; ``readout``: softmax readout on the host), the
dense MNIST network is trained and sharpened once (Adam 1e-3, bottom-up); then, from that
same sharp checkpoint, it is honed with each (surrogate width, learning rate) variant for
the same number of epochs. For the key head every network is decoded three ways on the
reference simulator: ties to the lowest class (the plain vote), ties broken by the
output population's potentials (pre-activations), and the tie count.

    python -m benchmarks.honing --data ../shared/data --seeds 0 1 --hone-epochs 10

Writes ``results/honing.json``.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import click
import keras
import numpy as np

import whetstone as ws
from benchmarks.common import RESULTS, write_result

VARIANTS = ((1.0, 1e-4), (0.5, 1e-4), (2.0, 1e-4), (1.0, 1e-3), (1.0, 3e-5))
"""(surrogate width, honing learning rate) pairs compared from the same sharp network."""


def decisions(model: keras.Model, x: np.ndarray, y: np.ndarray) -> dict:
    """Accuracy of the converted network under each decoder, and its decoder ties."""
    net = ws.convert.to_spiking(model)
    result = ws.simulate.run(net, x)
    keras_pred = model.predict(x, verbose=0, batch_size=1000).argmax(axis=1)
    figures = {
        "keras_accuracy": float((keras_pred == y).mean()),
        "reference_accuracy": float((result.predictions == y).mean()),
        "disagreements": int((keras_pred != result.predictions).sum()),
        "decoder_ties": result.decoder_ties,
    }
    if isinstance(net.decoder, ws.network.KeyDecoder):
        broken = tie_break_by_potential(net, x, result.scores)
        figures["potential_tie_break_accuracy"] = float((broken == y).mean())
        top = result.scores.max(axis=1, keepdims=True)
        tied = (result.scores == top).sum(axis=1) > 1
        figures["true_class_among_tied"] = float(
            (result.scores[tied, y[tied]] == top[tied, 0]).mean() if tied.any() else 1.0
        )
    return figures


def tie_break_by_potential(net, x: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Among the classes with the top vote, the one whose code's neurons sit highest:
    ``sum_j (2K_cj - 1) * (V_j - theta_j)`` over the output population's potentials."""
    body = ws.network.SpikingNetwork(net.input_shape, net.stages[:-1], None, net.input_encoding)
    last = net.stages[-1]
    hidden = ws.simulate.run(body, x).output_spikes
    potential = ws.simulate.preactivation(last, hidden).reshape(len(x), -1) - last.threshold
    margin = potential @ (2.0 * net.decoder.key - 1.0).T
    top = scores == scores.max(axis=1, keepdims=True)
    return np.where(top, margin, -np.inf).argmax(axis=1)


def sharpen(head: str, seed: int, data, epochs: int) -> tuple[keras.Model, dict]:
    (x, y), _ = data
    keras.utils.set_random_seed(seed)
    model = ws.models.dense_mnist(head=head, seed=seed)
    model.compile(keras.optimizers.Adam(1e-3), "categorical_crossentropy", metrics=["accuracy"])
    sharpener = ws.callbacks.SimpleSharpener(
        start_epoch=4, steps=3, stop_when_sharp=True, verbose=0
    )
    started = time.perf_counter()
    model.fit(x, keras.utils.to_categorical(y, 10), epochs=epochs, batch_size=128,
              callbacks=[sharpener], verbose=0)  # fmt: skip
    return model, {"seconds": time.perf_counter() - started, "epochs": sharpener._epoch + 1}


def hone(path: Path, width: float, rate: float, data, epochs: int) -> tuple[keras.Model, list]:
    (x, y), (x_test, y_test) = data
    model = keras.models.load_model(path)
    for layer in ws.sharpness.spiking_layers(model):
        layer.surrogate_width = width
    model.compile(keras.optimizers.Adam(rate), "categorical_crossentropy", metrics=["accuracy"])
    history = model.fit(
        x, keras.utils.to_categorical(y, 10), epochs=epochs, batch_size=128, verbose=0,
        validation_data=(x_test, keras.utils.to_categorical(y_test, 10)),
    )  # fmt: skip
    return model, [float(v) for v in history.history["val_accuracy"]]


@click.command()
@click.option("--data", "data_dir", default="../shared/data", show_default=True)
@click.option("--seeds", type=int, multiple=True, default=(0,), show_default=True)
@click.option("--heads", multiple=True, default=("key", "readout"), show_default=True)
@click.option("--sharpen-epochs", default=30, show_default=True)
@click.option("--hone-epochs", default=10, show_default=True)
@click.option("--out", type=click.Path(path_type=Path), default=RESULTS, show_default=True)
def main(data_dir, seeds, heads, sharpen_epochs, hone_epochs, out) -> None:
    """Compare honing variants and decoders on dense MNIST networks."""
    data = ws.datasets.load("mnist", data_dir)
    x_test, y_test = data[1]
    runs = []
    for seed in seeds:
        for head in heads:
            model, info = sharpen(head, seed, data, sharpen_epochs)
            run = {"seed": seed, "head": head, **info, "sharp": decisions(model, x_test, y_test)}
            click.echo(f"seed {seed} {head}: sharp {run['sharp']}", err=True)
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / "sharp.keras"
                model.save(path)
                run["honed"] = []
                for width, rate in VARIANTS:
                    honed, trace = hone(path, width, rate, data, hone_epochs)
                    figures = {"surrogate_width": width, "learning_rate": rate, "trace": trace}
                    figures.update(decisions(honed, x_test, y_test))
                    click.echo(f"  width {width} lr {rate}: {figures}", err=True)
                    run["honed"].append(figures)
            runs.append(run)
    write_result("honing", {"hone_epochs": hone_epochs, "runs": runs}, folder=out)


if __name__ == "__main__":
    main()
