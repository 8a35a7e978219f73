"""Nengo and Nengo-Loihi figures of one sharpened reference model (used by ``benchmarks.suite``).

Keras accuracy, the reference simulator's accuracy and ties, the Nengo reference
simulator's accuracy, agreement and ties, the Loihi emulator's accuracy and agreement
(integer ``sim`` = chip arithmetic with nengo-loihi's 8-bit weights, and float
``simreal`` = the same dynamics without discretisation) on the first ``loihi_images``
test images, images/s per back end, and the Loihi resource report.

Example:
    >>> from benchmarks import subject                           # doctest: +SKIP
    >>> from benchmarks.backend_nengo import bench_model         # doctest: +SKIP
    >>> figures = bench_model(subject.load("dense_mnist", "../shared/data"), 1000)  # doctest: +SKIP
"""

from __future__ import annotations

import os

import numpy as np

from benchmarks.subject import Subject
from whetstone.backends import compare, get
from whetstone.backends.chunks import run_chunks


def _accuracy(predictions, y) -> float:
    return float((np.asarray(predictions) == y).mean())


def _backend_figures(result, y, reference) -> dict:
    """Accuracy, the agreement record with the reference, speed and spike counts."""
    out = {"accuracy": _accuracy(result.predictions, y), **compare(reference, result)}
    out["images_per_second"] = result.images_per_second
    out["build_seconds"] = result.build_seconds
    out["latency"] = result.info["latency"]
    out["spike_counts"] = [int(c) for c in result.spike_counts]
    out["spike_counts_equal_reference"] = bool(
        np.array_equal(result.spike_counts, reference.spike_counts)
    )
    return out


LOIHI_TARGETS = ("sim", "simreal")
LOIHI_PROCESSES = os.cpu_count() or 1
"""The Loihi emulator runs on one core: a run is split into this many chunks, one process
each (:func:`whetstone.backends.chunks.run_chunks`; the result equals a single run)."""


def _run_loihi(net, x, target: str):
    return run_chunks("loihi", net, x, LOIHI_PROCESSES, target=target)


def timed(subject: Subject):
    """``timed(n)``: build and run seconds of both Loihi emulator targets on ``n`` images
    (for :func:`benchmarks.suite.sized`)."""

    def run(n: int) -> tuple[float, float]:
        x = subject.x[:n]
        results = [_run_loihi(subject.net, x, t) for t in LOIHI_TARGETS]
        return sum(r.build_seconds for r in results), sum(r.run_seconds for r in results)

    return run


def bench_model(subject: Subject, loihi_images: int) -> dict:
    """Figures of a loaded model: Nengo on all its images, Loihi on the first ``loihi_images``."""
    net, y, ref = subject.net, subject.y, subject.reference
    report = {
        "summary": net.summary(),
        "keras_accuracy": _accuracy(subject.keras_predictions, y),
        "reference": {
            "accuracy": _accuracy(ref.predictions, y),
            "images": len(y),
            "tie_images": int(ref.tie_mask.sum()),
            "ties": int(ref.ties.sum() + ref.decoder_ties),
            "images_per_second": len(y) / subject.reference_seconds,
        },
    }
    print(subject.name, "keras", report["keras_accuracy"], "reference", report["reference"])
    report["nengo"] = _backend_figures(get("nengo").run(net, subject.x), y, ref)
    print(subject.name, "nengo", report["nengo"], flush=True)
    xs, ys, ref_s = subject.first(loihi_images)
    for target in LOIHI_TARGETS:
        result = _run_loihi(net, xs, target)
        figures = _backend_figures(result, ys, ref_s)
        figures["processes"] = result.info.get("processes", 1)
        figures["keras_accuracy_same_images"] = _accuracy(subject.keras_predictions[: len(ys)], ys)
        figures["reference_accuracy_same_images"] = _accuracy(ref_s.predictions, ys)
        report[f"loihi_{target}"] = figures
        report["loihi_resources"] = result.info["resources"]
        print(subject.name, target, figures, flush=True)
    return report
