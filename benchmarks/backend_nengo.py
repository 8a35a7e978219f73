"""Nengo and Nengo-Loihi back ends on real MNIST: accuracy, agreement, ties, speed, cost.

    python -m benchmarks.backend_nengo                        # all models, full test set
    python -m benchmarks.backend_nengo --loihi-images conv_mnist=1000   # emulator subset

Per sharpened reference model (``benchmarks.trained``): Keras accuracy, the reference
simulator's accuracy and ties, the Nengo reference simulator's accuracy, agreement and
ties on all 10,000 test images, the Loihi emulator's accuracy and agreement (integer
``sim`` = chip arithmetic with nengo-loihi's 8-bit weights, and float ``simreal`` =
the same dynamics without discretisation) on the first ``--loihi-images`` test images
(default: all 10,000), images/s per back end, and the Loihi resource report.
Writes ``benchmarks/results/backend_nengo.json``.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

from benchmarks.common import write_result
from benchmarks.trained import sharpened_model
from whetstone import convert, datasets, simulate
from whetstone.backends import get


def _accuracy(predictions, y) -> float:
    return float((np.asarray(predictions) == y).mean())


def _backend_figures(result, y) -> dict:
    info = result.info
    keys = ("agreement", "differing", "differing_not_ties", "output_spikes_differing")
    keys += ("output_spikes_differing_not_ties", "tie_images", "ties", "images_per_second")
    keys += ("build_seconds", "latency")
    out = {"accuracy": _accuracy(result.predictions, y), "images": len(y)}
    out.update({k: info[k] for k in keys if k in info})
    out["spike_counts"] = [int(c) for c in result.spike_counts]
    out["spike_counts_equal_reference"] = bool(
        np.array_equal(result.spike_counts, info["reference_spike_counts"])
    )
    return out


def bench_model(name: str, data_dir, loihi_images: int) -> dict:
    model = sharpened_model(name, data_dir)
    net = convert.to_spiking(model)
    _, (x, y) = datasets.load("mnist", data_dir)
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


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", default=["dense_mnist", "conv_mnist"])
    parser.add_argument(
        "--loihi-images",
        action="append",
        default=[],
        help="images on the Loihi emulator: N (all models) or MODEL=N; default 10000",
    )
    parser.add_argument("--data", default=os.environ.get("WHETSTONE_DATA", "../shared/data"))
    args = parser.parse_args(argv)
    counts = {}
    for item in args.loihi_images:
        name, _, n = item.rpartition("=")
        counts[name or "*"] = int(n)
    loihi_images = {m: counts.get(m, counts.get("*", 10000)) for m in args.models}
    results = {name: bench_model(name, args.data, loihi_images[name]) for name in args.models}
    path = write_result(
        "backend_nengo",
        {
            "loihi_images": loihi_images,
            "notes": (
                "nengo: Nengo reference simulator on all 10,000 MNIST test images. "
                "loihi_sim: nengo-loihi integer emulator (chip arithmetic, 8-bit weights); "
                "loihi_simreal: nengo-loihi float emulator (same compartment dynamics, no "
                "discretisation); both on the first loihi_images test images (a subset where "
                "the Python emulator is too slow for 10,000 on this 2-core machine). "
                "Agreement is with whetstone.simulate.run; ties are the reference's "
                "(|pre - theta| < 1e-6)."
            ),
            "models": results,
        },
    )
    print("wrote", path)


if __name__ == "__main__":
    main()
