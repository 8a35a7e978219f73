"""Reading what the commands work on: a model or saved network, and data for it."""

from __future__ import annotations

import zipfile
from pathlib import Path

from whetstone.cli.output import Output


def load_model_or_network(path: str):
    """``(keras_model or None, SpikingNetwork or conversion error)`` from a file.

    A ``.keras`` file is loaded with Keras and converted; anything else must be a
    saved ``SpikingNetwork``.
    """
    from whetstone import network

    if Path(path).suffix == ".keras":
        if not zipfile.is_zipfile(path):
            raise ValueError(
                f"{path} is not a loadable Keras model: it is damaged or of another format "
                "(a .keras file is a zip archive written by model.save())."
            )
        import keras

        from whetstone import convert

        try:
            model = keras.models.load_model(path, compile=True)
        except Exception as error:
            raise ValueError(f"{path} is not a loadable Keras model: {error}") from error
        try:
            return model, convert.to_spiking(model)
        except convert.ConversionError as error:
            return model, error
    try:
        return None, network.load(path)
    except network.NetworkFileError as error:
        raise ValueError(
            f"{error} (whetstone reads .keras models and saved SpikingNetwork files)"
        ) from error


def require_network(model, net, path: str):
    """The network, or the conversion error with a hint to sharpen."""
    if isinstance(net, Exception):
        hint = ""
        if model is not None and "not fully sharpened" in str(net):
            hint = f" Run: whetstone sharpen {path} --data DATASET -o SHARP.keras"
        raise ValueError(f"{net}{hint}".replace("\n", " "))
    return net


def fit_shape(x, shape: tuple, where: str):
    """Images reshaped to the model's input ``shape`` (same size), or a clear error."""
    import numpy as np

    shape = tuple(shape)
    if tuple(x.shape[1:]) == shape:
        return x
    if int(np.prod(x.shape[1:])) == int(np.prod(shape)):
        return x.reshape((len(x), *shape))
    raise ValueError(
        f"{where}: the data has images of shape {tuple(x.shape[1:])}, the model expects "
        f"{shape}. Choose a dataset that matches the model."
    )


def image_options(shape: tuple) -> dict:
    """How to read an image folder for a model of input ``shape``: size and color mode."""
    shape = tuple(shape)
    if len(shape) == 2:
        return {"image_size": shape, "color_mode": "grayscale"}
    if len(shape) == 3 and shape[-1] in (1, 3, 4):
        modes = {1: "grayscale", 3: "rgb", 4: "rgba"}
        return {"image_size": shape[:2], "color_mode": modes[shape[-1]]}
    return {}


def load_data(out: Output, source: str, split: str, data_dir, shape: tuple, classes: int):
    """``(x, y)`` of one split of ``source``, shaped for the model and checked against it."""
    from whetstone import datasets

    x, y = datasets.load_split(source, split, data_dir, **image_options(shape))
    x = fit_shape(x, shape, source)
    datasets.check_labels(y, classes, source)
    if source not in datasets.DATASETS and (x.min() < 0 or x.max() > 1):
        out.say(
            f"note: {source}: the images range from {x.min():.4g} to {x.max():.4g}; they are "
            "used as given (the built-in data lie in [0, 1]: divide by 255 if the model was "
            "trained on scaled images)."
        )
    return x, y


def sample(x, y, limit: int | None, seed: int | None):
    """The first ``limit`` images, or ``limit`` drawn at random with ``seed``."""
    import numpy as np

    if seed is None:
        return x[:limit], y[:limit]
    index = np.random.default_rng(seed).permutation(len(x))[:limit]
    return x[index], y[index]


def network_classes(net) -> int:
    """How many classes a SpikingNetwork tells apart (its decoder's outputs)."""
    from whetstone.network import KeyDecoder, ReadoutDecoder

    if isinstance(net.decoder, KeyDecoder):
        return net.decoder.key.shape[0]
    if isinstance(net.decoder, ReadoutDecoder):
        return net.decoder.weights.shape[1]
    return net.stages[-1].num_neurons


def first_test_images(out: Output, dataset: str, data_dir, limit: int | None, net):
    """The first ``limit`` test images of a dataset, shaped and checked for ``net``."""
    classes = network_classes(net)
    x, y = load_data(out, dataset, "test", data_dir, net.input_shape, classes)
    return x[:limit], y[:limit]
