"""Peer worker: NengoDL's Converter (rate-coded spiking ReLU) on whetstone's architectures.

Runs in the peer environment (TensorFlow 2.12 / Keras 2, nengo-dl 3.6), never in
whetstone's, and imports nothing from whetstone. ``benchmarks.peer_nengodl`` writes the
data (``.npz``) and a JSON configuration, starts this script with the peer
environment's python and reads the JSON result; progress goes to stderr.

    .venv-nengodl/bin/python benchmarks/nengodl_worker.py --config cfg.json --out res.json

Per model it trains the ReLU ANN (seed 0), converts it with
``nengo_dl.Converter(swap_activations={tf.nn.relu: nengo.SpikingRectifiedLinear()},
scale_firing_rates=s, synapse=None, max_to_avg_pool=True, inference_only=True)``,
runs one simulation of T steps per scale with the image as constant input, and
decodes the class at every t from the output summed over steps 1..t.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")  # the peer is measured on CPU

import nengo
import nengo_dl
import numpy as np
import tensorflow as tf
from nengo_dl import graph_optimizer

tf.get_logger().setLevel("ERROR")
warnings.filterwarnings("ignore", module="nengo_dl")
warnings.filterwarnings("ignore", module="nengo")

DT = 0.001
DECODING = (
    "class at t = argmax of the output layer summed (equivalently averaged) over steps 1..t; "
    "one simulation of T steps per scale, the image presented as constant input every step, "
    f"synapse None, dt {DT}"
)
PLANNER = graph_optimizer.noop_planner
DATASETS = {
    "dense_mnist": "mnist",
    "conv_mnist": "mnist",
    "conv_fashion": "fashion-mnist",
    "conv_mnist_avgpool": "mnist",
    "conv_fashion_avgpool": "fashion-mnist",
    "vgg_cifar10": "cifar10",
    "vgg_cifar10_avgpool": "cifar10",
}
CONV_FILTERS = {"vgg_cifar10": (32, 64, 128), "vgg_cifar10_avgpool": (32, 64, 128)}
"""Filters per conv block (one 3x3 conv each); (32, 64) unless listed: whetstone's models."""
INPUT_SHAPES = {"vgg_cifar10": (32, 32, 3), "vgg_cifar10_avgpool": (32, 32, 3)}


def log(*parts: object) -> None:
    print("[nengodl]", *parts, file=sys.stderr, flush=True)


def build_dense() -> tf.keras.Model:
    inputs = tf.keras.Input((28, 28), name="image")
    x = tf.keras.layers.Flatten(name="flatten")(inputs)
    x = tf.keras.layers.Dense(256, activation=tf.nn.relu, name="dense_1")(x)
    x = tf.keras.layers.Dense(64, activation=tf.nn.relu, name="dense_2")(x)
    outputs = tf.keras.layers.Dense(10, name="logits")(x)
    return tf.keras.Model(inputs, outputs, name="dense_mnist")


def build_conv(name: str) -> tf.keras.Model:
    """whetstone's conv architecture; ``*_avgpool``: average instead of max pooling."""
    L = tf.keras.layers
    pool = L.AveragePooling2D if name.endswith("_avgpool") else L.MaxPooling2D
    shape = INPUT_SHAPES.get(name, (28, 28))
    inputs = tf.keras.Input(shape, name="image")
    x = L.Reshape((*shape, 1), name="channel")(inputs) if len(shape) == 2 else inputs
    for i, filters in enumerate(CONV_FILTERS.get(name, (32, 64))):
        x = L.Conv2D(filters, 3, padding="same", name=f"conv_{i + 1}")(x)
        x = L.BatchNormalization(name=f"norm_{i + 1}")(x)
        x = L.ReLU(name=f"relu_{i + 1}")(x)
        x = pool(2, name=f"pool_{i + 1}")(x)
    x = L.Flatten(name="flatten")(x)
    x = L.Dense(256, name="dense")(x)
    x = L.BatchNormalization(name="norm_dense")(x)
    x = L.ReLU(name="relu_dense")(x)
    outputs = L.Dense(10, name="logits")(x)
    return tf.keras.Model(inputs, outputs, name=name)


RECIPES = {
    # optimizer, learning rate, batch size; epochs come from the configuration
    "dense_mnist": ("adadelta", 4.0, 128),
    "conv_mnist": ("adam", 1e-3, 128),
    "conv_fashion": ("adam", 1e-3, 128),
    "conv_mnist_avgpool": ("adam", 1e-3, 128),
    "conv_fashion_avgpool": ("adam", 1e-3, 128),
    "vgg_cifar10": ("adam", 1e-3, 128),
    "vgg_cifar10_avgpool": ("adam", 1e-3, 128),
}


def architecture(model: tf.keras.Model) -> str:
    lines = []
    for layer in model.layers[1:]:
        activation = getattr(layer, "activation", None)
        extra = f" ({activation.__name__})" if activation and layer.name != "logits" else ""
        shape = tuple(layer.output_shape[1:])
        lines.append(f"{type(layer).__name__}{extra} -> {shape}")
    lines.append("softmax in the loss (from_logits=True)")
    return "; ".join(lines)


class EpochTimer(tf.keras.callbacks.Callback):
    def __init__(self, name: str, epochs: int):
        super().__init__()
        self.name, self.epochs, self.seconds = name, epochs, []

    def on_epoch_begin(self, epoch, logs=None):
        self.started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self.started)
        figures = ", ".join(f"{k} {v:.4f}" for k, v in (logs or {}).items())
        log(f"{self.name} epoch {epoch + 1}/{self.epochs}: {self.seconds[-1]:.1f} s, {figures}")


def train(name: str, x, y, epochs: int, seed: int) -> tuple[tf.keras.Model, list[float]]:
    tf.keras.utils.set_random_seed(seed)
    model = build_dense() if name == "dense_mnist" else build_conv(name)
    optimizer, learning_rate, batch_size = RECIPES[name]
    model.compile(
        tf.keras.optimizers.get(
            {"class_name": optimizer, "config": {"learning_rate": learning_rate}}
        ),
        tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    timer = EpochTimer(name, epochs)
    model.fit(x, y, epochs=epochs, batch_size=batch_size, callbacks=[timer], verbose=0)
    return model, timer.seconds


def convert(model: tf.keras.Model, scale: float | None, spiking: bool) -> nengo_dl.Converter:
    swap = {tf.nn.relu: nengo.SpikingRectifiedLinear()} if spiking else None
    converter = nengo_dl.Converter(
        model,
        allow_fallback=False,  # every layer must become a native Nengo object
        swap_activations=swap,
        scale_firing_rates=scale,
        synapse=None,
        max_to_avg_pool=True,
        inference_only=True,
    )
    with converter.net:
        # The planner only groups and orders operators (outputs are identical); the
        # default tree planner runs these conv nets 10-20x slower on a CPU than no planning.
        nengo_dl.configure_settings(stateful=False, planner=PLANNER)
    return converter


def padded(x: np.ndarray, multiple: int) -> np.ndarray:
    extra = -len(x) % multiple
    return np.concatenate([x, np.zeros((extra, *x.shape[1:]), x.dtype)]) if extra else x


def constant_input(x: np.ndarray, steps: int) -> np.ndarray:
    flat = x.reshape(len(x), 1, -1)
    return np.ascontiguousarray(np.broadcast_to(flat, (len(x), steps, flat.shape[-1])))


def simulator(converter: nengo_dl.Converter, minibatch: int, seed: int) -> nengo_dl.Simulator:
    return nengo_dl.Simulator(
        converter.net, minibatch_size=minibatch, dt=DT, seed=seed, progress_bar=False
    )


def batches(sim: nengo_dl.Simulator, node, x: np.ndarray, steps: int):
    """``(start, probe data)`` per minibatch of ``x`` (zero-padded to whole minibatches).

    ``predict_on_batch``, not ``predict``: in this TF/nengo-dl pair every ``predict`` call
    keeps memory in proportion to minibatch x steps (22 GB, out of memory, after 20 calls).
    """
    size = sim.minibatch_size
    xs = padded(x, size)
    for start in range(0, len(xs), size):
        data = sim.predict_on_batch({node: constant_input(xs[start : start + size], steps)})
        keep = min(size, len(x) - start)
        yield start, {probe: values[:keep] for probe, values in data.items()}


def rate_predictions(model, x, minibatch: int, seed: int) -> np.ndarray:
    """Classes from the converted network with non-spiking ReLU rates (max pool -> average)."""
    converter = convert(model, None, spiking=False)
    node, probe = converter.inputs[model.input], converter.outputs[model.output]
    with simulator(converter, minibatch, seed) as sim:
        out = [data[probe][:, -1] for _, data in batches(sim, node, x, 1)]
    return np.concatenate(out).argmax(axis=1)


def sweep(model, x, y, scale: float, steps: int, minibatch: int, seed: int) -> dict:
    """One T-step simulation per image; accuracy of the summed output at every t."""
    converter = convert(model, scale, spiking=True)
    node, probe = converter.inputs[model.input], converter.outputs[model.output]
    started = time.perf_counter()
    with simulator(converter, minibatch, seed) as sim:
        sim.predict_on_batch({node: constant_input(padded(x[:minibatch], minibatch), steps)})
        setup = time.perf_counter() - started  # build + graph tracing
        correct = np.zeros(steps, np.int64)
        started = time.perf_counter()
        for start, data in batches(sim, node, x, steps):
            totals = np.cumsum(data[probe], axis=1)  # (images, t, classes)
            labels = y[start : start + len(totals), None]
            correct += (totals.argmax(axis=2) == labels).sum(axis=0)
        seconds = time.perf_counter() - started
    return {
        "accuracy": (correct / len(x)).tolist(),
        "setup_seconds": setup,
        "simulate_seconds": seconds,
        "images_per_s": len(x) / seconds,
        "image_steps_per_s": len(x) * steps / seconds,
    }


def spike_statistics(model, x, scale: float, steps: int, seed: int) -> dict:
    """Spikes of every neuron at every step, on a few images (``len(x)``, one minibatch)."""
    converter = convert(model, scale, spiking=True)
    node = converter.inputs[model.input]
    ensembles = list(converter.net.all_ensembles)
    with converter.net:
        probes = [nengo.Probe(e.neurons) for e in ensembles]
    with simulator(converter, len(x), seed) as sim:
        _, data = next(batches(sim, node, x, steps))
    counts = [
        np.rint(data[p] * DT / e.neuron_type.amplitude).astype(np.int64)
        for p, e in zip(probes, ensembles, strict=True)
    ]
    per_step = np.concatenate([c.reshape(len(x), steps, -1) for c in counts], axis=2)
    cumulative = per_step.sum(axis=2).cumsum(axis=1).mean(axis=0)  # spikes per image by t
    return {
        "images": len(x),
        "neurons": int(per_step.shape[2]),
        "spikes_per_image_by_t": cumulative.tolist(),
        "spikes_per_neuron_per_step": float(per_step.mean()),
        "max_spikes_per_neuron_step": int(per_step.max()),
        "fraction_neuron_steps_with_more_than_one_spike": float((per_step > 1).mean()),
        "fraction_neurons_that_spike": float((per_step.sum(axis=1) > 0).mean()),
    }


def first_within(accuracy: list[float], target: float, points: float) -> int | None:
    for t, value in enumerate(accuracy, start=1):
        if value >= target - points / 100 - 1e-12:
            return t
    return None


def throughput(
    model, x, scale: float, steps: int, minibatch: int, seed: int, min_seconds: float = 3.0
) -> dict:
    """Images/s for ``steps`` steps after a warm-up run (graph tracing), repeated over ``x``
    until at least ``min_seconds`` have passed."""
    converter = convert(model, scale, spiking=True)
    node = converter.inputs[model.input]
    with simulator(converter, minibatch, seed) as sim:
        sim.predict_on_batch({node: constant_input(padded(x[:minibatch], minibatch), steps)})
        images, started = 0, time.perf_counter()
        while images == 0 or time.perf_counter() - started < min_seconds:
            for _, data in batches(sim, node, x, steps):
                images += len(next(iter(data.values())))
        seconds = time.perf_counter() - started
    return {"scale": scale, "steps": steps, "images": images, "images_per_s": images / seconds}


def keras_images_per_s(model, x, min_seconds: float = 3.0) -> float:
    model.predict(x[:500], batch_size=500, verbose=0)
    images, started = 0, time.perf_counter()
    while images == 0 or time.perf_counter() - started < min_seconds:
        model.predict(x, batch_size=500, verbose=0)
        images += len(x)
    return images / (time.perf_counter() - started)


def bench(name: str, data, config: dict) -> dict:
    dataset = DATASETS[name]
    x, y = data[f"{dataset}_x_train"], data[f"{dataset}_y_train"]
    x_test, y_test = data[f"{dataset}_x_test"], data[f"{dataset}_y_test"]
    epochs, seed = config["epochs"][name], config["seed"]
    steps, minibatch = config["timesteps"], config["minibatch"]
    log(f"{name}: training {epochs} epochs on {len(x)} {dataset} images")
    model, epoch_seconds = train(name, x, y, epochs, seed)
    ann_pred = model.predict(x_test, batch_size=500, verbose=0).argmax(axis=1)
    ann_accuracy = float((ann_pred == y_test).mean())
    n_sweep = config["n_test_sweep"][name] or len(x_test)
    xs, ys = x_test[:n_sweep], y_test[:n_sweep]
    target = float((ann_pred[:n_sweep] == ys).mean())
    log(f"{name}: ANN accuracy {ann_accuracy:.4f} ({target:.4f} on the {n_sweep} sweep images)")
    rate_pred = rate_predictions(model, x_test, minibatch, seed)
    rate = float((rate_pred == y_test).mean())
    rate_sweep = float((rate_pred[:n_sweep] == ys).mean())
    log(f"{name}: converted, non-spiking rates: {rate:.4f} ({rate_sweep:.4f} on the sweep images)")
    scales = {}
    for scale in config["scales"]:
        log(f"{name}: scale {scale}: {steps} steps on {n_sweep} images")
        figures = sweep(model, xs, ys, scale, steps, minibatch, seed)
        acc = figures["accuracy"]
        figures["within_1pt"] = first_within(acc, target, 1.0)
        figures["within_0_1pt"] = first_within(acc, target, 0.1)
        stats = spike_statistics(model, xs[: config["spike_images"]], scale, steps, seed)
        figures["spikes"] = stats
        for key in ("within_1pt", "within_0_1pt"):
            t = figures[key]
            figures[f"spikes_per_image_at_{key}"] = (
                stats["spikes_per_image_by_t"][t - 1] if t else None
            )
        scales[str(scale)] = figures
        log(
            f"{name}: scale {scale}: accuracy at t=1 {acc[0]:.4f}, t={steps} {acc[-1]:.4f}; "
            f"within 1 pt at t={figures['within_1pt']}, 0.1 pt at t={figures['within_0_1pt']}; "
            f"{figures['images_per_s']:.1f} images/s for {steps} steps"
        )
    best = best_scales(scales)
    timing_x = xs[: config["timing_images"]]
    if best["within_1pt"] is not None:
        s, t = best["scale_within_1pt"], best["within_1pt"]
        log(f"{name}: timing scale {s} at {t} steps")
        best["images_per_s_at_within_1pt"] = throughput(
            model, timing_x, s, t, minibatch, seed, config["min_timing_seconds"]
        )
    else:
        best["images_per_s_at_within_1pt"] = None
    return {
        "dataset": dataset,
        "architecture": architecture(model),
        "filters": None if name == "dense_mnist" else list(CONV_FILTERS.get(name, (32, 64))),
        "optimizer": dict(zip(("name", "learning_rate", "batch_size"), RECIPES[name], strict=True)),
        "epochs": epochs,
        "train_images": len(x),
        "train_seconds_per_epoch": epoch_seconds,
        "ann_accuracy": ann_accuracy,
        "test_images": len(x_test),
        "n_test_sweep": n_sweep,
        "ann_accuracy_sweep_images": target,
        "converted_rate_accuracy": rate,
        "converted_rate_accuracy_sweep_images": rate_sweep,
        "ann_keras_images_per_s": keras_images_per_s(model, x_test, config["min_timing_seconds"]),
        "timesteps": list(range(1, steps + 1)),
        "scales": scales,
        "best": best,
        "images_per_s_T_steps": {s: f["images_per_s"] for s, f in scales.items()},
    }


def best_scales(scales: dict) -> dict:
    """The scale that gets within 1 (0.1) point in the fewest steps; else the best at T."""
    best: dict = {}
    for key in ("within_1pt", "within_0_1pt"):
        reached = [(f[key], -f["accuracy"][-1], s) for s, f in scales.items() if f[key]]
        t, _, s = min(reached, key=lambda r: (r[0], r[1])) if reached else (None, None, None)
        best[key], best[f"scale_{key}"] = t, (float(s) if s is not None else None)
    final = max(scales.items(), key=lambda item: item[1]["accuracy"][-1])
    best["scale_best_at_T"] = float(final[0])
    best["accuracy_at_T"] = final[1]["accuracy"][-1]
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="JSON configuration")
    parser.add_argument("--out", required=True, help="where to write the JSON result")
    args = parser.parse_args(argv)
    with open(args.config) as f:
        config = json.load(f)
    data = np.load(config["data"])
    tf.config.set_visible_devices([], "GPU")
    result = {
        "peer_env": {
            "python": platform.python_version(),
            "tensorflow": tf.__version__,
            "keras": tf.keras.__version__,
            "nengo": nengo.__version__,
            "nengo_dl": nengo_dl.__version__,
            "numpy": np.__version__,
        },
        "decoding": DECODING,
        "neurons": (
            "nengo.SpikingRectifiedLinear (several spikes per step allowed), initial voltage "
            "Uniform(0, 1) (nengo's default), Simulator seed "
            f"{config['seed']}; gain x s, spike amplitude / s"
        ),
        "simulator": {
            "minibatch": config["minibatch"],
            "planner": PLANNER.__name__,
            "device": "CPU",
            "threads": "TensorFlow default (all cores)",
        },
        "load_average_start": list(os.getloadavg()),
        "models": {},
    }
    for name in config["models"]:
        started = time.perf_counter()
        result["models"][name] = bench(name, data, config)
        result["models"][name]["wall_seconds"] = time.perf_counter() - started
    result["load_average_end"] = list(os.getloadavg())
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
