"""The layers on the active Keras back end (TensorFlow, JAX or PyTorch).

Keras picks its back end at import from ``KERAS_BACKEND``; these tests run on
whichever is active. The main environment has TensorFlow only; CI also runs
this file (with test_layers.py, test_encoding.py, test_sharpness.py) in an
environment with JAX and PyTorch, once with ``KERAS_BACKEND=jax`` and once with
``KERAS_BACKEND=torch``.
"""

import os

import keras
import numpy as np
import pytest
from keras import ops

import whetstone as ws

BACKEND = keras.backend.backend()
WIDTH = 30


def test_active_backend_is_the_requested_one():
    requested = os.environ.get("KERAS_BACKEND")
    if requested is None:
        pytest.skip("KERAS_BACKEND not set; Keras uses its configured default")
    assert requested == BACKEND


def build_model(seed=0):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((784,))
    h = ws.layers.SpikingBRelu(name="hidden")(keras.layers.Dense(64, name="dense1")(inputs))
    h = keras.layers.Dense(WIDTH, name="dense2")(h)
    key = ws.encoding.key_generator(10, WIDTH, overlapping=False, seed=seed)
    outputs = ws.layers.SoftmaxDecode(key, name="decode")(h)
    model = keras.Model(inputs, outputs)
    model.compile(keras.optimizers.Adam(0.01), "categorical_crossentropy", metrics=["accuracy"])
    return model


@pytest.fixture(scope="module")
def demo():
    (x, y), (x_test, y_test) = ws.datasets.load("demo")
    return x[:1024].reshape(-1, 784), y[:1024], x_test[:200].reshape(-1, 784), y_test[:200]


@pytest.fixture(scope="module")
def trained(demo):
    x, y, _, _ = demo
    model = build_model()
    history = model.fit(x, keras.utils.to_categorical(y, 10), batch_size=64, epochs=3, verbose=0)
    return model, history.history


def test_small_model_trains_on_active_backend(trained):
    _, history = trained
    assert all(np.isfinite(history["loss"]))
    assert history["loss"][-1] < history["loss"][0] - 0.1, BACKEND
    assert history["accuracy"][-1] > 0.5, BACKEND


def test_fully_sharp_hidden_layer_spikes_zero_or_one(trained, demo):
    model, _ = trained
    _, _, x_test, _ = demo
    model.get_layer("hidden").set_sharpness(1.0)
    hidden = keras.Model(model.inputs, model.get_layer("hidden").output)
    spikes = hidden.predict(x_test, verbose=0)
    assert set(np.unique(spikes).tolist()) == {0.0, 1.0}
    # The Keras prediction is the NumPy forward pass from those spikes.
    dense2 = model.get_layer("dense2")
    W, b = (ops.convert_to_numpy(v) for v in dense2.weights)
    key = model.get_layer("decode").key
    logits = (2.0 * (spikes @ W + b) - 1.0) @ (2.0 * key - 1.0).T
    expected = np.exp(logits - logits.max(1, keepdims=True))
    expected /= expected.sum(1, keepdims=True)
    np.testing.assert_allclose(model.predict(x_test, verbose=0), expected, rtol=1e-4, atol=1e-6)


def test_sharpness_set_mid_epoch_reaches_the_next_train_step():
    # A sharpener may change sharpness between batches; every back end's compiled
    # train step (JAX keeps its own copy of the variables) must see it at once.
    model = build_model(seed=1)
    model.compile(keras.optimizers.SGD(0.0), "categorical_crossentropy")
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (32, 784)).astype("float32")
    y = keras.utils.to_categorical(rng.integers(0, 10, 32), 10)
    model.get_layer("hidden").set_sharpness(1.0)
    sharp_loss = model.evaluate(x[16:], y[16:], verbose=0, return_dict=True)["loss"]
    model.get_layer("hidden").set_sharpness(0.0)
    running = []

    class SharpenAfterFirstBatch(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            running.append(logs["loss"])
            if batch == 0:
                self.model.get_layer("hidden").set_sharpness(1.0)

    model.fit(x, y, batch_size=16, shuffle=False, verbose=0, callbacks=[SharpenAfterFirstBatch()])
    second_batch_loss = 2 * running[1] - running[0]  # logs hold the running mean
    assert second_batch_loss == pytest.approx(sharp_loss, rel=1e-4), BACKEND
    assert model.get_layer("hidden").get_sharpness() == 1.0


def test_save_load_on_active_backend(trained, demo, tmp_path):
    model, _ = trained
    _, _, x_test, _ = demo
    model.get_layer("hidden").set_sharpness(0.7)
    path = tmp_path / f"model-{BACKEND}.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert loaded.get_layer("hidden").get_sharpness() == pytest.approx(0.7)
    np.testing.assert_array_equal(
        loaded.predict(x_test, verbose=0), model.predict(x_test, verbose=0)
    )
