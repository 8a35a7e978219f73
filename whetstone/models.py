"""Reference model builders (uncompiled Keras models) for tests, benchmarks and demos.

Example:
    >>> import whetstone as ws
    >>> model = ws.models.dense_mnist(key_width=50)
    >>> model.output_shape
    (None, 10)
"""

from __future__ import annotations

import keras

from whetstone.encoding import key_generator
from whetstone.layers import SoftmaxDecode, SpikingBRelu

__all__ = ["conv_mnist", "dense_mnist", "resnet_mnist", "vgg_cifar10"]

L = keras.layers


def _inputs(input_shape: tuple[int, ...], channels: bool) -> tuple[keras.KerasTensor, object]:
    inputs = keras.Input(input_shape, name="image")
    if channels and len(input_shape) == 2:
        return inputs, L.Reshape((*input_shape, 1), name="channel")(inputs)
    return inputs, inputs


HEADS = ("key", "readout")


def _check_head(head: str) -> None:
    """``"key"``: an N-hot key population voting through ``SoftmaxDecode``; ``"readout"``: a
    non-spiking softmax readout of the last spiking layer, decoded on the host."""
    if head not in HEADS:
        raise ValueError(f"head must be one of {HEADS}, got {head!r}.")


def dense_mnist(
    key_width: int = 100,
    seed: int = 0,
    input_shape: tuple[int, ...] = (28, 28),
    num_classes: int = 10,
    head: str = "key",
    hidden: tuple[int, ...] = (256, 64),
    dropout: float = 0.0,
) -> keras.Model:
    """The original Whetstone MNIST network: Dense 256-64-key_width, N-hot decoded.

    Flatten, per ``hidden`` width [Dropout] + Dense + SpikingBRelu, then the head:
    Dense(key_width) + SpikingBRelu + SoftmaxDecode(key_generator(num_classes,
    key_width, seed=seed)) for ``head="key"``, or a Dense(num_classes, softmax)
    readout for ``head="readout"``. Compile it yourself (categorical cross-entropy on
    one-hot labels).

    Example:
        >>> model = dense_mnist(key_width=100)
        >>> [layer.name for layer in model.layers[2:4]]
        ['dense_1', 'spiking_1']
        >>> dense_mnist(head="readout").layers[-1].name
        'readout'
    """
    _check_head(head)
    inputs, x = _inputs(input_shape, channels=False)
    x = L.Flatten(name="flatten")(x)
    for i, units in enumerate(hidden):
        x = L.Dropout(dropout, name=f"dropout_{i + 1}")(x) if dropout and i else x
        x = L.Dense(units, name=f"dense_{i + 1}")(x)
        x = SpikingBRelu(name=f"spiking_{i + 1}")(x)
    if head == "key":  # the original's names: the key layer continues the numbering
        n = len(hidden) + 1
        x = L.Dropout(dropout, name=f"dropout_{n}")(x) if dropout else x
        x = L.Dense(key_width, name=f"dense_{n}")(x)
        x = SpikingBRelu(name=f"spiking_{n}")(x)
        outputs = SoftmaxDecode(key_generator(num_classes, key_width, seed=seed), name="decode")(x)
    else:
        x = L.Dropout(dropout, name="dropout_out")(x) if dropout else x
        outputs = L.Dense(num_classes, activation="softmax", name="readout")(x)
    return keras.Model(inputs, outputs, name="dense_mnist")


def conv_mnist(
    key_width: int = 100,
    seed: int = 0,
    input_shape: tuple[int, ...] = (28, 28),
    filters: tuple[int, ...] = (16, 32),
    hidden: tuple[int, ...] = (),
    num_classes: int = 10,
    convs_per_block: int = 1,
    dropout: float = 0.3,
    name: str = "conv_mnist",
    head: str = "key",
) -> keras.Model:
    """A small convolutional network. Per block, ``convs_per_block`` times Conv2D(3x3,
    same) + BatchNorm + SpikingBRelu, then MaxPooling2D(2); then Flatten, per ``hidden``
    width Dropout + Dense + BatchNorm + SpikingBRelu, then the head: Dropout +
    Dense(key_width) + BatchNorm + SpikingBRelu + SoftmaxDecode (``head="key"``), or
    Dropout + a Dense(num_classes, softmax) readout (``head="readout"``). Takes (28, 28)
    or (28, 28, 1) images (e.g. Fashion-MNIST too).

    Dropout (training only; the spiking network has none) reduces the overfitting of
    the sharpened network. The BatchNorm before dense spiking layers keeps
    their wide fan-in from saturating them (without it training stalls near 70-90%).

    Example:
        >>> model = conv_mnist(filters=(8,), input_shape=(28, 28, 1))
        >>> model.get_layer("pool_1").output.shape
        (None, 14, 14, 8)
    """
    inputs, x = _inputs(input_shape, channels=True)
    for i, n in enumerate(filters):
        for j in range(convs_per_block):
            suffix = f"{i + 1}" + (f"_{j + 1}" if convs_per_block > 1 else "")
            x = L.Conv2D(n, 3, padding="same", name=f"conv_{suffix}")(x)
            x = L.BatchNormalization(name=f"norm_{suffix}")(x)
            x = SpikingBRelu(name=f"spiking_{suffix}")(x)
        x = L.MaxPooling2D(2, name=f"pool_{i + 1}")(x)
    x = L.Flatten(name="flatten")(x)
    for i, units in enumerate(hidden):
        x = L.Dropout(dropout, name=f"dropout_{i + 1}")(x) if dropout else x
        x = L.Dense(units, name=f"dense_{i + 1}")(x)
        x = L.BatchNormalization(name=f"norm_dense_{i + 1}")(x)
        x = SpikingBRelu(name=f"spiking_dense_{i + 1}")(x)
    _check_head(head)
    x = L.Dropout(dropout, name="dropout_out")(x) if dropout else x
    if head == "readout":
        outputs = L.Dense(num_classes, activation="softmax", name="readout")(x)
    else:
        x = L.Dense(key_width, name="dense_out")(x)
        x = L.BatchNormalization(name="norm_out")(x)
        x = SpikingBRelu(name="spiking_out")(x)
        outputs = SoftmaxDecode(key_generator(num_classes, key_width, seed=seed), name="decode")(x)
    return keras.Model(inputs, outputs, name=name)


def vgg_cifar10(
    key_width: int = 100, seed: int = 0, head: str = "key", convs_per_block: int = 1
) -> keras.Model:
    """A VGG-style network for CIFAR-10: three blocks of ``convs_per_block`` 3x3
    convolutions (32, 64, 128 filters) with BatchNorm, SpikingBRelu and max-pooling,
    Dense(256), then the head (an N-hot key, or a softmax readout).

    Example:
        >>> vgg_cifar10().get_layer("pool_3").output.shape
        (None, 4, 4, 128)
    """
    return conv_mnist(
        key_width,
        seed,
        input_shape=(32, 32, 3),
        filters=(32, 64, 128),
        hidden=(256,),
        convs_per_block=convs_per_block,
        name="vgg_cifar10",
        head=head,
    )


def _residual_block(x, filters: int, name: str):
    """conv-BN-spike-conv-BN + skip -> Add -> spike; the skip is the block's input, or a
    1x1 conv-BN of it where the number of channels changes."""
    h = L.Conv2D(filters, 3, padding="same", name=f"{name}_conv_1")(x)
    h = SpikingBRelu(name=f"{name}_spiking_1")(L.BatchNormalization(name=f"{name}_norm_1")(h))
    h = L.Conv2D(filters, 3, padding="same", name=f"{name}_conv_2")(h)
    h = L.BatchNormalization(name=f"{name}_norm_2")(h)
    if x.shape[-1] != filters:
        x = L.Conv2D(filters, 1, name=f"{name}_skip")(x)
        x = L.BatchNormalization(name=f"{name}_norm_skip")(x)
    return SpikingBRelu(name=f"{name}_spiking_out")(L.Add(name=f"{name}_add")([h, x]))


def resnet_mnist(
    key_width: int = 100,
    seed: int = 0,
    input_shape: tuple[int, ...] = (28, 28),
    filters: tuple[int, ...] = (8, 16),
    num_classes: int = 10,
    dropout: float = 0.2,
    head: str = "readout",
) -> keras.Model:
    """A small ResNet: a 3x3 conv stem (BatchNorm, SpikingBRelu, MaxPooling2D(2)), then
    per ``filters`` width one residual block (``conv-BN-spike-conv-BN + skip -> Add ->
    spike``; the skip is a 1x1 conv-BN where the width changes) and a MaxPooling2D(2);
    Flatten, Dropout and the head (a softmax readout, or an N-hot key). It converts to a
    DAG SpikingNetwork: each skip edge is delayed one step to meet its block's second
    convolution.

    Example:
        >>> model = resnet_mnist()
        >>> model.get_layer("block_2_add").output.shape
        (None, 7, 7, 16)
    """
    _check_head(head)
    inputs, x = _inputs(input_shape, channels=True)
    x = L.Conv2D(filters[0], 3, padding="same", name="stem")(x)
    x = SpikingBRelu(name="stem_spiking")(L.BatchNormalization(name="stem_norm")(x))
    x = L.MaxPooling2D(2, name="stem_pool")(x)
    for i, n in enumerate(filters):
        x = _residual_block(x, n, f"block_{i + 1}")
        x = L.MaxPooling2D(2, name=f"pool_{i + 1}")(x)
    x = L.Flatten(name="flatten")(x)
    x = L.Dropout(dropout, name="dropout_out")(x) if dropout else x
    if head == "readout":
        outputs = L.Dense(num_classes, activation="softmax", name="readout")(x)
    else:
        x = L.Dense(key_width, name="dense_out")(x)
        x = SpikingBRelu(name="spiking_out")(L.BatchNormalization(name="norm_out")(x))
        outputs = SoftmaxDecode(key_generator(num_classes, key_width, seed=seed), name="decode")(x)
    return keras.Model(inputs, outputs, name="resnet_mnist")
