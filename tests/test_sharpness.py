"""Reading and setting the sharpness of a model's spiking layers."""

import math

import keras
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from whetstone.layers import SpikingBRelu, SpikingSigmoid
from whetstone.sharpness import (
    bottom_up_split,
    get_model_sharpness,
    get_sharpness,
    is_fully_sharpened,
    set_model_sharpness,
    set_sharpness,
    spiking_layers,
)


def chain(num_layers, name="chain"):
    """Dense + spiking layer, ``num_layers`` times; spiking layers named s0, s1, ..."""
    layers = [keras.Input((3,))]
    for i in range(num_layers):
        layers += [keras.layers.Dense(3), SpikingBRelu(name=f"s{i}")]
    return keras.Sequential(layers, name=name)


def nested():
    """Functional model: a, [inner: b, [innermost: c], d], e — bottom-up a..e."""
    innermost = keras.Sequential([keras.Input((3,)), SpikingBRelu(name="c")], name="innermost")
    inner_in = keras.Input((3,))
    h = SpikingSigmoid(name="b")(keras.layers.Dense(3)(inner_in))
    h = innermost(h)
    inner = keras.Model(inner_in, SpikingBRelu(name="d")(h), name="inner")
    inputs = keras.Input((3,))
    h = SpikingBRelu(name="a")(keras.layers.Dense(3)(inputs))
    h = keras.layers.Dense(3)(inner(h))
    return keras.Model(inputs, SpikingBRelu(name="e")(h))


def as_float32(values):
    return [float(np.float32(v)) for v in values]


# --- finding and naming layers ------------------------------------------------------


def test_spiking_layers_bottom_up_through_nested_models():
    assert [layer.name for layer in spiking_layers(nested())] == ["a", "b", "c", "d", "e"]


def test_spiking_layers_skips_other_layers():
    assert [layer.name for layer in spiking_layers(chain(3))] == ["s0", "s1", "s2"]


def test_get_and_set_sharpness_by_name_in_nested_model():
    model = nested()
    set_sharpness(model, {"c": 0.5, "e": 1.0})
    assert get_sharpness(model) == {"a": 0.0, "b": 0.0, "c": 0.5, "d": 0.0, "e": 1.0}
    assert list(get_sharpness(model)) == ["a", "b", "c", "d", "e"]


def test_set_sharpness_unknown_name_lists_the_layers():
    model = chain(2)
    with pytest.raises(ValueError, match=r"named \['nope'\].*\['s0', 's1'\]"):
        set_sharpness(model, {"s0": 1.0, "nope": 0.5})


def test_set_sharpness_out_of_range_names_layer_and_value():
    with pytest.raises(ValueError, match=r"'s1'.*got -0\.5"):
        set_sharpness(chain(2), {"s1": -0.5})


def test_repeated_layer_names_are_an_error_not_a_silent_merge():
    inner = keras.Sequential([keras.Input((3,)), SpikingBRelu(name="s0")], name="inner")
    model = keras.Sequential([keras.Input((3,)), inner, SpikingBRelu(name="s0")])
    with pytest.raises(ValueError, match=r"several spiking layers named \['s0'\]"):
        get_sharpness(model)
    with pytest.raises(ValueError, match="unique name"):
        set_sharpness(model, {"s0": 1.0})
    # Name-free helpers still work on such a model.
    set_model_sharpness(model, 0.5)
    assert [layer.get_sharpness() for layer in spiking_layers(model)] == [1.0, 0.0]
    assert get_model_sharpness(model) == 0.5
    assert not is_fully_sharpened(model)


# --- bottom-up split ----------------------------------------------------------------

SPLITS = {
    3: {
        0.0: [0, 0, 0],
        0.1: [0.3, 0, 0],
        1 / 3: [1, 0, 0],
        0.5: [1, 0.5, 0],
        2 / 3: [1, 1, 0],
        0.75: [1, 1, 0.25],
        1.0: [1, 1, 1],
    },
    4: {
        0.0: [0, 0, 0, 0],
        0.1: [0.4, 0, 0, 0],
        1 / 3: [1, 1 / 3, 0, 0],
        0.5: [1, 1, 0, 0],
        2 / 3: [1, 1, 2 / 3, 0],
        0.75: [1, 1, 1, 0],
        1.0: [1, 1, 1, 1],
    },
}
CASES = [(v, n, split) for n, table in SPLITS.items() for v, split in table.items()]


@pytest.mark.parametrize(("value", "num_layers", "expected"), CASES)
def test_bottom_up_split_table(value, num_layers, expected):
    split = bottom_up_split(value, num_layers)
    assert split == pytest.approx(expected, abs=1e-12)
    # Whole layers are exactly 1 and untouched layers exactly 0, never 0.9999999.
    assert all(got == want for got, want in zip(split, expected, strict=True) if want in (0, 1))


@pytest.mark.parametrize("num_layers", [2, 3, 4, 5, 6, 7, 10])
def test_bottom_up_split_whole_layers_despite_float_rounding(num_layers):
    for k in range(num_layers + 1):
        for value in (
            k / num_layers,
            math.nextafter(k / num_layers, 0),
            math.nextafter(k / num_layers, 1),
        ):
            if not 0 <= value <= 1:
                continue
            assert bottom_up_split(value, num_layers) == [1.0] * k + [0.0] * (num_layers - k)


def test_bottom_up_split_two_thirds_of_three_is_two_whole_layers():
    assert 2 / 3 * 3 == 2.0 and 0.7 * 3 == 2.0999999999999996  # the float facts
    assert bottom_up_split(2 / 3, 3) == [1.0, 1.0, 0.0]
    assert bottom_up_split(0.7, 3) == pytest.approx([1.0, 1.0, 0.1], abs=1e-12)


@given(st.floats(0.0, 1.0), st.integers(1, 12))
def test_bottom_up_split_properties(value, num_layers):
    split = bottom_up_split(value, num_layers)
    assert len(split) == num_layers
    assert all(0.0 <= v <= 1.0 for v in split)
    assert split == sorted(split, reverse=True)  # bottom layers first
    assert sum(0.0 < v < 1.0 for v in split) <= 1  # at most one layer part-way
    assert sum(split) == pytest.approx(value * num_layers, abs=1e-8)


@pytest.mark.parametrize("bad", [-0.01, 1.01, math.nan])
def test_bottom_up_split_out_of_range_names_the_value(bad):
    with pytest.raises(ValueError, match=r"model sharpness must be in \[0, 1\], got " + str(bad)):
        bottom_up_split(bad, 3)


# --- model sharpness ----------------------------------------------------------------


@pytest.mark.parametrize("num_layers", [3, 4])
@pytest.mark.parametrize("value", [0.0, 0.1, 1 / 3, 0.5, 2 / 3, 0.75, 1.0])
def test_set_model_sharpness_bottom_up(value, num_layers):
    model = chain(num_layers)
    set_model_sharpness(model, value)
    expected = as_float32(SPLITS[num_layers][value])
    assert list(get_sharpness(model).values()) == expected
    assert get_model_sharpness(model) == pytest.approx(value, abs=1e-7)
    assert is_fully_sharpened(model) == (value == 1.0)


def test_set_model_sharpness_uniform():
    model = nested()
    set_model_sharpness(model, 0.4, bottom_up=False)
    assert list(get_sharpness(model).values()) == as_float32([0.4] * 5)
    assert get_model_sharpness(model) == pytest.approx(0.4)


@pytest.mark.parametrize("bottom_up", [True, False])
def test_set_model_sharpness_out_of_range_names_the_value(bottom_up):
    with pytest.raises(ValueError, match=r"got 1\.5"):
        set_model_sharpness(chain(2), 1.5, bottom_up=bottom_up)


def test_is_fully_sharpened_needs_every_layer_exactly_at_one():
    model = nested()
    set_model_sharpness(model, 1.0)
    assert is_fully_sharpened(model)
    set_sharpness(model, {"c": 0.9999})
    assert not is_fully_sharpened(model)
    set_model_sharpness(model, math.nextafter(1.0, 0))  # snaps to whole layers
    assert is_fully_sharpened(model)


def test_model_without_spiking_layers_says_to_use_spiking_brelu():
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, activation="relu")])
    assert spiking_layers(model) == []
    for helper in (
        get_sharpness,
        get_model_sharpness,
        is_fully_sharpened,
        lambda m: set_sharpness(m, {"x": 1.0}),
        lambda m: set_model_sharpness(m, 0.5),
    ):
        with pytest.raises(ValueError, match=r"no spiking layers.*SpikingBRelu"):
            helper(model)
