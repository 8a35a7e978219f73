"""Branching Keras models (residual Add, Concatenate) -> DAG SpikingNetworks, equal to Keras."""

import keras
import numpy as np
import pytest

from whetstone import simulate
from whetstone.convert import ConversionError, to_spiking
from whetstone.layers import SpikingBRelu

L = keras.layers


def act(name=None):
    return SpikingBRelu(sharpness=1.0, name=name)


def randomize(model, seed=0):
    """Random biases and BatchNorm statistics (Keras starts them at 0 and 1)."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, (L.Dense, L.Conv2D)) and layer.use_bias:
            layer.bias.assign(rng.normal(0, 0.5, layer.bias.shape))
        if isinstance(layer, L.BatchNormalization):
            n = layer.gamma.shape[0]
            layer.gamma.assign(rng.uniform(0.3, 2, n) * rng.choice([1, -1], n))
            layer.beta.assign(rng.normal(0, 1, n))
            layer.moving_mean.assign(rng.normal(0, 0.5, n))
            layer.moving_variance.assign(rng.uniform(0.05, 2, n))
    return model


def residual_block(x, filters, skip="identity", name="block"):
    """conv-BN-spike-conv-BN + skip (identity or 1x1 conv-BN) -> Add -> spike."""
    h = L.Conv2D(filters, 3, padding="same", name=f"{name}_conv1")(x)
    h = act(f"{name}_spike1")(L.BatchNormalization(name=f"{name}_bn1")(h))
    h = L.Conv2D(filters, 3, padding="same", name=f"{name}_conv2")(h)
    h = L.BatchNormalization(name=f"{name}_bn2")(h)
    if skip == "conv":
        x = L.BatchNormalization(name=f"{name}_bn_skip")(
            L.Conv2D(filters, 1, name=f"{name}_skip")(x)
        )
    return act(f"{name}_out")(L.Add(name=f"{name}_add")([h, x]))


def small_resnet(skip="identity"):
    inputs = keras.Input((10, 10, 1))
    x = act("stem_spike")(L.Conv2D(4, 3, padding="same", name="stem")(inputs))
    x = residual_block(x, 4 if skip == "identity" else 6, skip, "b1")
    x = L.MaxPooling2D(2, name="pool")(x)
    x = residual_block(x, 6, "conv", "b2")
    x = L.Flatten()(x)
    return keras.Model(inputs, act("head")(L.Dense(12, name="dense")(x)), name=f"res_{skip}")


def assert_equals_keras(model, x):
    """Reference simulator (all three paths) == Keras on every sample without a tie."""
    net = to_spiking(model)
    result = simulate.run(net, x)
    spikes = np.asarray(model.predict(x, verbose=0)).reshape(len(x), -1)
    no_tie = result.sample_ties.sum(axis=1) == 0
    assert no_tie.mean() >= 0.9, f"too many ties: {result.ties}"
    got = result.output_spikes.reshape(len(x), -1)
    np.testing.assert_array_equal(got[no_tie], spikes[no_tie])
    for mode in ("batch", "timestep"):
        other = simulate.run(net, x, mode=mode)
        np.testing.assert_array_equal(other.output_spikes, result.output_spikes)
        np.testing.assert_array_equal(other.synaptic_operations, result.synaptic_operations)
    return net, result


@pytest.mark.parametrize("skip", ["identity", "conv"])
def test_residual_blocks_equal_keras(skip):
    model = randomize(small_resnet(skip), seed=1)
    x = np.random.default_rng(0).uniform(0, 1, (40, 10, 10, 1)).astype("float32")
    net, result = assert_equals_keras(model, x)
    names = [s.name for s in net.stages]
    out = net.stages[names.index("b1_conv2")]
    stem = names.index("stem")
    # the Add is one stage reading the block's first spikes and the skip's (delayed one step)
    assert out.sources == (names.index("b1_conv1"), stem) and out.delays == (0, 1)
    assert net.latency == len(net.stages)  # the longest path: the skips are shorter
    assert 0 < result.output_spikes.mean() < 1


def concatenating_model(shape=(8, 8, 2)):
    """Paths of depth 1 and 3 meet in a Concatenate; a flattened one meets a pooled one."""
    inputs = keras.Input(shape)
    a = act("a")(L.Conv2D(3, 3, padding="same", name="ca")(inputs))
    b = act("b")(L.Conv2D(2, 3, padding="same", name="cb")(a))
    c = act("c")(L.Conv2D(2, 1, name="cc")(b))
    x = L.Concatenate(name="cat")([a, c])  # paths of depth 1 and 3 meet
    x = act("d")(L.BatchNormalization()(L.Conv2D(4, 3, strides=2, name="cd")(x)))
    x = L.Concatenate()([L.Flatten()(x), L.Flatten()(L.MaxPooling2D(2)(b))])
    return randomize(keras.Model(inputs, act("e")(L.Dense(5, name="e_dense")(x))))


def test_concatenate_of_branches_equals_keras():
    model = concatenating_model()
    x = np.random.default_rng(1).uniform(-1, 1, (40, 8, 8, 2)).astype("float32")
    net, _ = assert_equals_keras(model, x)
    cd = net.stages[[s.name for s in net.stages].index("cd")]
    assert cd.input_shape == (8, 8, 5) and cd.delays == (2, 0)


def test_dense_residual_and_shared_source_sums():
    """Dense branches add; two branches reading the same spikes add into one kernel."""
    inputs = keras.Input((6,))
    a = act("a")(L.Dense(5, name="da")(inputs))
    h = act("h")(L.Dense(5, name="dh")(a))
    s = L.Add()([L.Dense(4, name="x1")(h), L.Dense(4, name="x2")(h), L.Dense(4, name="x3")(a)])
    model = randomize(keras.Model(inputs, act("out")(L.BatchNormalization()(s))))
    x = np.random.default_rng(2).normal(size=(60, 6)).astype("float32")
    net, _ = assert_equals_keras(model, x)
    assert net.stages[-1].sources == (1, 0) and net.stages[-1].input_shape == (10,)


@pytest.mark.parametrize(
    ("build", "fragments"),
    [
        (
            # rows 2i..2i+2 and row 3i: the offset between the windows grows with i
            lambda x: L.Add()([L.Conv2D(2, 3, strides=2)(x), L.Conv2D(2, 1, strides=3)(x)]),
            ["windows do not line up"],
        ),
        (
            lambda x: L.Add()(
                [L.Conv2D(2, 3, strides=2, padding="same")(x), L.Conv2D(2, 1)(L.MaxPooling2D()(x))]
            ),
            ["inputs of the same size"],
        ),
        (lambda x: L.Concatenate()([x, L.Conv2D(2, 1)(x)]), ["not spikes"]),
        (lambda x: L.Concatenate(axis=1)([x, x]), ["axis 1"]),
        (
            lambda x: L.MaxPooling2D()(L.Concatenate()([x, act()(L.Conv2D(2, 1)(x))])),
            ["pool each branch"],
        ),
    ],
)
def test_unsupported_merges_are_refused(build, fragments):
    inputs = keras.Input((6, 6, 1))
    x = act()(L.Conv2D(2, 3, padding="same")(inputs))
    model = keras.Model(inputs, act()(build(x)) if "pool" not in fragments[0] else build(x))
    with pytest.raises(ConversionError) as info:
        to_spiking(model)
    for fragment in fragments:
        assert fragment in str(info.value), str(info.value)


def test_skip_from_the_model_input_is_refused():
    inputs = keras.Input((4,))
    h = act()(L.Dense(4)(act()(L.Dense(4)(inputs))))
    model = keras.Model(inputs, act()(L.Add()([L.Dense(4)(h), L.Dense(4)(inputs)])))
    with pytest.raises(ConversionError, match="only the first spiking layer may read the input"):
        to_spiking(model)


@pytest.mark.slow
def test_resnet_on_real_mnist_equals_keras_and_back_ends(data_dir):
    """A briefly trained ResNet (models.resnet_mnist, readout head): the reference equals
    Keras on 1,000 real test images; Nengo and the NIR round trip equal the reference."""
    from whetstone import backends, datasets, models
    from whetstone.callbacks import SimpleSharpener

    (x, y), (x_test, _) = datasets.load("mnist", data_dir)
    keras.utils.set_random_seed(0)
    model = models.resnet_mnist(filters=(4, 8))
    model.compile(keras.optimizers.Adam(3e-3), "sparse_categorical_crossentropy")
    sharpener = SimpleSharpener(start_epoch=1, steps=8, per="batch", verbose=0)
    model.fit(x[:3000], y[:3000], epochs=3, batch_size=64, callbacks=[sharpener], verbose=0)
    assert sharpener.fully_sharp
    net = to_spiking(model)
    assert not net.is_chain
    reference = simulate.run(net, x_test[:1000])
    keras_predictions = model.predict(x_test[:1000], verbose=0).argmax(axis=1)
    ok = ~reference.tie_mask
    np.testing.assert_array_equal(reference.predictions[ok], keras_predictions[ok])
    assert len(set(reference.predictions.tolist())) >= 3  # it learned something
    for name in ("nengo", "nir"):
        result = backends.get(name).run(net, x_test[:100], compare_reference=True)
        assert result.agreement["differing_not_ties"] == 0, (name, result.agreement)


def test_concatenate_on_real_mnist_equals_keras(data_dir):
    """The Concatenate model (random weights, sharp) on 100 real MNIST test images: the
    reference equals Keras, and the decisions vary (equality is not trivial)."""
    from whetstone import datasets

    _, (x, _) = datasets.load("mnist", data_dir)
    model = concatenating_model((28, 28, 1))
    net, result = assert_equals_keras(model, x[:100, ..., None])
    assert not net.is_chain
    assert len(np.unique(result.predictions)) >= 2
    assert 0 < result.output_spikes.mean() < 1
