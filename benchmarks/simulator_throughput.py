"""Reference simulator vs Keras on the sharpened reference models (used by ``benchmarks.suite``).

Load each model through :mod:`benchmarks.subject` (converted, its test images, the
simulator's fast path run once), run the oracle (``mode="batch"``, the plain BLAS path)
and Keras ``predict`` (batches of ``BATCH`` = 1000 images) on the same images in one
process, and record accuracies, disagreements, ties, throughput (images/s, best of
``repeats`` interleaved runs) and the ratios (of the best runs, and the spread of the
ratio within each repeat: on a noisy machine one figure is not a measurement), whether
the fast path equals the oracle in every output (spikes, ties, synaptic operations),
spikes, synaptic operations and the worker threads the fast path used.
Where one pass over the images is short (dense_mnist: about 0.1 s, where timer and load
noise matter), each timed run makes ``passes`` passes (both sides the same number, enough
for the simulator's run to last ``MIN_SECONDS``) and the figures are per pass. Run
alone it measures every reference model whose trained file is cached (and says which it
skips) and writes ``results/simulator_throughput.json``:

    python -m benchmarks.simulator_throughput --models conv_mnist --repeats 3

Example:
    >>> from benchmarks.simulator_throughput import measure    # doctest: +SKIP
    >>> figures = measure("dense_mnist", "../shared/data", repeats=3)
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path

import click
import numpy as np
from threadpoolctl import threadpool_info

from benchmarks import subject
from benchmarks.common import RESULTS, write_result
from benchmarks.report import repeat_spread
from whetstone import simulate

BATCH = 1000
MIN_SECONDS = 1.0
BLAS_FACTS = ("internal_api", "version", "architecture", "num_threads")  # recorded per BLAS
SAME = ("output_spikes", "predictions", "scores", "sample_ties", "synaptic_operations")


def _best_time(function, repeats: int) -> float:
    return min(_timed(function) for _ in range(repeats))


def _timed(function) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def _passes(function) -> int:
    """Passes of ``function`` that take at least ``MIN_SECONDS`` (one if one does)."""
    return max(1, math.ceil(MIN_SECONDS / max(_timed(function), 1e-6)))


def _per_pass(function, passes: int) -> float:
    """Seconds per call of ``function``, timed over ``passes`` calls in a row."""
    return _timed(lambda: [function() for _ in range(passes)]) / passes


def measure(name: str, data_dir, repeats: int, n_test: int | None = None) -> dict:
    """Identity check and throughput of one reference model on its first ``n_test``
    test images (default all)."""
    return measure_subject(subject.load(name, data_dir, n_test), repeats)


def measure_subject(loaded: subject.Subject, repeats: int) -> dict:
    """:func:`measure` of a loaded model (its reference run is the fast path's)."""
    model, net, x_test, y_test = loaded.model, loaded.net, loaded.x, loaded.y
    name = loaded.name
    keras_predictions = loaded.keras_predictions
    result = loaded.reference
    oracle = simulate.run(net, x_test, mode="batch")
    differ = keras_predictions != result.predictions
    timestep = simulate.run(net, x_test[:500], mode="timestep")

    runs = []
    passes = _passes(lambda: runs.append(simulate.run(net, x_test)))  # warm: run once before
    keras_times, simulator_times, batch_times = [], [], []
    for _ in range(repeats):  # interleaved, so all see the same machine load
        keras_times.append(_per_pass(lambda: model.predict(x_test, batch_size=BATCH, verbose=0),
                                     passes))  # fmt: skip
        simulator_times.append(_per_pass(lambda: runs.append(simulate.run(net, x_test)), passes))
        batch_times.append(_per_pass(lambda: simulate.run(net, x_test, mode="batch"), passes))
    ratios = sorted(k / s for k, s in zip(keras_times, simulator_times, strict=True))
    keras_rate = len(x_test) / min(keras_times)
    simulator_rate = len(x_test) / min(simulator_times)
    batch_rate = len(x_test) / min(batch_times)
    return {
        "model": name,
        "stages": [
            {"name": s.name, "kind": s.kind, "neurons": s.num_neurons, "synapses": s.num_synapses}
            for s in net.stages
        ],
        "test_images": len(x_test),
        "decoder": type(net.decoder).__name__ if net.decoder is not None else None,
        "keras_accuracy": float((keras_predictions == y_test).mean()),
        "simulator_accuracy": float((result.predictions == y_test).mean()),
        "disagreements": int(differ.sum()),
        "disagreements_without_tie": int((differ & ~result.tie_mask).sum()),
        "neuron_ties_per_stage": result.ties.tolist(),
        "samples_with_neuron_ties": int((result.sample_ties.sum(axis=1) > 0).sum()),
        "decoder_ties": result.decoder_ties,
        "timestep_equals_fast_on_first_500": bool(
            np.array_equal(timestep.output_spikes, result.output_spikes[:500])
        ),
        "spikes_per_inference_per_stage": result.spikes_per_inference.round(3).tolist(),
        "synops_per_inference": round(result.synops_per_inference, 1),
        "ann_macs_per_inference": result.ann_macs,
        "latency_steps": result.latency,
        "keras_images_per_s": round(keras_rate, 1),
        "simulator_images_per_s": round(simulator_rate, 1),
        "simulator_over_keras": round(simulator_rate / keras_rate, 3),
        "ratio_per_repeat": {  # each repeat's Keras seconds over its simulator seconds
            "min": round(ratios[0], 3),
            "median": round(float(np.median(ratios)), 3),
            "max": round(ratios[-1], 3),
        },
        "keras_batch_size": BATCH,
        "passes_per_repeat": passes,
        "keras_seconds": [round(t, 3) for t in keras_times],
        "simulator_seconds": [round(t, 3) for t in simulator_times],
        "simulator_threads": runs[-1].threads,
        "blas": _blas(),
        "cpus": len(os.sched_getaffinity(0)),
        "fast_equals_batch": all(
            np.array_equal(getattr(result, f), getattr(oracle, f)) for f in SAME
        ),
        "batch_images_per_s": round(batch_rate, 1),
        "batch_over_keras": round(batch_rate / keras_rate, 3),
        "fast_over_batch": round(simulator_rate / batch_rate, 3),
        "batch_seconds": [round(t, 3) for t in batch_times],
    }


def _blas() -> list[dict]:
    """The loaded BLAS libraries: which, their CPU kernel and threads."""
    pools = [pool for pool in threadpool_info() if pool["user_api"] == "blas"]
    return [{key: pool.get(key) for key in BLAS_FACTS} for pool in pools]


def trained(name: str) -> bool:
    """Whether the sharpened model ``name`` is in the model cache (else it would be trained)."""
    from benchmarks import trained as cache

    return (cache.CACHE / f"{name}.keras").is_file()


@click.command()
@click.option("--data", "data_dir", default="../shared/data", show_default=True)
@click.option("--models", default="dense_mnist,conv_mnist,conv_fashion,vgg_cifar10,resnet_mnist",
              show_default=True, help="comma-separated reference models")  # fmt: skip
@click.option("--repeats", default=3, show_default=True)
@click.option("--limit", type=int, default=None, help="first test images only (default all)")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=RESULTS)
def main(data_dir: str, models: str, repeats: int, limit: int | None, out: Path) -> None:
    """Measure every model in ``--models``; write ``simulator_throughput.json`` into ``out``."""
    figures = []
    for name in models.split(","):
        if not trained(name):
            click.echo(f"{name}: skipped, no trained model (python -m benchmarks.trained {name})",
                       err=True)  # fmt: skip
            continue
        figures.append(measure(name, data_dir, repeats, limit))
        row = figures[-1]
        click.echo(f"{name}: keras {row['keras_images_per_s']:,.0f} img/s, simulator "
                   f"{row['simulator_images_per_s']:,.0f} img/s ({row['simulator_over_keras']}x; "
                   f"per repeat {repeat_spread(row)}), "
                   f"fast equals oracle: {row['fast_equals_batch']}, "
                   f"{row['simulator_threads']} threads", err=True)  # fmt: skip
    click.echo(f"wrote {write_result('simulator_throughput', {'models': figures}, folder=out)}")


if __name__ == "__main__":
    main()
