"""SpiNNaker figures of one reference model (used by ``benchmarks.suite``): PyNN on NEST
vs the reference, fixed point, mapping.

Per model: agreement of PyNN/NEST predictions (and output spikes) with
``whetstone.simulate.run`` on the first ``n`` test images, accuracy, ties, SpiNNaker's
16-bit weight quantisation (what rounds to zero, the fixed-point model's accuracy),
cores and chips from sPyNNaker's mapping on a virtual SpiNN-5 board, and images/s.

Example:
    >>> from benchmarks.backend_spinnaker import evaluate      # doctest: +SKIP
    >>> figures = evaluate("dense_mnist", "../shared/data", n=100)
"""

from __future__ import annotations

import time
import warnings

import whetstone as ws
from benchmarks.trained import RECIPES, sharpened_model
from whetstone import simulate
from whetstone.backends import spinnaker


def evaluate(name: str, data_dir, n: int) -> dict:
    """All figures of one reference model."""
    import whetstone.convert

    net = whetstone.convert.to_spiking(sharpened_model(name, data_dir))
    _, (x_test, y_test) = ws.datasets.load(RECIPES[name].dataset, data_dir)
    x, y = x_test[:n], y_test[:n]
    reference = simulate.run(net, x)
    backend = spinnaker.get_backend()
    started = time.perf_counter()
    nest = backend.run(net, x, simulator="nest")
    seconds = time.perf_counter() - started
    differ = nest.predictions != reference.predictions
    spikes_differ = (nest.output_spikes != reference.output_spikes.reshape(n, -1)).any(axis=1)
    fixed, _ = spinnaker.fixed_point_run(net, x)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        mapping = backend.map(net, x)
    quant = spinnaker.quantisation(net, x)
    quant.pop("changed_samples", None)
    return {
        "model": name,
        "images": n,
        "neurons": net.num_neurons,
        "synapses": net.num_synapses,
        "nest": {
            "prediction_agreement": float(1 - differ.mean()),
            "output_spike_agreement": float(1 - spikes_differ.mean()),
            "disagreements": int(differ.sum()),
            "disagreements_on_tie_samples": int((differ & reference.tie_mask).sum()),
            "accuracy": float((nest.predictions == y).mean()),
            "images_per_second": n / seconds,
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
            "prediction_agreement_with_reference": float((fixed == reference.predictions).mean()),
            "quantisation": quant,
            "precision_warning": [str(w.message) for w in caught],
        },
        "virtual_board": mapping,
    }
