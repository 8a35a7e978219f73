"""Weight formats (whetstone.quantize) and the weight sharpener: the weights end exactly on
the target's grid, conversion for the target then changes none, and the Loihi integer
emulator and the SpiNNaker fixed-point model compute what Keras computes (except ties)."""

from dataclasses import replace

import keras
import numpy as np
import pytest

import whetstone as ws
from whetstone import quantize
from whetstone.backends import spinnaker
from whetstone.network import SpikingNetwork, Stage
from whetstone.weight_sharpening import WeightSharpener

TARGETS = ["loihi", "spinnaker", "bits=8", "bits=3"]


def random_net() -> SpikingNetwork:
    rng = np.random.default_rng(0)
    conv = Stage("c", "conv", (6, 6, 2), (6, 6, 3), rng.normal(0, 0.3, (3, 3, 2, 3)).astype("f4"),
                 rng.normal(0, 0.2, 3).astype("f4"), padding="same")  # fmt: skip
    dense = Stage("d", "dense", (108,), (40,), rng.normal(0, 0.1, (108, 40)).astype("f4"),
                  rng.normal(0, 0.2, 40).astype("f4"))  # fmt: skip
    return SpikingNetwork((6, 6, 2), [conv, dense], input_encoding="binary")


@pytest.mark.parametrize("target", TARGETS)
def test_projection_lands_on_the_grid_and_stays(target):
    net = random_net()
    on = quantize.project(net, target)
    assert quantize.off_grid(net, target) == ["c", "d"]
    assert quantize.off_grid(on, target) == []
    again = quantize.project(on, target)
    for a, b in zip(on.stages, again.stages, strict=True):
        assert np.array_equal(a.weights, b.weights) and np.array_equal(a.bias, b.bias)
    for a, b in zip(net.stages, on.stages, strict=True):  # a rounding, not a new network
        assert np.abs(a.weights - b.weights).max() <= np.abs(a.weights).max() / 2


def test_loihi_grid_is_k_times_block_max_over_127():
    stage = Stage("d", "dense", (3,), (4,), np.array([[1.0, 0.5, 0.2, -2.0]] * 3, "f4"))
    weights, bias = quantize.Loihi().grid(stage, block_shape=(2,))  # blocks {0, 1}, {2, 3}
    steps = np.array([1.0, 1.0, 2.0, 2.0]) / 127
    k = weights / steps
    assert np.array_equal(k, np.round(k)) or np.abs(k - np.round(k)).max() < 1e-4
    assert np.round(k[0]).tolist() == [127, 64, 13, -127]
    half = (bias - 0.5) / steps - 0.5  # b = theta + (K + 1/2) step: never a tie
    assert np.abs(half - np.round(half)).max() < 1e-4


def test_host_encoder_and_pools_are_left_alone():
    rng = np.random.default_rng(1)
    first = Stage("a", "dense", (4,), (8,), rng.normal(size=(4, 8)).astype("f4"))
    second = Stage("b", "dense", (8,), (2,), rng.normal(size=(8, 2)).astype("f4"))
    on = quantize.project(SpikingNetwork((4,), [first, second]), "bits=4")
    assert np.array_equal(on.stages[0].weights, first.weights)
    assert not np.array_equal(on.stages[1].weights, second.weights)


def test_spinnaker_storage_changes_no_weight_on_the_grid():
    on = quantize.project(random_net(), "spinnaker")
    plan = spinnaker.build_plan(on)
    for exact, stored in zip(plan, spinnaker._quantised_layers(plan), strict=True):
        assert np.array_equal(exact.exc, stored.exc) and np.array_equal(exact.inh, stored.inh)
        assert np.array_equal(exact.thresholds, stored.thresholds)


def test_loihi_stores_exactly_the_grid_integers():
    pytest.importorskip("nengo_loihi")
    on = quantize.project(random_net(), "loihi")
    backend = ws.backends.get("loihi")
    built = backend._build(on)
    with backend.simulator(built, target="sim") as sim:
        for block in sim.model.blocks:
            assert block.discretize_info["w_exp"] == 0
            for synapse in block.synapses:
                for stored in synapse.weights:
                    assert (np.asarray(stored) % 128 == 0).all()  # k * 2**(6 + 1)
    weights = on.stages[1].weights  # dense: one block, one scale
    k = weights / (np.abs(weights).max() / 127)
    assert np.abs(k - np.round(k)).max() < 1e-4
    x = (np.random.default_rng(2).random((200, 6, 6, 2)) > 0.5).astype("f4")
    result = backend.run(on, x, target="sim", compare_reference=True)  # conv + dense on chip
    assert result.info["ties"] == 0  # the half-step bias: no sum lands on a threshold
    assert result.info["output_spikes_differing"] == 0


def test_get_refuses_unknown_targets():
    with pytest.raises(ValueError, match="bits=N"):
        quantize.get("bits=x")
    with pytest.raises(ValueError, match="'loihi', 'spinnaker'"):
        quantize.get("truenorth")


def test_fold_batch_norm_keeps_the_function():
    keras.utils.set_random_seed(0)
    model = ws.models.conv_mnist(filters=(4,), dropout=0.0, head="readout")
    model.compile("adam", "categorical_crossentropy")
    x = np.random.default_rng(0).random((32, 28, 28)).astype("f4")
    model.fit(x, np.eye(10)[np.arange(32) % 10], epochs=1, verbose=0)
    folded = quantize.fold_batch_norm(model)
    assert not any(isinstance(layer, keras.layers.BatchNormalization) for layer in folded.layers)
    before, after = model.predict(x, verbose=0), folded.predict(x, verbose=0)
    assert np.allclose(before, after, atol=1e-5)


def test_weight_sharpener_refuses_batch_norm():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3),
                              ws.layers.SpikingBRelu(sharpness=1.0), keras.layers.Dense(2),
                              keras.layers.BatchNormalization(),
                              ws.layers.SpikingBRelu(sharpness=1.0)])  # fmt: skip
    model.compile("adam", "mse")
    with pytest.raises(ws.convert.ConversionError, match="fold_batch_norm"):
        model.fit(np.ones((4, 4)), np.ones((4, 2)), verbose=0,
                  callbacks=[WeightSharpener("bits=8", verbose=0)])  # fmt: skip


def test_weight_sharpener_blends_then_keeps_the_grid_while_training():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(8),
                              ws.layers.SpikingBRelu(sharpness=1.0),
                              keras.layers.Dense(4, name="d"),
                              ws.layers.SpikingBRelu(sharpness=1.0)])  # fmt: skip
    model.compile(keras.optimizers.Adam(1e-2), "mse")
    x = np.random.default_rng(0).random((64, 6)).astype("f4")
    y = (x[:, :4] > 0.5).astype("f4")
    first = model.get_layer("d").get_weights()
    sharpener = WeightSharpener("bits=4", steps=4, per="batch", verbose=0)
    history = model.fit(x, y, epochs=3, batch_size=16, callbacks=[sharpener], verbose=0)
    assert history.history["weight_sharpness"] == [1.0, 1.0, 1.0]
    net = ws.convert.to_spiking(model)
    assert quantize.off_grid(net, "bits=4") == []
    assert not np.array_equal(first[0], model.get_layer("d").get_weights()[0])


# ---------------------------------------------------------------- trained on the demo data


def train_for(target: str):
    """A small dense network trained briefly on the demo data, sharpened, weights on grid."""
    (x, y), (x_test, _) = ws.datasets.load("demo")
    keras.utils.set_random_seed(0)
    model = ws.models.dense_mnist(hidden=(96, 48), key_width=40)
    model.compile(keras.optimizers.Adam(2e-3), "categorical_crossentropy")
    sharpener = ws.callbacks.SimpleSharpener(start_epoch=1, steps=1, stop_when_sharp=True,
                                             hone_epochs=2, verbose=0)  # fmt: skip
    weights = WeightSharpener(target, steps=2, verbose=0)
    model.fit(x[:3000], keras.utils.to_categorical(y[:3000], 10), epochs=10, batch_size=100,
              callbacks=[sharpener, weights], verbose=0)  # fmt: skip
    assert weights.sharpness == 1.0
    return model, x_test[:500]


def keras_and_reference(model, x):
    net = ws.convert.to_spiking(model)
    predicted = model.predict(x, verbose=0).argmax(axis=1)
    reference = ws.simulate.run(net, x)
    return net, predicted, reference


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_loihi_emulator_computes_what_keras_computes():
    pytest.importorskip("nengo_loihi")
    model, x = train_for("loihi")
    net, predicted, reference = keras_and_reference(model, x)
    assert quantize.off_grid(net, "loihi") == []
    result = ws.backends.get("loihi").run(net, x, target="sim")
    differ = result.predictions != predicted
    assert not (differ & ~reference.tie_mask).any(), np.flatnonzero(differ)


def test_spinnaker_fixed_point_computes_what_keras_computes():
    model, x = train_for("spinnaker")
    net, predicted, reference = keras_and_reference(model, x)
    assert quantize.off_grid(net, "spinnaker") == []
    fixed, _ = spinnaker.fixed_point_run(net, x)
    differ = fixed != predicted
    assert not (differ & ~reference.tie_mask).any(), np.flatnonzero(differ)


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_conv_network_with_batch_norm_folded_first_runs_exactly_on_loihi():
    pytest.importorskip("nengo_loihi")
    (x, y), (x_test, _) = ws.datasets.load("demo")
    labels = keras.utils.to_categorical(y[:1000], 10)
    keras.utils.set_random_seed(0)
    model = ws.models.conv_mnist(filters=(4, 8), dropout=0.0, head="readout")
    model.compile(keras.optimizers.Adam(2e-3), "categorical_crossentropy")
    model.fit(x[:1000], labels, epochs=1, batch_size=100, verbose=0)
    model = quantize.fold_batch_norm(model)  # the grid is on trained weights
    model.compile(keras.optimizers.Adam(1e-3), "categorical_crossentropy")
    sharpener = ws.callbacks.SimpleSharpener(steps=1, stop_when_sharp=True, hone_epochs=2,
                                             verbose=0)  # fmt: skip
    model.fit(x[:1000], labels, epochs=6, batch_size=100, verbose=0,
              callbacks=[sharpener, WeightSharpener("loihi", steps=2, verbose=0)])  # fmt: skip
    net, predicted, reference = keras_and_reference(model, x_test[:200])
    assert quantize.off_grid(net, "loihi") == []
    chip = ws.backends.get("loihi").run(net, x_test[:200], target="sim").predictions
    assert not ((chip != predicted) & ~reference.tie_mask).any()


def test_loihi_current_carries_nothing_over_between_steps():
    """nengo-loihi's own ``tau_s = 0`` (``decayU = 4094``) carries ``floor(u / 4096)`` of the
    current into the next step: after an image with 60 inputs at k = 127 (u = 128 * 7620
    units) that is 238 units, more than the 64 that keep the next image, 10 inputs with
    ``sum(k) + K + 1/2 = -1/2``, below its threshold (measured: it then fires on every such
    image). The back end empties the current (``decayU = 4095``): the chip is exact."""
    pytest.importorskip("nengo_loihi")
    stage = Stage("d", "dense", (60,), (1,), np.ones((60, 1), "f4"))  # k = 127 each
    net = quantize.project(SpikingNetwork((60,), [stage], input_encoding="binary"), "loihi")
    bias = np.float32(0.5 + (-1271 + 0.5) / 127)  # K = -1271: fires iff 11 or more inputs
    net = replace(net, stages=[replace(net.stages[0], bias=np.array([bias], "f4"))])
    assert quantize.off_grid(net, "loihi") == []
    x = np.zeros((8, 60), "f4")
    x[0::2], x[1::2, :10] = 1, 1  # all 60 on, then 10 on, alternating
    result = ws.backends.get("loihi").run(net, x, target="sim", compare_reference=True)
    assert result.output_spikes.ravel().tolist() == [1, 0] * 4
    assert result.info["output_spikes_differing"] == 0
