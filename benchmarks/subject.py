"""One model as every back-end benchmark needs it: loaded, converted, its test data read and
the reference simulator run once; each back end then takes its share of the images.

Example:
    >>> from benchmarks.subject import load                      # doctest: +SKIP
    >>> subject = load("dense_mnist", "../shared/data", n_test=1000)
    >>> x, y, reference = subject.first(300)                     # doctest: +SKIP
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from whetstone import convert, datasets, simulate
from whetstone.network import SpikingNetwork


@dataclass
class Subject:
    """A converted model, its test images and the reference simulator's run on them."""

    name: str
    model: Any  # keras.Model
    net: SpikingNetwork
    x: np.ndarray
    y: np.ndarray
    reference: simulate.SimulationResult
    reference_seconds: float

    @functools.cached_property
    def keras_predictions(self) -> np.ndarray:
        """Keras's classes for every test image (computed on first use)."""
        return self.model.predict(self.x, verbose=0, batch_size=1000).argmax(axis=1)

    def first(self, n: int | None) -> tuple[np.ndarray, np.ndarray, simulate.SimulationResult]:
        """The first ``n`` images (None: all), their labels and the reference's result."""
        n = len(self.x) if n is None else min(n, len(self.x))
        return self.x[:n], self.y[:n], self.reference.first(n)


def from_model(name: str, model, x: np.ndarray, y: np.ndarray) -> Subject:
    """A :class:`Subject` of a Keras model and its test data."""
    net = convert.to_spiking(model)
    started = time.perf_counter()
    reference = simulate.run(net, x)
    return Subject(name, model, net, x, y, reference, time.perf_counter() - started)


def load(name: str, data_dir, n_test: int | None = None) -> Subject:
    """The cached sharpened reference model ``name`` on its first ``n_test`` test images."""
    from benchmarks.trained import RECIPES, sharpened_model

    _, (x, y) = datasets.load(RECIPES[name].dataset, data_dir)
    return from_model(name, sharpened_model(name, data_dir), x[:n_test], y[:n_test])
