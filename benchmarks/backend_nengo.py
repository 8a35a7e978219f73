"""Nengo and Nengo-Loihi figures of one sharpened reference model (used by ``benchmarks.suite``).

Keras accuracy, the reference simulator's accuracy and ties, the Nengo reference
simulator's accuracy, agreement and ties, the Loihi emulator's accuracy and agreement
(integer ``sim`` = chip arithmetic with nengo-loihi's 8-bit weights, and float
``simreal`` = the same dynamics without discretisation) on the first ``loihi_images``
test images, images/s per back end, and the Loihi resource report.

Example:
    >>> from benchmarks.backend_nengo import bench_model         # doctest: +SKIP
    >>> figures = bench_model("dense_mnist", "../shared/data", loihi_images=1000)
"""

from __future__ import annotations

import time

import numpy as np

from benchmarks.trained import RECIPES, sharpened_model
from whetstone import convert, datasets, simulate
from whetstone.backends import get


def _accuracy(predictions, y) -> float:
    return float((np.asarray(predictions) == y).mean())


def _backend_figures(result, y) -> dict:
    """Accuracy, the agreement record (``compare_reference=True``), speed and spike counts."""
    out = {"accuracy": _accuracy(result.predictions, y), **result.agreement}
    out["images_per_second"] = result.images_per_second
    out["build_seconds"] = result.build_seconds
    out["latency"] = result.info["latency"]
    out["spike_counts"] = [int(c) for c in result.spike_counts]
    out["spike_counts_equal_reference"] = bool(
        np.array_equal(result.spike_counts, result.info["reference_spike_counts"])
    )
    return out


def bench_model(name: str, data_dir, loihi_images: int, n_test: int | None = None) -> dict:
    """Figures of model ``name`` on its first ``n_test`` test images (default all)."""
    model = sharpened_model(name, data_dir)
    net = convert.to_spiking(model)
    _, (x, y) = datasets.load(RECIPES[name].dataset, data_dir)
    x, y = x[:n_test], y[:n_test]
    keras_accuracy = _accuracy(model.predict(x, verbose=0).argmax(axis=1), y)
    started = time.perf_counter()
    ref = simulate.run(net, x)
    ref_s = time.perf_counter() - started
    report = {
        "summary": net.summary(),
        "keras_accuracy": keras_accuracy,
        "reference": {
            "accuracy": _accuracy(ref.predictions, y),
            "images": len(y),
            "tie_images": int(ref.tie_mask.sum()),
            "ties": int(ref.ties.sum() + ref.decoder_ties),
            "images_per_second": len(y) / ref_s,
        },
    }
    print(name, "keras", keras_accuracy, "reference", report["reference"], flush=True)
    nengo_result = get("nengo").run(net, x, compare_reference=True)
    report["nengo"] = _backend_figures(nengo_result, y)
    print(name, "nengo", report["nengo"], flush=True)
    xs, ys = x[:loihi_images], y[:loihi_images]
    loihi = get("loihi")
    for target in ("sim", "simreal"):
        result = loihi.run(net, xs, target=target, compare_reference=True)
        figures = _backend_figures(result, ys)
        figures["keras_accuracy_same_images"] = _accuracy(
            model.predict(xs, verbose=0).argmax(axis=1), ys
        )
        figures["reference_accuracy_same_images"] = _accuracy(ref.predictions[:loihi_images], ys)
        report[f"loihi_{target}"] = figures
        report["loihi_resources"] = result.info["resources"]
        print(name, target, figures, flush=True)
    return report
