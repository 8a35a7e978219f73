"""The decoder's tie rule, the same on every back end.

A key decoder votes ``(2s - 1) @ (2K - 1)^T``; equal top votes go to the lowest class,
and such samples are counted as decoder ties. Every back end decodes its output spikes on
the host, so it must give the reference simulator's decision, ties included.
"""

import itertools

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from whetstone import simulate
from whetstone.backends import get
from whetstone.network import KeyDecoder, SpikingNetwork, Stage

# Three classes over four neurons, chosen so that many spike patterns tie.
KEY = np.array([[1, 1, 0, 0], [0, 0, 1, 1], [1, 0, 0, 1]], "float32")
PATTERNS = np.array(list(itertools.product((0.0, 1.0), repeat=4)), "float32")


def relay_network() -> SpikingNetwork:
    """Binary inputs relayed one to one: the output spikes are the input pattern."""
    stage = Stage("relay", "dense", (4,), (4,), np.eye(4, dtype="float32"), np.zeros(4, "float32"))
    return SpikingNetwork((4,), [stage], KeyDecoder(KEY), input_encoding="binary")


def lowest_of_top_votes(spikes: np.ndarray) -> np.ndarray:
    votes = (2 * spikes - 1) @ (2 * KEY - 1).T
    return np.array([np.flatnonzero(v == v.max())[0] for v in votes])


def test_reference_gives_ties_to_the_lowest_class_and_counts_them():
    result = simulate.run(relay_network(), PATTERNS)
    assert result.predictions.tolist() == lowest_of_top_votes(PATTERNS).tolist()
    votes = (2 * PATTERNS - 1) @ (2 * KEY - 1).T
    tied = (votes == votes.max(axis=1, keepdims=True)).sum(axis=1) > 1
    assert result.decoder_ties == int(tied.sum()) > 0
    assert (result.tie_mask == tied).all()


SCORE_VALUES = [-2.0, -1e-7, 0.0, 3e-7, 1e-6, 1.5e-6, 2.0, np.inf, -np.inf]  # near ties


@given(
    hnp.arrays(
        np.float32,
        hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=12),
        elements=st.sampled_from([float(np.float32(v)) for v in SCORE_VALUES]),
    )
)
def test_a_decoder_tie_is_two_best_scores_within_the_tolerance(scores):
    top2 = np.sort(scores, axis=1)[:, -2:]  # the definition: the best minus the second best
    expected = (top2[:, 1] - top2[:, 0]) < simulate.TIE_TOLERANCE if scores.shape[1] > 1 else 0
    assert (simulate._decoder_tie(scores) == expected).all()


BACKENDS = [
    ("nengo", {}, "nengo"),
    ("loihi", {"target": "sim"}, "nengo_loihi"),
    ("loihi", {"target": "simreal"}, "nengo_loihi"),
    ("spinnaker", {"simulator": "nest"}, "pyNN.nest"),
    ("nir", {}, "nir"),
]


@pytest.mark.parametrize(("name", "options", "module"), BACKENDS)
def test_every_back_end_breaks_ties_like_the_reference(name, options, module):
    pytest.importorskip(module)
    net = relay_network()
    result = get(name).run(net, PATTERNS, **options)
    np.testing.assert_array_equal(result.output_spikes.reshape(len(PATTERNS), -1), PATTERNS)
    assert result.predictions.tolist() == simulate.run(net, PATTERNS).predictions.tolist()
