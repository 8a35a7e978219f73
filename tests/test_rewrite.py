"""The model rewrite: a trained ReLU network becomes a sharpenable one and keeps its function."""

import keras
import numpy as np
import pytest

import whetstone as ws
from whetstone.rewrite import RewriteError, rewrite

L = keras.layers


def sample(shape, n=64, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, *shape)).astype("float32")


def randomise_norms(model: keras.Model, seed=1) -> None:
    """Give every BatchNormalization non-trivial statistics, gamma and beta."""
    rng = np.random.default_rng(seed)
    for layer in ws.convert.layer_chain(model):
        if isinstance(layer, L.BatchNormalization):
            n = layer.moving_mean.shape[0]
            layer.moving_mean.assign(rng.normal(size=n).astype("float32"))
            layer.moving_variance.assign(rng.uniform(0.5, 2.0, n).astype("float32"))
            if layer.scale:
                layer.gamma.assign(rng.uniform(0.5, 2.0, n).astype("float32"))
            if layer.center:
                layer.beta.assign(rng.normal(size=n).astype("float32"))


def assert_same(ann, clone, x, atol=1e-4):
    expected = ann.predict(x, verbose=0)
    got = clone.predict(x, verbose=0)
    np.testing.assert_allclose(got, expected, atol=atol, rtol=1e-4)


def dense_relu(activation=None, head="softmax") -> keras.Model:
    keras.utils.set_random_seed(0)
    return keras.Sequential([
        keras.Input((6,)),
        L.Dense(16, activation="relu", name="d1"),
        L.Dense(12, name="d2"), L.Activation("relu", name="a2"),
        L.Dense(8, name="d3"), L.ReLU(name="r3"),
        L.Dense(4, activation=head, name="head"),
    ])  # fmt: skip


def conv_relu() -> keras.Model:
    """The keras.io MNIST convnet, small, with BatchNorm before and after activations."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((10, 10, 1)),
        L.Conv2D(4, 3, name="c1"), L.BatchNormalization(name="n1"), L.ReLU(name="r1"),
        L.MaxPooling2D(2, name="p1"),
        L.Conv2D(6, 3, padding="same", activation="relu", name="c2"),
        L.BatchNormalization(name="n2", center=False),
        L.AveragePooling2D(2, name="p2"), L.Flatten(name="f"), L.Dropout(0.5, name="drop"),
        L.Dense(5, activation="softmax", name="head"),
    ])  # fmt: skip
    randomise_norms(model)
    return model


# -- identical outputs where nothing clips -------------------------------------------------


@pytest.mark.parametrize("head", ["softmax", "linear"])
def test_dense_clone_is_the_ann_when_nothing_clips(head):
    ann = dense_relu(head=head)
    x = sample((6,))
    result = rewrite(ann, x, percentile=100)
    clone = result.model
    names = [type(layer).__name__ for layer in clone.layers[1:]]
    assert names == ["Dense", "SpikingBRelu"] * 3 + ["Dense"]
    assert [layer.name for layer in ws.sharpness.spiking_layers(clone)] == [
        "d1_spiking",
        "a2",
        "r3",
    ]
    assert set(result.scales) == {"d1_spiking", "a2", "r3"}
    assert all(value == 0 for value in result.clipped.values())
    assert result.agreement == 1.0
    assert_same(ann, clone, x)


def test_conv_clone_with_batchnorm_and_pooling_is_the_ann():
    ann = conv_relu()
    x = sample((10, 10, 1))
    clone = rewrite(ann, x, percentile=100).model
    kinds = [type(layer).__name__ for layer in clone.layers[1:]]
    assert kinds == ["Conv2D", "BatchNormalization", "SpikingBRelu", "MaxPooling2D", "Conv2D",
                     "SpikingBRelu", "BatchNormalization", "AveragePooling2D", "Flatten",
                     "Dropout", "Dense"]  # fmt: skip
    assert_same(ann, clone, x)


def test_clips_only_above_the_percentile_and_is_exact_elsewhere():
    keras.utils.set_random_seed(3)
    ann = keras.Sequential([keras.Input((5,)), L.Dense(10, activation="relu"),
                            L.Dense(3, name="logits")])  # fmt: skip
    x = sample((5,), n=400)
    result = rewrite(ann, x, percentile=95)
    hidden = np.maximum(x @ ann.layers[0].kernel.numpy() + ann.layers[0].bias.numpy(), 0)
    scale = next(iter(result.scales.values()))
    assert scale == pytest.approx(np.percentile(hidden[hidden > 0], 95), rel=1e-6)
    assert next(iter(result.clipped.values())) == pytest.approx((hidden > scale).mean())
    inside = (hidden <= scale).all(axis=1)
    assert 0 < inside.sum() < len(x)
    assert_same(ann, result.model, x[inside])
    clipped = result.model.predict(x[~inside], verbose=0)
    assert not np.allclose(clipped, ann.predict(x[~inside], verbose=0), atol=1e-4)


def test_without_normalisation_the_scale_is_one():
    ann = dense_relu()
    result = rewrite(ann, sample((6,)), percentile=None)
    assert set(result.scales.values()) == {1.0}


def test_accuracy_before_and_after_is_reported():
    ann = dense_relu()
    x = sample((6,))
    labels = ann.predict(x, verbose=0).argmax(axis=1)
    result = rewrite(ann, x, labels, percentile=100)
    assert result.ann_accuracy == 1.0 and result.accuracy == 1.0


# -- each activation ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "hidden, spiking, bounded",
    [
        (lambda: L.Activation("relu"), ws.layers.SpikingBRelu, False),
        (lambda: L.ReLU(), ws.layers.SpikingBRelu, False),
        (lambda: L.ReLU(max_value=1.0), ws.layers.SpikingBRelu, True),
        (lambda: L.ReLU(max_value=2.5), ws.layers.SpikingBRelu, True),
        (lambda: L.Activation("relu6"), ws.layers.SpikingBRelu, True),
        (lambda: L.Activation("hard_sigmoid"), ws.layers.SpikingBRelu, True),
        (lambda: L.Activation("sigmoid"), ws.layers.SpikingSigmoid, True),
    ],
    ids=["relu", "ReLU", "ReLU-max1", "ReLU-max2.5", "relu6", "hard_sigmoid", "sigmoid"],
)
def test_each_supported_activation_maps_exactly(hidden, spiking, bounded):
    keras.utils.set_random_seed(0)
    ann = keras.Sequential([keras.Input((4,)), L.Dense(8, kernel_initializer="he_normal"),
                            hidden(), L.Dense(3)])  # fmt: skip
    x = 3 * sample((4,), n=200)  # wide enough to reach every clip and saturation
    clone = rewrite(ann, x, percentile=100).model
    assert [type(layer) for layer in ws.sharpness.spiking_layers(clone)] == [spiking]
    assert_same(ann, clone, x)
    if bounded:  # already bounded: exact whatever the percentile, nothing to normalise
        assert rewrite(ann, x, percentile=50).scales == {}
        assert_same(ann, rewrite(ann, x, percentile=50).model, x)


def test_bounded_relu_and_hard_sigmoid_keep_their_step_where_the_ann_is_half_way():
    keras.utils.set_random_seed(0)
    ann = keras.Sequential([keras.Input((4,)), L.Dense(8), L.Activation("hard_sigmoid"),
                            L.Dense(3)])  # fmt: skip
    x = sample((4,), n=100)
    clone = rewrite(ann, x).model
    ws.sharpness.set_model_sharpness(clone, 1.0)
    z = x @ ann.layers[0].kernel.numpy() + ann.layers[0].bias.numpy()
    spikes = keras.Model(clone.inputs, clone.layers[2].output).predict(x, verbose=0)
    np.testing.assert_array_equal(spikes, (z >= 0).astype("float32"))


# -- Sequential, Functional, nested ------------------------------------------------------


def test_functional_and_nested_models():
    keras.utils.set_random_seed(0)
    inner = keras.Sequential([keras.Input((8,)), L.Dense(8, activation="relu", name="inner_d"),
                              L.Dropout(0.2)], name="inner")  # fmt: skip
    inputs = keras.Input((5,))
    h = L.Dense(8, name="outer_d")(inputs)
    h = L.BatchNormalization(name="bn")(h)
    h = L.Activation("relu", name="act")(h)
    h = inner(h)
    functional = keras.Model(inputs, L.Dense(3, activation="softmax", name="head")(h))
    randomise_norms(functional)
    x = sample((5,))
    clone = rewrite(functional, x, percentile=100).model
    assert [layer.name for layer in ws.sharpness.spiking_layers(clone)] == [
        "act",
        "inner_d_spiking",
    ]
    assert_same(functional, clone, x)
    nested = keras.Sequential([keras.Input((5,)), functional])
    assert_same(nested, rewrite(nested, x, percentile=100).model, x)


def test_repeated_names_in_nested_models_are_made_unique():
    keras.utils.set_random_seed(0)

    def block():
        return keras.Sequential([keras.Input((4,)), L.Dense(4, activation="relu", name="d")])

    ann = keras.Sequential([keras.Input((4,)), block(), block(), L.Dense(2, name="head")])
    clone = rewrite(ann, sample((4,)), percentile=100).model
    names = [layer.name for layer in clone.layers]
    assert len(names) == len(set(names))
    assert_same(ann, clone, sample((4,)))


# -- heads, sharpening, conversion -------------------------------------------------------


def test_readout_clone_sharpens_converts_and_round_trips(tmp_path):
    ann = conv_relu()
    x = sample((10, 10, 1))
    clone = rewrite(ann, x).model
    path = tmp_path / "clone.keras"
    clone.save(path)
    loaded = keras.models.load_model(path)
    assert_same(clone, loaded, x, atol=1e-6)
    ws.sharpness.set_model_sharpness(loaded, 1.0)
    net = ws.convert.to_spiking(loaded)
    assert type(net.decoder).__name__ == "ReadoutDecoder"
    result = ws.simulate.run(net, x)
    keras_predictions = loaded.predict(x, verbose=0).argmax(axis=1)
    assert ((result.predictions == keras_predictions) | result.tie_mask).all()


def test_key_head_fits_the_ann_predictions():
    keras.utils.set_random_seed(0)
    ann = keras.Sequential([keras.Input((6,)), L.Dense(32, activation="relu"),
                            L.Dense(3, activation="softmax")])  # fmt: skip
    x = sample((6,), n=600)
    result = rewrite(ann, x, head="key", key_width=30, seed=1)
    decode = result.model.layers[-1]
    assert isinstance(decode, ws.layers.SoftmaxDecode) and decode.key.shape == (3, 30)
    np.testing.assert_array_equal(decode.key, ws.encoding.key_generator(3, 30, seed=1))
    assert result.agreement > 0.6  # a linear fit of the key codes: most predictions kept
    ws.sharpness.set_model_sharpness(result.model, 1.0)
    assert type(ws.convert.to_spiking(result.model).decoder).__name__ == "KeyDecoder"


# -- refusals -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "layers, fragments",
    [
        ([L.Dense(4, activation="tanh", name="t")], ["'t' (Dense)", "'tanh'", "relu"]),
        ([L.Dense(4, name="d"), L.LeakyReLU(name="leaky")], ["'leaky' (LeakyReLU)", "Replace"]),
        ([L.Dense(4), L.ReLU(negative_slope=0.1, name="r")], ["'r' (ReLU)", "negative_slope"]),
        ([L.Dense(4), L.LayerNormalization(name="ln")], ["'ln'", "cannot be rewritten"]),
        ([L.Activation("relu", name="first")], ["'first'", "no Dense/Conv"]),
        (
            [L.Dense(4), L.Activation("softmax", name="mid"), L.Dense(4)],
            ["'mid'", "softmax", "head"],
        ),
    ],
    ids=["tanh", "leaky", "negative-slope", "layernorm", "no-linear", "hidden-softmax"],
)
def test_refuses_what_does_not_map_by_name(layers, fragments):
    ann = keras.Sequential([keras.Input((4,)), *layers, L.Dense(2, activation="softmax")])
    with pytest.raises(RewriteError) as error:
        rewrite(ann, sample((4,)))
    for fragment in fragments:
        assert fragment in str(error.value)


def test_refuses_a_model_without_a_dense_head():
    ann = keras.Sequential([keras.Input((4,)), L.Dense(4, activation="relu")])
    with pytest.raises(RewriteError, match="Dense classifier head"):
        rewrite(ann, sample((4,)))


def test_refuses_branches_and_bad_options():
    inputs = keras.Input((4,))
    a, b = L.Dense(4, activation="relu")(inputs), L.Dense(4, activation="relu")(inputs)
    branching = keras.Model(inputs, L.Dense(2)(L.Add(name="add")([a, b])))
    with pytest.raises(RewriteError, match="branches"):
        rewrite(branching, sample((4,)))
    with pytest.raises(RewriteError, match="head"):
        rewrite(dense_relu(), sample((6,)), head="spikes")
    with pytest.raises(RewriteError, match="percentile"):
        rewrite(dense_relu(), sample((6,)), percentile=0)


def test_refuses_two_linear_layers_without_an_activation_between():
    ann = keras.Sequential([keras.Input((4,)), L.Dense(4, name="a"), L.Dense(4, name="b"),
                            L.ReLU(), L.Dense(2)])  # fmt: skip
    with pytest.raises(RewriteError, match="'b' follows 'a' with no activation"):
        rewrite(ann, sample((4,)))
