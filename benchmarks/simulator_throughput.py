"""Reference simulator vs Keras on the sharpened MNIST reference models.

For each model (dense_mnist, conv_mnist from ``benchmarks.trained``): convert, run the
simulator's fast path and Keras ``predict`` on all 10,000 MNIST test images in the same
process, and record accuracies, disagreements, ties, throughput (images/s, best of
``--repeats`` interleaved runs) and their ratio, spikes and synaptic operations.

    python -m benchmarks.simulator_throughput [--data-dir ../shared/data] [--repeats 3]

Writes ``benchmarks/results/simulator_throughput.json``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np

import whetstone.models  # noqa: F401  (the recipes build from whetstone.models)
from benchmarks.common import write_result
from benchmarks.trained import CACHE, RECIPES, sharpened_model
from whetstone import convert, datasets, simulate

MODELS = ("dense_mnist", "conv_mnist")
BATCH = 1000


def _best_time(function, repeats: int) -> float:
    return min(_timed(function) for _ in range(repeats))


def _timed(function) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def measure(name: str, data_dir, repeats: int) -> dict:
    """Identity check and throughput of one reference model on the MNIST test set."""
    model = sharpened_model(name, data_dir)
    _, (x_test, y_test) = datasets.load(RECIPES[name].dataset, data_dir)
    net = convert.to_spiking(model)

    keras_predictions = model.predict(x_test, batch_size=BATCH, verbose=0).argmax(axis=1)
    result = simulate.run(net, x_test)
    differ = keras_predictions != result.predictions
    timestep = simulate.run(net, x_test[:500], mode="timestep")

    keras_times, simulator_times = [], []
    for _ in range(repeats):  # interleaved, so both see the same machine load
        keras_times.append(_timed(lambda: model.predict(x_test, batch_size=BATCH, verbose=0)))
        simulator_times.append(_timed(lambda: simulate.run(net, x_test)))
    keras_rate = len(x_test) / min(keras_times)
    simulator_rate = len(x_test) / min(simulator_times)
    return {
        "model": name,
        "stages": [
            {"name": s.name, "kind": s.kind, "neurons": s.num_neurons, "synapses": s.num_synapses}
            for s in net.stages
        ],
        "test_images": len(x_test),
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
        "keras_seconds": [round(t, 3) for t in keras_times],
        "simulator_seconds": [round(t, 3) for t in simulator_times],
    }


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=os.environ.get("WHETSTONE_DATA", "../shared/data"))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=sorted(RECIPES))
    args = parser.parse_args(argv)
    started = time.perf_counter()
    results = []
    for name in args.models:
        results.append(measure(name, args.data_dir, args.repeats))
        print({k: v for k, v in results[-1].items() if k != "stages"}, flush=True)
    payload = {
        "dataset": "mnist test set (10,000 images)",
        "seed": 0,
        "keras_batch_size": BATCH,
        "model_cache": str(CACHE),
        "timing": f"best of {args.repeats} interleaved runs, Keras predict vs simulator fast path",
        "results": results,
        "wall_seconds": round(time.perf_counter() - started, 1),
    }
    path = write_result("simulator_throughput", payload)
    print(f"wrote {path}")
    return payload


if __name__ == "__main__":
    main()
