"""Training cost of sharpening: ``fit`` time per epoch with and without a sharpener.

Same model (the original Whetstone MNIST dense network, 784-256-64-100 with an
N-hot key), same data, same batch size; configurations interleaved so that machine
noise hits all of them alike. The per-batch sharpener is the worst case: it assigns
a sharpness variable after every batch.

    python -m benchmarks.sharpener_overhead [--data-dir ../shared/data] [--repeats 2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras

import whetstone as ws
from benchmarks.common import write_result
from benchmarks.trained import EpochTimer

CONFIGS = {
    "no sharpener": lambda: [],
    "SimpleSharpener per epoch": lambda: [ws.callbacks.SimpleSharpener(0, 1000, verbose=0)],
    "SimpleSharpener per batch": lambda: [
        ws.callbacks.SimpleSharpener(0, 100_000, per="batch", verbose=0)
    ],
}


def epoch_times(x, y, callbacks, epochs: int, batch_size: int) -> list[float]:
    """Seconds per epoch of a fresh model, the first (tracing) epoch dropped."""
    keras.utils.set_random_seed(0)
    model = ws.models.dense_mnist()
    model.compile(keras.optimizers.Adadelta(4.0), "categorical_crossentropy")
    timer = EpochTimer()
    model.fit(x, y, epochs=epochs, batch_size=batch_size, callbacks=[*callbacks, timer], verbose=0)
    return timer.seconds[1:]


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=os.environ.get("WHETSTONE_DATA", "../shared/data"))
    parser.add_argument("--dataset", default="mnist")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=4, help="per fit; the first is dropped")
    parser.add_argument("--limit", type=int, default=None, help="train on the first N images")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--out", default=None, help="results folder (default benchmarks/results)")
    args = parser.parse_args(argv)

    started = time.perf_counter()
    (x, y), _ = ws.datasets.load(args.dataset, args.data_dir)
    x, y = x[: args.limit], keras.utils.to_categorical(y[: args.limit], 10)
    times = {name: [] for name in CONFIGS}
    names = list(CONFIGS)
    for repeat in range(args.repeats):
        for name in names[repeat % len(names) :] + names[: repeat % len(names)]:  # rotate
            times[name] += epoch_times(x, y, CONFIGS[name](), args.epochs, args.batch_size)
    base = statistics.median(times["no sharpener"])
    rows = {
        name: {
            "median_epoch_s": statistics.median(seconds),
            "epochs_s": seconds,
            "overhead_ratio": statistics.median(seconds) / base,
        }
        for name, seconds in times.items()
    }
    for name, row in rows.items():
        print(f"{name:28s} {row['median_epoch_s']:7.3f} s/epoch  ratio {row['overhead_ratio']:.3f}")
    result = {
        "dataset": args.dataset,
        "train_images": len(x),
        "batch_size": args.batch_size,
        "seed": 0,
        "model": "dense_mnist (784-256-64-100, N-hot key 100)",
        "configs": rows,
        "wall_s": time.perf_counter() - started,
    }
    if args.out != "-":
        kwargs = {} if args.out is None else {"folder": __import__("pathlib").Path(args.out)}
        print("wrote", write_result("sharpener_overhead", result, **kwargs))
    return result


if __name__ == "__main__":
    main()
