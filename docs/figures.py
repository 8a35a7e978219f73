"""The documentation's figures, drawn with matplotlib from the code and committed results.

    python docs/figures.py OUT_DIR        # writes OUT_DIR/*.png

The MkDocs hook (``docs/hooks.py``) calls :func:`generate` on every build, so the
figures always show the current code; nothing here holds data of its own. The
sharpness-over-training figure reads the training history committed with the reference
model ``dense_mnist`` (``benchmarks/results/models/dense_mnist.json``, written by
``benchmarks/trained.py``); where that file is absent it trains the same network briefly
on the embedded demo subset and plots that run's history instead. The spike raster and
the firing rates are drawn with :mod:`whetstone.plot` from the committed reference model
``dense_mnist.keras`` on the embedded demo test images.
"""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HISTORY = ROOT / "benchmarks" / "results" / "models" / "dense_mnist.json"
MODEL = HISTORY.with_suffix(".keras")
SHARPNESS_VALUES = (0.0, 0.25, 0.5, 0.75, 0.9, 1.0)
FIGURES = ("activation.png", "sharpness_over_training.png", "raster.png", "firing_rates.png")
INPUTS = (Path(__file__), ROOT / "whetstone" / "layers.py", HISTORY, MODEL)
INPUTS += (ROOT / "whetstone" / "plot.py",)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def activation_figure(path: Path) -> None:
    """SpikingBRelu and SpikingSigmoid at several sharpness values."""
    import numpy as np

    from whetstone.layers import SpikingBRelu, SpikingSigmoid

    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4), sharey=True)
    colours = plt.get_cmap("viridis")(np.linspace(0.0, 0.9, len(SHARPNESS_VALUES)))
    for ax, layer_type, x in (
        (axes[0], SpikingBRelu, np.linspace(-0.25, 1.25, 1201, dtype="float32")),
        (axes[1], SpikingSigmoid, np.linspace(-3.0, 3.0, 1201, dtype="float32")),
    ):
        for value, colour in zip(SHARPNESS_VALUES, colours, strict=True):
            y = np.asarray(layer_type(sharpness=value)(x[None, :]))[0]
            ax.plot(x, y, color=colour, label=f"sharpness {value:g}")
        ax.axvline(layer_type.threshold, color="grey", lw=0.8, ls=":")
        ax.set_title(f"{layer_type.__name__} (step at {layer_type.threshold:g})")
        ax.set_xlabel("input")
    axes[0].set_ylabel("output")
    axes[1].legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def demo_record(images: int = 2000, start_epoch: int = 2, steps: int = 2) -> dict:
    """A training record like the committed one, from a short run on the demo subset."""
    import keras

    import whetstone as ws

    (x, y), _ = ws.datasets.load("demo")
    keras.utils.set_random_seed(0)
    model = ws.models.dense_mnist()
    model.compile(keras.optimizers.Adadelta(4.0), "categorical_crossentropy", metrics=["accuracy"])
    layers = len(ws.sharpness.spiking_layers(model))
    sharpener = ws.callbacks.SimpleSharpener(start_epoch, steps, stop_when_sharp=True, verbose=0)
    history = model.fit(
        x[:images],
        keras.utils.to_categorical(y[:images], 10),
        epochs=start_epoch + layers * steps,
        batch_size=128,
        callbacks=[sharpener],
        verbose=0,
    ).history
    recipe = {"dataset": f"{images:,} demo images", "start_epoch": start_epoch, "steps": steps}
    return {"model": "dense_mnist", "recipe": recipe, "history": history}


def training_record(history_file: Path = HISTORY) -> dict:
    """The committed training record of ``dense_mnist``, or a short demo run's."""
    if not history_file.exists():
        return demo_record()
    record = json.loads(history_file.read_text())
    history = record.get("history", {})
    if "accuracy" not in history or not any(k.startswith("sharpness_") for k in history):
        raise ValueError(f"{history_file}: 'history' lacks 'accuracy' or 'sharpness_<layer>'.")
    return record


def sharpness_figure(path: Path, history_file: Path = HISTORY) -> None:
    """Per-layer sharpness and training accuracy per epoch of one training run."""
    record = training_record(history_file)
    history = record["history"]
    layers = [key for key in history if key.startswith("sharpness_")]
    epochs = range(1, len(history["accuracy"]) + 1)
    plt = _pyplot()
    fig, (top, bottom) = plt.subplots(
        2, 1, figsize=(7, 4.6), sharex=True, gridspec_kw={"height_ratios": [1, 2]}
    )
    top.plot(epochs, history["accuracy"], color="black", marker="o", ms=3)
    top.set_ylabel("training\naccuracy")
    recipe = record.get("recipe", {})
    top.set_title(
        f"{record.get('model', history_file.stem)}: SimpleSharpener("
        f"start_epoch={recipe.get('start_epoch')}, steps={recipe.get('steps')}) on "
        f"{recipe.get('dataset')}",
        fontsize=10,
    )
    for key in layers:
        bottom.plot(epochs, history[key], marker="o", ms=3, label=key.removeprefix("sharpness_"))
    bottom.set_ylabel("sharpness")
    bottom.set_ylim(-0.05, 1.05)
    bottom.set_xlabel("epoch (values logged at the end of each epoch)")
    bottom.set_xticks(list(epochs))
    bottom.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


@functools.cache
def reference_network():
    """The committed ``dense_mnist`` as a SpikingNetwork, and the demo test images."""
    import keras

    from whetstone import convert, datasets

    net = convert.to_spiking(keras.models.load_model(MODEL))
    x = datasets.load("demo")[1][0]
    return net, x.reshape(len(x), *net.input_shape)


def raster_figure(path: Path) -> None:
    """``whetstone.plot.raster``: the first demo test image through dense_mnist."""
    from whetstone import plot

    plot.raster(*reference_network(), index=0, path=path, force=True)


def rates_figure(path: Path) -> None:
    """``whetstone.plot.firing_rates``: dense_mnist over the 1,000 demo test images."""
    from whetstone import plot

    plot.firing_rates(*reference_network(), path=path, force=True)


def generate(out_dir: Path) -> list[Path]:
    """Write every figure into ``out_dir`` (skipped when newer than its inputs)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / name for name in FIGURES]
    newest_input = max(path.stat().st_mtime for path in INPUTS if path.exists())
    if all(p.exists() and p.stat().st_mtime > newest_input for p in paths):
        return paths
    draws = (activation_figure, sharpness_figure, raster_figure, rates_figure)
    for path, draw in zip(paths, draws, strict=True):
        tmp = path.with_name(f".{path.name}.tmp.png")
        draw(tmp)
        tmp.replace(path)
    return paths


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    for written in generate(Path(sys.argv[1])):
        print(written)
