"""Hardware mapping of convnets users bring: trained briefly, fully sharp, no hand-given shapes.

For each architecture: train on MNIST for one epoch, sharpening every batch, then hone one
epoch; convert; run 200 test images on the Loihi emulator (integer and float) and on
PyNN/NEST; map onto a virtual SpiNNaker board; record cores, chips and agreement with
the reference simulator.

    python -m benchmarks.mapping --data ../shared/data       # results/mapping.json

Example:
    >>> [layer.name for layer in vgg_mnist().layers][1:3]
    ['conv_1', 'spiking_1']
"""

from __future__ import annotations

import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import click
import keras
import numpy as np

import whetstone as ws
from benchmarks.agreement import agreement
from benchmarks.common import write_result

L = keras.layers


def _conv_net(name: str, blocks: list[list[int]], hidden: int, padding: str) -> keras.Model:
    inputs = keras.Input((28, 28, 1), name="image")
    x, n = inputs, 0
    for b, block in enumerate(blocks, 1):
        for filters in block:
            n += 1
            x = L.Conv2D(filters, 3, padding=padding, name=f"conv_{n}")(x)
            x = ws.layers.SpikingBRelu(name=f"spiking_{n}")(x)
        x = L.MaxPooling2D(2, name=f"pool_{b}")(x)
    x = L.Flatten()(x)
    x = L.Dense(hidden, name="dense")(x)
    x = ws.layers.SpikingBRelu(name="spiking_dense")(x)
    key = ws.encoding.key_generator(10, hidden, seed=0)
    return keras.Model(inputs, ws.layers.SoftmaxDecode(key, name="decode")(x), name=name)


def keras_io_convnet() -> keras.Model:
    """The keras.io MNIST convnet (Conv 32, pool, Conv 64, pool) with a 100-wide key."""
    return _conv_net("keras_io_convnet", [[32], [64]], 100, "valid")


def vgg_mnist() -> keras.Model:
    """VGG-style: 32-32-pool-64-64-pool-Dense(256) with a 256-wide key."""
    return _conv_net("vgg_mnist", [[32, 32], [64, 64]], 256, "same")


ARCHITECTURES = {"keras_io_convnet": keras_io_convnet, "vgg_mnist": vgg_mnist}


def train_briefly(model: keras.Model, x, y) -> keras.Model:
    """One epoch sharpening every batch (bottom-up), one epoch of honing."""
    layers = len(ws.sharpness.spiking_layers(model))
    batches = int(np.ceil(len(x) / 128))
    steps = max(1, batches // layers)
    model.compile(keras.optimizers.Adam(1e-3), "categorical_crossentropy")
    sharpener = ws.callbacks.SimpleSharpener(0, steps, per="batch", stop_when_sharp=True,
                                             hone_epochs=1, verbose=0)  # fmt: skip
    model.fit(x, keras.utils.to_categorical(y, 10), epochs=4, batch_size=128,
              callbacks=[sharpener], verbose=2)  # fmt: skip
    return model


def measure(name: str, data_dir, n_train: int, n_test: int) -> dict:
    (x, y), (x_test, y_test) = ws.datasets.load("mnist", data_dir)
    keras.utils.set_random_seed(0)
    model = train_briefly(ARCHITECTURES[name](), x[:n_train], y[:n_train])
    net = ws.convert.to_spiking(model)
    xs, ys = x_test[:n_test], y_test[:n_test]
    ref = ws.simulate.run(net, xs)
    figures = {
        "architecture": name,
        "fully_sharpened": ws.sharpness.is_fully_sharpened(model),
        "train_images": n_train,
        "test_images": n_test,
        "neurons": net.num_neurons,
        "synapses": net.num_synapses,
        "timesteps": net.latency,
        "reference_accuracy": float((ref.predictions == ys).mean()),
    }
    loihi = ws.backends.get("loihi")
    resources = loihi.resources(net)
    figures["loihi"] = {"cores": resources["cores"], "chips": resources["chips"]}
    for target in ("simreal", "sim"):
        result = loihi.run(net, xs, target=target)
        figures["loihi"][target] = agreement(result.predictions, ref.predictions, ref.tie_mask)
        click.echo(f"{name} loihi {target}: {figures['loihi'][target]}", err=True)
    spinnaker = ws.backends.get("spinnaker")
    result = spinnaker.run(net, xs, simulator="nest")
    figures["nest"] = agreement(result.predictions, ref.predictions, ref.tie_mask)
    started = time.perf_counter()
    board = spinnaker.map(net, xs[:1])
    keys = ("cores", "chips", "boards")
    figures["spinnaker"] = {k: board.get(k) for k in keys}
    figures["spinnaker"]["mapping_seconds"] = round(time.perf_counter() - started, 1)
    click.echo(f"{name}: {figures}", err=True)
    return figures


@click.command()
@click.option("--data", "data_dir", envvar="WHETSTONE_DATA", default="../shared/data")
@click.option("--arch", "names", multiple=True, default=tuple(ARCHITECTURES))
@click.option("--train-images", default=12_000, show_default=True)
@click.option("--test-images", default=200, show_default=True)
def main(data_dir: str, names: tuple[str, ...], train_images: int, test_images: int) -> None:
    """Train, map and run each architecture; write results/mapping.json."""
    runs = [measure(name, data_dir, train_images, test_images) for name in names]
    click.echo(f"wrote {write_result('mapping', {'runs': runs})}")


if __name__ == "__main__":
    main()
