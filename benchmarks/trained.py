"""Sharpened reference models, trained once and cached as ``.keras`` files.

Back-end tests and benchmarks share these instead of each training its own. A file
lock makes concurrent callers wait for the one that trains.

    python -m benchmarks.trained dense_mnist conv_mnist   # train (or load) and report

Example:
    >>> from benchmarks.trained import sharpened_model       # doctest: +SKIP
    >>> model = sharpened_model("dense_mnist", "../shared/data")
"""

from __future__ import annotations

import fcntl
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras

import whetstone as ws

CACHE = Path(os.environ.get("WHETSTONE_MODEL_CACHE", Path(__file__).parent / "results" / "models"))


@dataclass(frozen=True)
class Recipe:
    """How a reference model is built and trained."""

    dataset: str
    build: str  # name of a builder in whetstone.models
    optimizer: str
    learning_rate: float
    epochs: int
    start_epoch: int
    steps: int
    batch_size: int = 128
    seed: int = 0


RECIPES = {
    # The original Whetstone MNIST dense network and schedule.
    "dense_mnist": Recipe("mnist", "dense_mnist", "adadelta", 4.0, 21, 5, 5),
    "conv_mnist": Recipe("mnist", "conv_mnist", "adam", 1e-3, 14, 4, 2),
    "conv_fashion": Recipe("fashion-mnist", "conv_mnist", "adam", 1e-3, 18, 6, 2),
}


def train(name: str, data_dir) -> tuple[keras.Model, dict]:
    """Train the named reference model with its recipe; return it and a report."""
    recipe = RECIPES[name]
    (x, y), (x_test, y_test) = ws.datasets.load(recipe.dataset, data_dir)
    keras.utils.set_random_seed(recipe.seed)
    model = getattr(ws.models, recipe.build)()
    optimizer = keras.optimizers.get(
        {"class_name": recipe.optimizer, "config": {"learning_rate": recipe.learning_rate}}
    )
    model.compile(optimizer, "categorical_crossentropy", metrics=["accuracy"])
    sharpener = ws.callbacks.SimpleSharpener(recipe.start_epoch, recipe.steps, stop_when_sharp=True)
    started = time.perf_counter()
    history = model.fit(
        x,
        keras.utils.to_categorical(y, 10),
        epochs=recipe.epochs,
        batch_size=recipe.batch_size,
        callbacks=[sharpener],
        verbose=2,
    )
    accuracy = float((model.predict(x_test, verbose=0).argmax(axis=1) == y_test).mean())
    report = {
        "model": name,
        "recipe": recipe.__dict__,
        "fully_sharpened": ws.sharpness.is_fully_sharpened(model),
        "test_accuracy": accuracy,
        "train_seconds": time.perf_counter() - started,
        "history": {k: [float(v) for v in vs] for k, vs in history.history.items()},
    }
    return model, report


def sharpened_model(name: str, data_dir=None) -> keras.Model:
    """The cached sharpened model ``name`` (one of ``RECIPES``), trained on first use."""
    if name not in RECIPES:
        raise ValueError(f"unknown reference model {name!r}; choose one of {sorted(RECIPES)}.")
    CACHE.mkdir(parents=True, exist_ok=True)
    path = CACHE / f"{name}.keras"
    with open(CACHE / f".{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not path.exists():
            model, report = train(name, data_dir)
            tmp = path.with_suffix(".tmp.keras")
            model.save(tmp)
            os.replace(tmp, path)
            (CACHE / f"{name}.json").write_text(json.dumps(report, indent=2) + "\n")
    return keras.models.load_model(path)


if __name__ == "__main__":
    data = os.environ.get("WHETSTONE_DATA", "../shared/data")
    for model_name in sys.argv[1:] or sorted(RECIPES):
        sharpened_model(model_name, data)
        print(
            json.dumps(
                {
                    k: v
                    for k, v in json.loads((CACHE / f"{model_name}.json").read_text()).items()
                    if k != "history"
                }
            )
        )
