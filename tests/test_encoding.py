"""N-hot keys: generation, encoding, decoding, and agreement with SoftmaxDecode."""

import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from keras import ops

from whetstone.encoding import decode_from_key, encode_with_key, key_generator, vote
from whetstone.layers import SoftmaxDecode

key_args = st.integers(2, 30).flatmap(
    lambda classes: st.tuples(
        st.just(classes),
        st.integers(classes, 12 * classes),
        st.booleans(),
        st.integers(0, 2**32 - 1),
    )
)


@settings(max_examples=150)
@given(key_args)
def test_key_is_n_hot_with_distinct_codes(args):
    num_classes, width, overlapping, seed = args
    key = key_generator(num_classes, width, overlapping=overlapping, seed=seed)
    assert key.shape == (num_classes, width)
    assert set(np.unique(key).tolist()) <= {0, 1}
    assert key.sum(axis=1).tolist() == [width // num_classes] * num_classes
    assert len({row.tobytes() for row in key}) == num_classes
    if not overlapping:
        assert key.sum(axis=0).max() == 1  # each neuron belongs to at most one class


@pytest.mark.parametrize("overlapping", [False, True])
def test_key_is_reproducible_from_its_seed(overlapping):
    first = key_generator(10, 100, overlapping=overlapping, seed=7)
    np.testing.assert_array_equal(key_generator(10, 100, overlapping=overlapping, seed=7), first)
    assert not np.array_equal(key_generator(10, 100, overlapping=overlapping, seed=8), first)


def test_overlapping_keys_do_overlap():
    key = key_generator(10, 100, overlapping=True, seed=0)
    assert key.sum(axis=0).max() > 1


@pytest.mark.parametrize(("num_classes", "width"), [(20, 20), (50, 50), (100, 100), (10, 15)])
def test_overlapping_key_with_few_possible_codes_finishes_quickly(num_classes, width):
    # One-hot keys where every neuron must own a class: redrawing the whole key
    # until all codes differ would take ~10^8 tries for 20 classes.
    start = time.perf_counter()
    key = key_generator(num_classes, width, overlapping=True, seed=0)
    assert time.perf_counter() - start < 2.0
    assert len({row.tobytes() for row in key}) == num_classes


@pytest.mark.parametrize(("num_classes", "width"), [(10, 9), (3, 2), (2, 0)])
def test_key_too_narrow_for_the_classes_is_an_error(num_classes, width):
    with pytest.raises(ValueError, match=f"{width} wide cannot hold {num_classes} classes"):
        key_generator(num_classes, width)


@pytest.mark.parametrize("num_classes", [1, 0, -3])
def test_key_needs_two_classes(num_classes):
    with pytest.raises(ValueError, match=f"num_classes must be at least 2, got {num_classes}"):
        key_generator(num_classes, 10)


# --- encode / decode ----------------------------------------------------------------


@given(key_args, st.lists(st.integers(0, 2**16), max_size=40))
def test_encode_then_decode_round_trips(args, raw_labels):
    num_classes, width, overlapping, seed = args
    key = key_generator(num_classes, width, overlapping=overlapping, seed=seed)
    labels = np.array([label % num_classes for label in raw_labels], dtype=np.int64)
    codes = encode_with_key(labels, key)
    assert codes.shape == (len(labels), width)
    np.testing.assert_array_equal(decode_from_key(codes, key), labels)


def test_vote_is_agreement_minus_disagreement():
    key = np.array([[1, 1, 0, 0], [0, 0, 1, 1]])
    spikes = np.array([[1, 0, 0, 0], [0, 0, 1, 1], [0, 0, 0, 0]])
    assert vote(spikes, key).tolist() == [[2.0, -2.0], [-4.0, 4.0], [0.0, 0.0]]
    assert decode_from_key(spikes, key).tolist() == [0, 1, 0]  # tie -> lowest class


KEY = key_generator(7, 21, overlapping=True, seed=3)


@settings(max_examples=40, deadline=None)
@given(hnp.arrays(np.float32, (16, 21), elements=st.sampled_from([0.0, 1.0])))
def test_decode_from_key_is_argmax_of_softmax_decode(spikes):
    probs = ops.convert_to_numpy(SoftmaxDecode(KEY)(spikes))
    np.testing.assert_array_equal(decode_from_key(spikes, KEY), probs.argmax(axis=1))


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        ([0, 3], r"labels must lie in \[0, 2\] for a key of 3 classes, got range \[0, 3\]"),
        ([-1, 1], r"labels must lie in \[0, 2\].*got range \[-1, 1\]"),
        ([0.0, 1.0], r"integer classes.*float64"),
        ([[0, 1, 0]], r"1-D array of integer classes.*labels.argmax\(axis=1\)"),
        ([True, False], r"integer classes.*bool"),
    ],
)
def test_encode_with_bad_labels_is_a_clear_error(labels, message):
    key = key_generator(3, 6, seed=0)
    with pytest.raises(ValueError, match=message):
        encode_with_key(labels, key)


def test_decode_with_wrong_width_is_a_clear_error():
    key = key_generator(3, 6, seed=0)
    with pytest.raises(ValueError, match="spikes have 5 neurons but the key is 6 wide"):
        decode_from_key(np.zeros((2, 5)), key)
