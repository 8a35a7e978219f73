"""Keras -> SpikingNetwork: random sharpened models agree with Keras; refusals name the layer."""

import keras
import numpy as np
import pytest
from _helpers import assert_agrees, randomize, refused
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import whetstone.models
from whetstone import convert, encoding, sharpness, simulate
from whetstone.convert import to_spiking
from whetstone.layers import SoftmaxDecode, Spiking, SpikingBRelu, SpikingSigmoid
from whetstone.network import SpikingNetwork

L = keras.layers


# ---------------------------------------------------------------- helpers


def sharp(model):
    sharpness.set_model_sharpness(model, 1.0)
    return model


# ---------------------------------------------------------------- property tests

BN = st.sampled_from(["none", "before", "after"])
HEAD = st.sampled_from(["key", "softmax", "linear", "spikes"])


def add_head(x, head, rng_seed, width=8):
    if head == "key":
        x = L.Dense(width)(x)
        x = SpikingBRelu(sharpness=1.0)(x)
        return SoftmaxDecode(encoding.key_generator(4, width, seed=rng_seed))(x)
    if head in ("softmax", "linear"):
        return L.Dense(4, activation=head)(x)
    return x


def add_block(x, layer, bn, activation):
    x = layer(x)
    if bn == "before":
        x = L.BatchNormalization()(x)
    x = activation(sharpness=1.0)(x)
    if bn == "after":
        x = L.BatchNormalization()(x)
    return x


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    widths=st.lists(st.integers(1, 12), min_size=1, max_size=3),
    bns=st.lists(BN, min_size=3, max_size=3),
    sigmoid=st.lists(st.booleans(), min_size=3, max_size=3),
    head=HEAD,
    binary=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_random_dense_models_match_keras(widths, bns, sigmoid, head, binary, seed):
    rng = np.random.default_rng(seed)
    if head == "spikes" and bns[len(widths) - 1] == "after":
        bns[len(widths) - 1] = "before"  # a BatchNorm after the last spikes is refused
    inputs = keras.Input((3, 4))
    x = L.Flatten()(inputs)
    for width, bn, sig in zip(widths, bns, sigmoid, strict=False):
        x = L.Dropout(0.5)(x)
        act = SpikingSigmoid if sig else SpikingBRelu
        x = add_block(x, L.Dense(width), bn, act)
    model = keras.Model(inputs, add_head(x, head, seed))
    randomize(model, rng)
    x = rng.uniform(0, 1, (200, 3, 4)).astype(np.float32)
    if binary:
        x = (x > 0.5).astype(np.float32)
    assert_agrees(model, x, "binary" if binary else "host")


@st.composite
def conv_models(draw):
    rank = draw(st.sampled_from([1, 2]))
    size = draw(st.integers(5, 10))
    channels = draw(st.integers(1, 2))
    blocks = []
    for _ in range(draw(st.integers(1, 2))):
        stride = draw(st.integers(1, 2))
        blocks.append(
            {
                "filters": draw(st.integers(1, 4)),
                "kernel": draw(st.integers(1, 3)),
                "strides": stride,
                "dilation": 1 if stride > 1 else draw(st.integers(1, 2)),
                "padding": draw(st.sampled_from(["valid", "same"])),
                "bn": draw(BN),
                "pool": draw(st.sampled_from(["none", "after", "between"])),
                "pool_padding": draw(st.sampled_from(["valid", "same"])),
            }
        )
    head = draw(HEAD)
    for b in blocks:  # refused (tested separately): a BatchNorm after the last spikes
        if b["bn"] == "after" and head == "spikes" and b is blocks[-1]:
            b["bn"] = "before"
    return rank, size, channels, blocks, head, draw(st.booleans()), draw(st.integers(0, 2**16))


def build_conv(rank, size, channels, blocks, head, seed):
    conv, pool = (L.Conv1D, L.MaxPooling1D) if rank == 1 else (L.Conv2D, L.MaxPooling2D)
    inputs = keras.Input((size,) * rank + (channels,))
    x = inputs
    for b in blocks:
        x = conv(b["filters"], b["kernel"], strides=b["strides"], padding=b["padding"],
                 dilation_rate=b["dilation"])(x)  # fmt: skip
        if b["pool"] == "between":  # conv -> pool -> [BN] -> activation
            x = pool(2, padding=b["pool_padding"])(x)
        if b["bn"] == "before":  # after a max pool, a negative gamma makes it a min pool
            x = L.BatchNormalization()(x)
        x = SpikingBRelu(sharpness=1.0)(x)
        if b["bn"] == "after":
            x = L.BatchNormalization()(x)
        if b["pool"] == "after":
            x = pool(2, padding=b["pool_padding"])(x)
    x = L.Flatten()(x)
    return keras.Model(inputs, add_head(x, head, seed))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(conv_models())
def test_random_conv_models_match_keras(spec):
    rank, size, channels, blocks, head, binary, seed = spec
    try:
        model = build_conv(rank, size, channels, blocks, head, seed)
    except ValueError:  # a shape that shrinks to nothing
        assume(False)
    assume(all(d is None or d > 0 for d in model.outputs[0].shape))
    randomize(model, np.random.default_rng(seed))
    rng = np.random.default_rng(seed + 1)
    x = rng.uniform(0, 1, (100, *model.input_shape[1:])).astype(np.float32)
    if binary:
        x = (x > 0.5).astype(np.float32)
    assert_agrees(model, x, "binary" if binary else "host")


# ---------------------------------------------------------------- specific conversions


def test_batch_norm_uses_its_own_epsilon():
    model = keras.Sequential(
        [keras.Input((3,)), L.Dense(2, name="d"), L.BatchNormalization(epsilon=0.5, name="bn"),
         SpikingBRelu(sharpness=1.0)]
    )  # fmt: skip
    bn = model.get_layer("bn")
    bn.gamma.assign([2.0, -1.0])
    bn.beta.assign([0.25, 0.5])
    bn.moving_mean.assign([0.1, -0.2])
    bn.moving_variance.assign([0.5, 1.5])
    w, b = model.get_layer("d").get_weights()
    stage = to_spiking(model).stages[0]
    scale = np.array([2.0, -1.0]) / np.sqrt(np.array([0.5, 1.5]) + 0.5)  # not 1e-3
    np.testing.assert_allclose(stage.weights, w * scale, rtol=1e-6)
    np.testing.assert_allclose(stage.bias, (b - [0.1, -0.2]) * scale + [0.25, 0.5], rtol=1e-6)


def test_batch_norm_after_activation_into_same_conv_gives_positional_bias():
    model = keras.Sequential(
        [keras.Input((6, 6, 1)), L.Conv2D(2, 3, padding="same"), SpikingBRelu(sharpness=1.0),
         L.BatchNormalization(), L.Conv2D(3, 3, padding="same", name="second"),
         SpikingBRelu(sharpness=1.0)]
    )  # fmt: skip
    randomize(model, np.random.default_rng(0))
    x = np.random.default_rng(1).uniform(0, 1, (300, 6, 6, 1)).astype(np.float32)
    net, result = assert_agrees(model, x)
    assert net.stages[1].bias.shape == (6, 6, 3)  # edges see fewer taps of the BN offset
    assert not np.allclose(net.stages[1].bias[0, 0], net.stages[1].bias[2, 2])
    assert result.spike_counts.min() > 0


def test_average_and_global_pooling_fold_into_dense():
    rng = np.random.default_rng(2)
    for pooling in (L.AveragePooling2D(3, strides=2, padding="same"), L.GlobalAveragePooling2D()):
        model = keras.Sequential(
            [keras.Input((7, 7, 1)), L.Conv2D(4, 3), SpikingBRelu(sharpness=1.0), pooling,
             L.Flatten(), L.Dense(5), SpikingBRelu(sharpness=1.0), L.Dense(3, activation="softmax")]
        )  # fmt: skip
        randomize(model, rng)
        x = rng.uniform(0, 1, (300, 7, 7, 1)).astype(np.float32)
        net, _ = assert_agrees(model, x)
        assert [s.kind for s in net.stages] == ["conv", "dense"]
        assert net.stages[1].input_shape == (5, 5, 4)
        assert type(net.decoder).__name__ == "ReadoutDecoder"
        assert net.decoder.activation == "softmax"


def test_nested_models_are_flattened():
    inner = keras.Sequential([keras.Input((4,)), L.Dense(6, name="in_d"), SpikingBRelu(1.0)])
    inputs = keras.Input((4,))
    outer = keras.Model(inputs, L.Dense(2, name="out_d")(inner(inputs)))
    randomize(outer, np.random.default_rng(3))
    x = np.random.default_rng(4).uniform(0, 1, (300, 4)).astype(np.float32)
    net = to_spiking(outer)
    result = simulate.run(net, x)
    assert result.tie_mask.sum() < 10
    ok = ~result.tie_mask
    np.testing.assert_array_equal(result.output_spikes[ok], inner.predict(x, verbose=0)[ok])
    expected = outer.predict(x, verbose=0).argmax(axis=1)
    np.testing.assert_array_equal(result.predictions[ok], expected[ok])
    assert [s.name for s in net.stages] == ["in_d"]
    assert net.decoder.activation == "linear"


def test_reference_models_convert_with_metadata(tmp_path):
    net = to_spiking(sharp(whetstone.models.conv_mnist(filters=(4, 8), key_width=20)))
    assert [s.kind for s in net.stages] == ["conv", "pool", "conv", "pool", "dense"]
    assert net.input_shape == (28, 28) and net.stages[0].input_shape == (28, 28, 1)
    assert net.decoder.key.shape == (10, 20)
    meta = net.metadata
    assert meta["source_model"] == "conv_mnist"
    assert meta["keras_version"] == keras.__version__ and meta["whetstone_version"]
    assert meta["created"].endswith("+00:00")
    net.save(tmp_path / "conv.h5")
    assert SpikingNetwork.load(tmp_path / "conv.h5") == net
    dense = to_spiking(sharp(whetstone.models.dense_mnist()), input_encoding="binary")
    assert [s.weights.shape for s in dense.stages] == [(784, 256), (256, 64), (64, 100)]
    assert dense.input_encoding == "binary"


def test_registry_is_looked_up_along_the_class_hierarchy():
    class MyDropout(L.Dropout):
        pass

    assert convert.find_converter(MyDropout(0.1)) is convert.CONVERTERS[L.Dropout]
    assert convert.find_converter(SpikingSigmoid()) is convert.CONVERTERS[Spiking]
    for name in ("Dense", "Conv1D", "Conv2D", "MaxPooling2D", "BatchNormalization", "Spiking"):
        assert name in convert.supported_layers()


# ---------------------------------------------------------------- refusals name the layer


def dense_model(*middle, sharpness_value=1.0):
    return keras.Sequential(
        [
            keras.Input((4,)),
            *middle,
            L.Dense(3, name="top"),
            SpikingBRelu(sharpness_value, name="s"),
        ]
    )


def test_refuses_unsharpened_model_listing_layers():
    model = keras.Sequential(
        [keras.Input((4,)), L.Dense(3), SpikingBRelu(1.0, name="a"), L.Dense(3),
         SpikingBRelu(0.4, name="b"), L.Dense(3), SpikingSigmoid(0.0, name="c")]
    )  # fmt: skip
    message = refused(model, "not fully sharpened", "'b' at 0.4", "'c' at 0", "SimpleSharpener")
    assert "'a'" not in message


def test_refuses_model_without_spiking_layers():
    refused(keras.Sequential([keras.Input((4,)), L.Dense(2, name="plain")]), "no spiking layers")


def test_refuses_unknown_layer_types():
    model = dense_model(L.LayerNormalization(name="ln"), L.UnitNormalization(name="un"))
    refused(model, "'ln' (LayerNormalization)", "'un' (UnitNormalization)", "Conv2D", "Dense")


def test_refuses_builtin_activation():
    model = dense_model(L.Dense(5, activation="relu", name="hidden"), SpikingBRelu(1.0))
    refused(model, "'hidden' (Dense)", "'relu'", "SpikingBRelu")
    model = dense_model(L.Dense(5, name="d"), L.Activation("tanh", name="act"))
    refused(model, "'act' (Activation)", "'tanh'")


def test_refuses_multiple_inputs_and_branches():
    a, b = keras.Input((4,)), keras.Input((4,))
    model = keras.Model([a, b], SpikingBRelu(1.0)(L.Dense(2)(L.Add(name="add")([a, b]))))
    refused(model, "2 inputs")
    x = keras.Input((4,))
    h = SpikingBRelu(1.0)(L.Dense(4)(x))
    merged = L.Add(name="merge")([h, SpikingBRelu(1.0)(L.Dense(4, name="side")(x))])
    # two spiking layers reading the input: only the first spiking layer may (branches merge
    # in a DAG now, see test_convert_dag.py)
    message = "only the first spiking layer may read the input"
    refused(keras.Model(x, merged), "(SpikingBRelu)", message)
    x = keras.Input((4,))
    h = L.Dense(4, name="trunk")(x)
    out = SpikingBRelu(1.0)(h)
    two = keras.Model(x, [out, L.Dense(2, name="aux")(h)])
    refused(two, "2 outputs")


def test_refuses_nan_weights():
    model = dense_model(L.Dense(5, name="bad"), SpikingBRelu(1.0))
    kernel = model.get_layer("bad").kernel
    kernel.assign(np.where(np.eye(4, 5) > 0, np.nan, kernel.numpy()))
    refused(model, "'bad' (Dense)", "NaN or Inf")


def image(*layers, shape=(6, 6, 1)):
    return [keras.Input(shape), *layers]


def act(name=None):
    return SpikingBRelu(1.0, name=name)


NEGATIVE = keras.initializers.Constant(-1.0)
REFUSED = {
    "max pool on the input": (
        lambda: image(L.MaxPooling2D(2, name="pool_in"), L.Flatten(), L.Dense(2), act()),
        ["'pool_in' (MaxPooling2D)", "real-valued input"],
    ),
    "'same' average pool before a conv": (
        lambda: image(
            L.Conv2D(2, 3), act(), L.AveragePooling2D(3, 2, padding="same", name="avg"),
            L.Conv2D(2, 2, name="next"), act(),
        ),
        ["'next' (Conv2D)", "average pooling 'avg' before this convolution", "'same' padding"],
    ),
    "global average pool before a conv": (
        lambda: image(
            L.Conv2D(2, 3), act(), L.GlobalAveragePooling2D(name="gap"), L.Reshape((1, 1, 2)),
            L.Conv2D(2, 1, name="next"), act(),
        ),
        ["'next' (Conv2D)", "global average pooling 'gap' before this convolution"],
    ),
    "zero padding before the activation": (
        lambda: image(L.Conv2D(2, 3, name="c"), L.ZeroPadding2D(1, name="zp"), act()),
        ["'zp' (ZeroPadding2D)", "zero padding between 'c' (Conv2D) and its spiking"],
    ),
    "max pool of average-pooled spikes": (
        lambda: image(
            L.Conv2D(2, 3), act(), L.AveragePooling2D(1, name="avg"),
            L.MaxPooling2D(2, name="late_pool"), L.Flatten(), L.Dense(2), act(),
        ),
        ["'late_pool' (MaxPooling2D)", "average pooling 'avg'", "no longer binary spikes"],
    ),
    "spiking layer without a linear layer": (
        lambda: image(act("lonely"), shape=(4,)),
        ["'lonely' (SpikingBRelu)", "no Dense or Conv layer"],
    ),
    "two linear layers in a row": (
        lambda: image(L.Dense(3, name="first"), L.Dense(3, name="second"), act(), shape=(4,)),
        ["'second' (Dense)", "follows 'first' (Dense) with no spiking activation"],
    ),
    "dense on an image": (
        lambda: image(L.Dense(3, name="per_pixel"), act()),
        ["'per_pixel' (Dense)", "add a Flatten"],
    ),
    "conv without activation at the end": (
        lambda: image(L.Conv2D(2, 3), act(), L.Conv2D(2, 3, name="open_conv")),
        ["'open_conv' (Conv2D)", "without a spiking activation"],
    ),
    "layers after a softmax": (
        lambda: image(
            L.Dense(3), act(), L.Dense(2, activation="softmax"), act("after"), shape=(4,)
        ),
        ["'after' (SpikingBRelu)", "'softmax' activation is only allowed on the model's last"],
    ),
    "BatchNorm after the last spikes": (
        lambda: image(L.Dense(3), act(), L.BatchNormalization(name="end_bn"), shape=(4,)),
        ["end_bn", "after its last spiking layer"],
    ),
    "channels first": (
        lambda: image(
            L.Conv2D(2, 3, data_format="channels_first", name="cf"), act(), shape=(1, 6, 6)
        ),
        ["'cf' (Conv2D)", "channels_last"],
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_refuses_structures_it_cannot_represent(case):
    layers, fragments = REFUSED[case]
    refused(keras.Sequential(layers()), *fragments)


def test_refuses_bad_input_encoding():
    refused(dense_model(), "input_encoding must be 'host' or 'binary'", input_encoding="rate")
