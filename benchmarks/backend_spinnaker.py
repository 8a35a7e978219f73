"""SpiNNaker figures of one reference model (used by ``benchmarks.suite``): PyNN on NEST
vs the reference, fixed point, mapping.

Per model: agreement of PyNN/NEST predictions (and output spikes) with
``whetstone.simulate.run`` on the first ``n`` test images, accuracy, ties, SpiNNaker's
16-bit weight quantisation (what rounds to zero, the fixed-point model's accuracy),
cores and chips from sPyNNaker's mapping on a virtual SpiNN-5 board, and images/s.

Example:
    >>> from benchmarks import subject                           # doctest: +SKIP
    >>> from benchmarks.backend_spinnaker import evaluate      # doctest: +SKIP
    >>> figures = evaluate(subject.load("dense_mnist", "../shared/data"), n=100)  # doctest: +SKIP
"""

from __future__ import annotations

import warnings

from benchmarks.subject import Subject
from whetstone.backends import agreement, compare, spinnaker

THREADS = 2
"""NEST's threads (both cores of the benchmark machine; results can differ on ties only)."""
MAP_IMAGES = 300
"""Images played in on the virtual board when mapping (they size sPyNNaker's buffers)."""


def timed(subject: Subject):
    """``timed(n)``: build and simulation seconds of NEST on ``n`` images (for
    :func:`benchmarks.suite.sized`)."""

    def run(n: int) -> tuple[float, float]:
        x = subject.x[:n]
        result = spinnaker.get_backend().run(subject.net, x, simulator="nest", threads=THREADS)
        return result.build_seconds, result.run_seconds

    return run


def evaluate(subject: Subject, n: int) -> dict:
    """All figures of one loaded model on its first ``n`` test images (the virtual board
    maps the first ``MAP_IMAGES`` of them)."""
    net = subject.net
    x, y, reference = subject.first(n)
    backend = spinnaker.get_backend()
    nest = backend.run(net, x, simulator="nest", threads=THREADS)
    record = compare(reference, nest)
    fixed, _ = spinnaker.fixed_point_run(net, x)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        mapping = backend.map(net, x[:MAP_IMAGES])
    quant = spinnaker.quantisation(net, x)
    quant.pop("changed_samples", None)
    return {
        "model": subject.name,
        "images": len(x),
        "neurons": net.num_neurons,
        "synapses": net.num_synapses,
        "nest": {
            "prediction_agreement": record["agreement"],
            "output_spike_agreement": 1 - record["output_spikes_differing"] / len(x),
            "disagreements": record["differing"],
            "disagreements_on_tie_samples": record["differing"] - record["differing_not_ties"],
            "accuracy": float((nest.predictions == y).mean()),
            "images_per_second": len(x) / (nest.build_seconds + nest.run_seconds),
            "simulate_images_per_second": nest.images_per_second,
            "threads": THREADS,
            "build_seconds": nest.build_seconds,
            "simulate_seconds": nest.run_seconds,
        },
        "reference": {
            "accuracy": float((reference.predictions == y).mean()),
            "tie_samples": int(reference.tie_mask.sum()),
            "ties_per_stage": reference.ties.tolist(),
        },
        "spinnaker_fixed_point": {
            "accuracy": float((fixed == y).mean()),
            "prediction_agreement_with_reference": agreement(fixed, reference.predictions)[
                "agreement"
            ],
            "quantisation": quant,
            "precision_warning": [str(w.message) for w in caught],
        },
        "virtual_board": mapping,
    }
