"""The spike budget (whetstone.spike_budget): it lowers the spikes of a sharp network
through the honing surrogate, and it is a Keras object saved with the model."""

import keras
import numpy as np
import pytest

import whetstone as ws
from whetstone.spike_budget import SpikeBudget, set_spike_budget


def tiny_model() -> keras.Model:
    keras.utils.set_random_seed(0)
    return keras.Sequential([
        keras.Input((8,)),
        keras.layers.Dense(32, name="dense"),
        ws.layers.SpikingBRelu(sharpness=1.0, name="spiking"),
        keras.layers.Dense(2, activation="softmax", name="readout"),
    ])  # fmt: skip


def data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(512, 8)).astype("f4")
    return x, keras.utils.to_categorical((x[:, 0] > 0).astype(int), 2)


def spikes_after_training(strength: float) -> tuple[float, float]:
    model = tiny_model()
    set_spike_budget(model, strength)
    model.compile(keras.optimizers.Adam(1e-2), "categorical_crossentropy", metrics=["accuracy"])
    x, y = data()
    history = model.fit(x, y, epochs=10, batch_size=64, verbose=0)
    net = ws.convert.to_spiking(model, input_encoding="host")
    counts = ws.simulate.run(net, x).spikes_per_inference
    return float(counts[0]), history.history["accuracy"][-1]


def test_budget_lowers_the_spikes_of_a_sharp_network():
    free, free_accuracy = spikes_after_training(0.0)
    budget, budget_accuracy = spikes_after_training(1.0)
    assert budget < 0.5 * free  # measured: about 2.8 against 9.5 of 32 neurons
    assert budget_accuracy > 0.85 and free_accuracy > 0.95


def test_penalty_is_the_rate_above_budget_summed_over_the_batch():
    y = np.array([[1, 1, 1, 0], [1, 0, 0, 0], [0, 0, 0, 0]], "float32")  # 0.75, 0.25, 0
    assert float(SpikeBudget(strength=2.0, rate=0.5)(y)) == pytest.approx(2.0 * 0.25)
    assert float(SpikeBudget(strength=1.0)(y)) == pytest.approx(1.0)


def test_budget_is_saved_with_the_model(tmp_path):
    model = tiny_model()
    set_spike_budget(model, 0.5, rate=0.1)
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    budget = loaded.get_layer("spiking").activity_regularizer
    assert isinstance(budget, SpikeBudget) and budget.get_config() == {"strength": 0.5, "rate": 0.1}


def test_set_spike_budget_chooses_layers_and_removes():
    model = tiny_model()
    assert set_spike_budget(model, 1.0, layers=["spiking"]) == ["spiking"]
    assert set_spike_budget(model, 0.0) == ["spiking"]
    assert model.get_layer("spiking").activity_regularizer is None
    with pytest.raises(ValueError, match="no layer"):
        set_spike_budget(model, 1.0, layers=["nope"])
    plain = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    with pytest.raises(ValueError, match="no spiking layer"):
        set_spike_budget(plain, 1.0)


@pytest.mark.parametrize("kwargs", [{"strength": -1.0}, {"rate": 1.5}])
def test_budget_refuses_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        SpikeBudget(**kwargs)
