"""Sharpenable activations and SoftmaxDecode: formulas, sharpness variable, saving.

Runs on whatever Keras back end is active (``KERAS_BACKEND``); CI runs it on
TensorFlow, JAX and PyTorch.
"""

import math

import keras
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from keras import ops

import whetstone as ws
from whetstone.layers import SoftmaxDecode, SpikingBRelu, SpikingSigmoid

SHARPNESSES = [0.0, 0.25, 0.5, 0.9, 0.99]
HALF = np.float32(0.5)
# A grid over and beyond [0, 1], with the threshold and its float32 neighbours.
GRID = np.concatenate(
    [
        np.linspace(-1.0, 2.0, 301, dtype=np.float32),
        [np.nextafter(HALF, np.float32(0)), HALF, np.nextafter(HALF, np.float32(1))],
        [0.5 - 1e-4, 0.5 + 1e-4, 0.5 - 1e-2, 0.5 + 1e-2, 0.0, 1.0],
    ]
).astype(np.float32)


def numpy_of(tensor) -> np.ndarray:
    return ops.convert_to_numpy(tensor)


def brelu_formula(x, sharpness):
    x = np.asarray(x, np.float64)
    return np.clip((x - 0.5) / ((1.0 - sharpness) + 1e-3) + 0.5, 0.0, 1.0)


def sigmoid_formula(x, sharpness):
    x = np.asarray(x, np.float64)
    return 1.0 / (1.0 + np.exp(-x / ((1.0 - sharpness) + 1e-3)))


# --- SpikingBRelu -------------------------------------------------------------------


@pytest.mark.parametrize("sharpness", SHARPNESSES)
def test_brelu_equals_formula(sharpness):
    y = numpy_of(SpikingBRelu(sharpness=sharpness)(GRID[None]))[0]
    np.testing.assert_allclose(y, brelu_formula(GRID, sharpness), rtol=1e-5, atol=2e-6)


def test_brelu_fully_sharp_is_exact_step_at_half():
    y = numpy_of(SpikingBRelu(sharpness=1.0)(GRID[None]))[0]
    np.testing.assert_array_equal(y, (GRID >= 0.5).astype(np.float32))
    below, at, above = np.nextafter(HALF, np.float32(0)), HALF, np.nextafter(HALF, np.float32(1))
    assert numpy_of(SpikingBRelu(sharpness=1.0)(np.array([[below, at, above]]))).tolist() == [
        [0.0, 1.0, 1.0]
    ]


def test_brelu_at_sharpness_zero_is_bounded_relu():
    y = numpy_of(SpikingBRelu(sharpness=0.0)(GRID[None]))[0]
    np.testing.assert_allclose(y, np.clip(GRID, 0.0, 1.0), atol=1e-3)


@settings(max_examples=60, deadline=None)
@given(hnp.arrays(np.float32, (3, 7), elements=st.floats(width=32, allow_nan=False)))
def test_brelu_fully_sharp_outputs_only_zero_and_one(x):
    y = numpy_of(SpikingBRelu(sharpness=1.0)(x))
    assert set(np.unique(y).tolist()) <= {0.0, 1.0}
    np.testing.assert_array_equal(y, (x >= 0.5).astype(np.float32))


@settings(max_examples=40, deadline=None)
@given(
    st.floats(0.0, 1.0),
    hnp.arrays(np.float32, 16, elements=st.floats(-4, 4, width=32)),
)
def test_brelu_is_bounded_and_monotone_at_any_sharpness(sharpness, x):
    x = np.sort(x)
    y = numpy_of(SpikingBRelu(sharpness=sharpness)(x[None]))[0]
    assert y.min() >= 0.0 and y.max() <= 1.0
    assert np.all(np.diff(y) >= 0)


# --- SpikingSigmoid -----------------------------------------------------------------


@pytest.mark.parametrize("sharpness", SHARPNESSES)
def test_sigmoid_equals_formula(sharpness):
    y = numpy_of(SpikingSigmoid(sharpness=sharpness)(GRID[None]))[0]
    np.testing.assert_allclose(y, sigmoid_formula(GRID, sharpness), rtol=1e-5, atol=2e-6)


def test_sigmoid_fully_sharp_is_step_at_zero():
    tiny = np.float32(1e-30)
    x = np.array([[-1.0, -tiny, 0.0, tiny, 3.0]], np.float32)
    assert numpy_of(SpikingSigmoid(sharpness=1.0)(x)).tolist() == [[0.0, 0.0, 1.0, 1.0, 1.0]]


# --- the sharpness variable -----------------------------------------------------------


@pytest.mark.parametrize("layer_type", [SpikingBRelu, SpikingSigmoid])
def test_sharpness_is_a_non_trainable_scalar_variable(layer_type):
    layer = layer_type(sharpness=0.25)
    layer.build((None, 3))
    assert layer.trainable_weights == []
    [variable] = layer.non_trainable_weights
    assert tuple(variable.shape) == ()
    assert layer.get_sharpness() == pytest.approx(0.25)


@pytest.mark.parametrize("bad", [-0.1, 1.5, 2.0, math.nan])
def test_sharpness_outside_unit_interval_is_refused_at_construction(bad):
    with pytest.raises(ValueError, match=r"sharpness must be in \[0, 1\], got " + str(bad)):
        SpikingBRelu(sharpness=bad)


def test_set_sharpness_outside_unit_interval_names_layer_and_value_and_keeps_old():
    layer = SpikingBRelu(sharpness=0.5, name="hidden")
    with pytest.raises(ValueError, match=r"'hidden'.*got 1\.01"):
        layer.set_sharpness(1.01)
    assert layer.get_sharpness() == 0.5


def test_config_round_trip_keeps_current_sharpness():
    layer = SpikingSigmoid(sharpness=0.1, name="s")
    layer.set_sharpness(0.75)
    clone = SpikingSigmoid.from_config(layer.get_config())
    assert clone.name == "s"
    assert clone.get_sharpness() == 0.75


def small_model(width=6, num_classes=3, seed=0):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((4,))
    h = keras.layers.Dense(width)(inputs)
    h = SpikingBRelu(name="hidden")(h)
    key = ws.encoding.key_generator(num_classes, width, overlapping=False, seed=seed)
    outputs = SoftmaxDecode(key, name="decode")(h)
    return keras.Model(inputs, outputs)


def data(n=32, num_classes=3, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, (n, 4)).astype("float32")
    y = keras.utils.to_categorical(rng.integers(0, num_classes, n), num_classes)
    return x, y


def test_set_sharpness_changes_compiled_predict_without_recompiling():
    model = small_model()
    model.compile("sgd", "categorical_crossentropy")
    x, _ = data()
    smooth = model.predict(x, verbose=0)
    predict_function = model.predict_function
    model.get_layer("hidden").set_sharpness(1.0)
    sharp = model.predict(x, verbose=0)
    assert model.predict_function is predict_function  # same compiled function
    assert np.abs(sharp - smooth).max() > 1e-3
    # ... and it computes the fully sharp network.
    pre = model.layers[1](x)
    spikes = (numpy_of(pre) >= 0.5).astype("float32")
    np.testing.assert_allclose(sharp, numpy_of(model.get_layer("decode")(spikes)), atol=1e-6)


def test_compiled_fit_reads_sharpness_set_between_and_during_fits():
    model = small_model()
    model.compile(keras.optimizers.SGD(learning_rate=0.0), "categorical_crossentropy")
    x, y = data()
    model.get_layer("hidden").set_sharpness(1.0)
    loss_sharp = model.evaluate(x, y, verbose=0)
    model.get_layer("hidden").set_sharpness(0.0)
    loss_smooth = model.evaluate(x, y, verbose=0)
    assert abs(loss_sharp - loss_smooth) > 1e-4

    class SharpenAtEpochOne(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 1:
                self.model.get_layer("hidden").set_sharpness(1.0)

    history = model.fit(x, y, batch_size=32, epochs=2, verbose=0, callbacks=[SharpenAtEpochOne()])
    assert history.history["loss"] == pytest.approx([loss_smooth, loss_sharp], rel=1e-5)
    assert model.get_layer("hidden").get_sharpness() == 1.0  # not overwritten after fit


# --- .keras save / load ---------------------------------------------------------------


def sequential_model():
    key = ws.encoding.key_generator(2, 4, seed=1)
    return keras.Sequential(
        [
            keras.Input((5,)),
            keras.layers.Dense(8),
            SpikingBRelu(sharpness=0.3, name="a"),
            keras.layers.Dense(4),
            SpikingSigmoid(sharpness=1.0, name="b"),
            SoftmaxDecode(key),
        ]
    )


def functional_model():
    inputs = keras.Input((5,))
    h = SpikingBRelu(sharpness=0.6, name="a")(keras.layers.Dense(6)(inputs))
    outputs = SoftmaxDecode(ws.encoding.key_generator(3, 6, seed=2))(h)
    return keras.Model(inputs, outputs)


def nested_model():
    inner = keras.Sequential(
        [keras.Input((8,)), keras.layers.Dense(8), SpikingBRelu(sharpness=0.9, name="inner_a")],
        name="inner",
    )
    inputs = keras.Input((5,))
    h = SpikingBRelu(sharpness=1.0, name="a")(keras.layers.Dense(8)(inputs))
    h = inner(h)
    outputs = SoftmaxDecode(ws.encoding.key_generator(4, 8, seed=3))(h)
    return keras.Model(inputs, outputs)


@pytest.mark.parametrize("build", [sequential_model, functional_model, nested_model])
def test_keras_file_round_trips_sharpness_and_predictions(build, tmp_path):
    keras.utils.set_random_seed(0)
    model = build()
    x = np.random.default_rng(0).uniform(-2, 2, (16, 5)).astype("float32")
    before = model.predict(x, verbose=0)
    model.save(tmp_path / "model.keras")
    loaded = keras.saving.load_model(tmp_path / "model.keras")
    assert ws.sharpness.get_sharpness(loaded) == ws.sharpness.get_sharpness(model)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), before)
    np.testing.assert_array_equal(loaded.layers[-1].key, model.layers[-1].key)


def test_sharpness_set_after_construction_is_what_gets_saved(tmp_path):
    model = functional_model()
    model.get_layer("a").set_sharpness(0.125)
    model.save(tmp_path / "model.keras")
    loaded = keras.saving.load_model(tmp_path / "model.keras")
    assert loaded.get_layer("a").get_sharpness() == 0.125


# --- SoftmaxDecode ------------------------------------------------------------------


def softmax_decode_numpy(a, key):
    logits = (2.0 * np.asarray(a, np.float64) - 1.0) @ (2.0 * np.asarray(key) - 1.0).T
    e = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


@pytest.mark.parametrize("overlapping", [False, True])
def test_softmax_decode_equals_numpy(overlapping):
    key = ws.encoding.key_generator(5, 20, overlapping=overlapping, seed=4)
    rng = np.random.default_rng(5)
    binary = rng.integers(0, 2, (64, 20)).astype("float32")
    real = rng.uniform(0, 1, (64, 20)).astype("float32")
    for a in (binary, real):
        y = numpy_of(SoftmaxDecode(key)(a))
        np.testing.assert_allclose(y, softmax_decode_numpy(a, key), rtol=1e-5, atol=1e-7)


def test_softmax_decode_trains_with_categorical_cross_entropy():
    model = small_model(width=12, num_classes=3, seed=1)
    model.compile(keras.optimizers.Adam(0.05), "categorical_crossentropy")
    x, y = data(n=48, seed=1)
    loss = model.fit(x, y, epochs=8, batch_size=16, verbose=0).history["loss"]
    assert all(np.isfinite(loss))
    assert loss[-1] < loss[0] - 0.01


def test_softmax_decode_key_is_not_trainable_and_unchanged_by_training():
    model = small_model()
    layer = model.get_layer("decode")
    key = layer.key.copy()
    assert layer.trainable_weights == []
    model.compile(keras.optimizers.Adam(0.1), "categorical_crossentropy")
    model.fit(*data(), epochs=1, verbose=0)
    np.testing.assert_array_equal(layer.key, key)


def test_softmax_decode_key_width_mismatch_is_a_clear_error():
    key = ws.encoding.key_generator(3, 6, seed=0)
    inputs = keras.Input((5,))
    with pytest.raises(ValueError, match=r"input has 5 units but the key is 6 wide"):
        SoftmaxDecode(key)(inputs)


@pytest.mark.parametrize(
    "key",
    [
        [[0, 1, 2], [1, 0, 0]],
        [[0.5, 1.0], [1.0, 0.0]],
        [[1, 0, np.nan], [0, 1, 0]],
        [1, 0, 1],
        [[[1, 0]]],
    ],
    ids=["two", "half", "nan", "1-D", "3-D"],
)
def test_softmax_decode_rejects_key_that_is_not_a_binary_matrix(key):
    with pytest.raises(ValueError, match="key must be a 2-D array of 0s and 1s"):
        SoftmaxDecode(np.asarray(key))


def test_softmax_decode_output_shape():
    layer = SoftmaxDecode(ws.encoding.key_generator(4, 8, seed=0))
    assert layer.compute_output_shape((None, 8)) == (None, 4)
    assert (layer.num_classes, layer.width) == (4, 8)


def test_import_whetstone_is_enough_to_load_a_saved_model(tmp_path):
    """A fresh process that only does `import whetstone` can load a model using its layers."""
    import subprocess
    import sys

    path = tmp_path / "m.keras"
    keras.Sequential([keras.Input((3,)), ws.layers.SpikingBRelu(sharpness=1.0)]).save(path)
    script = f"import keras, whetstone; print(keras.models.load_model({str(path)!r}).layers[0])"
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "SpikingBRelu" in done.stdout


# --- honing: exact step forward, surrogate gradient backward ----------------------------


def _value_and_grad(layer, x):
    """The layer's output and d(sum output)/dx on the active Keras back end."""
    x = np.asarray(x, np.float32)
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        xt = tf.constant(x)
        with tf.GradientTape() as tape:
            tape.watch(xt)
            y = layer(xt)
            total = tf.reduce_sum(y)
        return y.numpy(), tape.gradient(total, xt).numpy()
    if backend == "jax":
        import jax

        y = np.asarray(layer(x))
        return y, np.asarray(jax.grad(lambda v: layer(v).sum())(x))
    import torch

    xt = torch.tensor(x, requires_grad=True)
    y = layer(xt)
    y.sum().backward()
    return y.detach().numpy(), xt.grad.numpy()


@settings(max_examples=50, deadline=None)
@given(hnp.arrays(np.float32, (1, 16), elements=st.floats(-4, 4, width=32)),
       st.sampled_from([0.25, 0.5, 1.0, 2.0]))  # fmt: skip
def test_honing_forward_is_the_exact_step(x, width):
    layer = SpikingBRelu(sharpness=1.0, surrogate_width=width)
    y, _ = _value_and_grad(layer, x)
    np.testing.assert_array_equal(y, (x >= 0.5).astype(np.float32))  # bit for bit


@pytest.mark.parametrize("width", [0.5, 1.0, 2.0])
def test_honing_gradient_is_the_surrogate_slope(width):
    x = np.array([[0.5 - 0.6 * width, 0.5 - 0.2 * width, 0.5, 0.5 + 0.2 * width]], "float32")
    _, grad = _value_and_grad(SpikingBRelu(sharpness=1.0, surrogate_width=width), x)
    slope = 1.0 / (width + ws.layers.EPSILON)
    np.testing.assert_allclose(grad, [[0.0, slope, slope, slope]], rtol=1e-5)


def test_sigmoid_honing_gradient_is_the_sigmoid_slope():
    x = np.array([[-1.0, 0.0, 2.0]], "float32")
    y, grad = _value_and_grad(SpikingSigmoid(sharpness=1.0, surrogate_width=1.0), x)
    assert y.tolist() == [[0.0, 1.0, 1.0]]
    s = sigmoid_formula(x, 0.0)
    np.testing.assert_allclose(grad, s * (1 - s) / (1.0 + 1e-3), rtol=1e-4)


def test_surrogate_width_zero_gives_no_gradient_when_sharp():
    _, grad = _value_and_grad(SpikingBRelu(sharpness=1.0, surrogate_width=0.0), [[0.4, 0.6]])
    assert grad.tolist() == [[0.0, 0.0]]


def test_surrogate_width_is_saved_and_checked(tmp_path):
    model = keras.Sequential([keras.Input((3,)), SpikingBRelu(1.0, surrogate_width=0.5)])
    model.save(tmp_path / "m.keras")
    assert keras.models.load_model(tmp_path / "m.keras").layers[-1].surrogate_width == 0.5
    with pytest.raises(ValueError, match="surrogate_width"):
        SpikingBRelu(surrogate_width=float("nan"))
