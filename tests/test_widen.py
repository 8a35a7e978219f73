"""Widening a spiking layer into staggered copies: weights, offsets and the function kept."""

import keras
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import whetstone as ws
from whetstone.widen import WidenError, offsets, widen

L = keras.layers


def mlp(hidden=5, norm=False, use_bias=True, seed=0) -> keras.Model:
    keras.utils.set_random_seed(seed)
    layers = [keras.Input((6,)), L.Dense(hidden, use_bias=use_bias, name="hidden")]
    if norm:
        layers.append(L.BatchNormalization(name="norm"))
    layers += [ws.layers.SpikingBRelu(name="spike"), L.Dropout(0.3), L.Dense(3, name="readout")]
    model = keras.Sequential(layers)
    if norm:
        rng = np.random.default_rng(seed)
        bn = model.get_layer("norm")
        bn.set_weights([rng.uniform(0.5, 2, hidden), rng.normal(size=hidden),
                        rng.normal(size=hidden), rng.uniform(0.5, 2, hidden)])  # fmt: skip
    return model


def sample(shape=(6,), n=256, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1, 1, size=(n, *shape)).astype("float32")


def hidden_input(model: keras.Model, x: np.ndarray) -> np.ndarray:
    """What the spiking layer receives."""
    spike = model.get_layer("spike")
    return keras.Model(model.inputs, spike.input).predict(x, verbose=0)


def test_offsets_are_centred_and_evenly_spaced():
    np.testing.assert_allclose(offsets(4), [-0.375, -0.125, 0.125, 0.375])
    np.testing.assert_allclose(offsets(3, spread=0.6), [-0.2, 0.0, 0.2], atol=1e-7)
    assert offsets(1).tolist() == [0.0]


@pytest.mark.parametrize("norm", [False, True])
def test_weights_are_tiled_offset_and_shared(norm):
    model = mlp(norm=norm)
    wide = widen(model, "hidden", copies=3)
    kernel = model.get_layer("hidden").kernel.numpy()
    np.testing.assert_array_equal(wide.get_layer("hidden").kernel.numpy(), np.tile(kernel, 3))
    readout = model.get_layer("readout").kernel.numpy()
    np.testing.assert_allclose(wide.get_layer("readout").kernel.numpy().reshape(3, 5, 3).sum(0),
                               readout, rtol=1e-6)  # fmt: skip
    x = sample()
    np.testing.assert_allclose(
        hidden_input(wide, x),
        np.tile(hidden_input(model, x), 3) + np.repeat(offsets(3), 5),
        atol=1e-5,
    )


@pytest.mark.parametrize("norm", [False, True])
def test_one_copy_is_the_same_network(norm):
    model = mlp(norm=norm)
    wide = widen(model, "hidden", copies=1)
    x = sample()
    np.testing.assert_array_equal(wide.predict(x, verbose=0), model.predict(x, verbose=0))


@settings(max_examples=15, deadline=None)
@given(copies=st.integers(1, 6), spread=st.floats(0.25, 2.0), seed=st.integers(0, 1000))
def test_smooth_function_differs_by_at_most_spread_over_8_per_unit(copies, spread, seed):
    """At sharpness 0, ``mean_k clip(x + o_k) - clip(x)`` lies in ``[-spread/8, spread/8]``,
    so each readout moves by at most ``spread / 8`` times its absolute weights."""
    model = mlp(hidden=7, norm=seed % 2 == 0, seed=seed)
    wide = widen(model, "hidden", copies=copies, spread=spread)
    x = sample(seed=seed)
    bound = spread / 8 * np.abs(model.get_layer("readout").kernel.numpy()).sum(axis=0) + 2e-3
    gap = np.abs(wide.predict(x, verbose=0) - model.predict(x, verbose=0)).max(axis=0)
    assert (gap <= bound).all()


def test_sharp_copies_count_the_levels_a_unit_crosses():
    """Sharp, the readout sees the share of copies whose staggered threshold ``x`` passes."""
    model = mlp(hidden=4)
    ws.sharpness.set_model_sharpness(model, 1.0)
    wide = widen(model, "hidden", copies=4)
    x = sample()
    pre = hidden_input(model, x)
    level = (pre[:, None, :] + offsets(4)[None, :, None] >= 0.5).mean(axis=1)
    readout = model.get_layer("readout")
    expected = level @ readout.kernel.numpy() + readout.bias.numpy()
    np.testing.assert_allclose(wide.predict(x, verbose=0), expected, atol=1e-5)


def test_conv_layer_with_pooling_between_and_a_sharpened_conversion():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((8, 8, 1)), L.Conv2D(3, 3, name="conv"), ws.layers.SpikingBRelu(name="s1"),
        L.MaxPooling2D(), L.Conv2D(4, 3, name="conv2"), ws.layers.SpikingBRelu(name="s2"),
        L.Flatten(), L.Dense(10, name="readout"),
    ])  # fmt: skip
    wide = widen(model, "conv", copies=2)
    assert wide.get_layer("conv").filters == 6
    assert wide.get_layer("conv2").kernel.shape == (3, 3, 6, 4)
    ws.sharpness.set_model_sharpness(wide, 1.0)
    x = sample((8, 8, 1), n=64)
    result = ws.simulate.run(ws.convert.to_spiking(wide), x)
    np.testing.assert_array_equal(result.predictions, wide.predict(x, verbose=0).argmax(axis=1))


@pytest.mark.parametrize("flatten", [L.Flatten, L.GlobalAveragePooling2D])
def test_last_conv_before_a_flatten_or_global_pooling(flatten):
    """Flatten lays channels innermost: each position's rows are tiled channel-wise."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((6, 6, 2)), L.Conv2D(3, 3, name="conv"), L.BatchNormalization(name="norm"),
        ws.layers.SpikingBRelu(name="spike"), L.MaxPooling2D(), flatten(),
        L.Dense(5, name="readout"),
    ])  # fmt: skip
    ws.sharpness.set_model_sharpness(model, 1.0)
    wide = widen(model, "conv", copies=3)
    x = sample((6, 6, 2), n=64)
    pre = hidden_input(model, x)  # (n, 4, 4, 3)
    pool, reduce = model.layers[3], model.layers[4]
    steps = (pre[..., None, :] + offsets(3)[:, None] >= 0.5).astype("float32")
    features = np.mean([reduce(pool(steps[..., k, :])) for k in range(3)], axis=0)
    readout = model.get_layer("readout")
    expected = features @ readout.kernel.numpy() + readout.bias.numpy()
    np.testing.assert_allclose(wide.predict(x, verbose=0), expected, atol=1e-5)


def test_functional_model_and_a_saved_round_trip(tmp_path):
    inputs = keras.Input((6,))
    h = ws.layers.SpikingBRelu(name="spike")(L.Dense(5, name="hidden")(inputs))
    model = keras.Model(inputs, L.Dense(3, name="readout")(h))
    wide = widen(model, "hidden", copies=2)
    wide.save(tmp_path / "wide.keras")
    loaded = keras.models.load_model(tmp_path / "wide.keras")
    x = sample()
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), wide.predict(x, verbose=0))
    assert loaded.get_layer("hidden").units == 10


def test_refusals_name_the_layer_and_the_remedy():
    with pytest.raises(WidenError, match=r"no Dense or Conv layer 'nope'.*'hidden'"):
        widen(mlp(), "nope", 2)
    with pytest.raises(WidenError, match="no bias and no BatchNormalization"):
        widen(mlp(use_bias=False), "hidden", 2)
    plain = keras.Sequential([keras.Input((6,)), L.Dense(5, activation="relu", name="hidden"),
                              L.Dense(3, name="readout")])  # fmt: skip
    with pytest.raises(WidenError, match=r"one spiking activation.*sharpenable"):
        widen(plain, "hidden", 2)
    reshaped = keras.Sequential([keras.Input((6, 6, 1)), L.Conv2D(2, 3, name="conv"),
                                 ws.layers.SpikingBRelu(), L.Reshape((32,)),
                                 L.Dense(3)])  # fmt: skip
    with pytest.raises(WidenError, match="Reshape"):
        widen(reshaped, "conv", 2)
    inputs = keras.Input((6,))
    h = ws.layers.SpikingBRelu()(L.Dense(6, name="hidden")(inputs))
    branched = keras.Model(inputs, L.Dense(3)(L.Add()([h, L.Dense(6)(h)])))
    with pytest.raises(WidenError, match="feeds 2 layers"):
        widen(branched, "hidden", 2)
    first = keras.Sequential([keras.Input((1, 6, 6)), L.Conv2D(2, 3, data_format="channels_first",
                              name="conv"), ws.layers.SpikingBRelu(), L.Flatten(),
                              L.Dense(3)])  # fmt: skip
    with pytest.raises(WidenError, match="channels_first"):
        widen(first, "conv", 2)
    with pytest.raises(WidenError, match="model's output"):
        widen(mlp(), "readout", 2)
    with pytest.raises(WidenError, match="at least 1"):
        widen(mlp(), "hidden", 0)
