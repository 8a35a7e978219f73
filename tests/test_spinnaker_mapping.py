"""SpiNNaker mapping: sorted synapse lists, neurons per core, row limits, one NEST build."""

from __future__ import annotations

import numpy as np
import pytest
from _helpers import inputs, keras_io_convnet, networks, small_convnet
from hypothesis import HealthCheck, given, settings

from whetstone import simulate
from whetstone.backends import get
from whetstone.backends import spinnaker as sp
from whetstone.backends.spinnaker import plan as spinnaker_plan
from whetstone.network import SpikingNetwork, Stage

spinnaker = get("spinnaker")


def test_connections_sorted_by_source_then_target():
    """sPyNNaker sizes synapse rows correctly only from a list sorted by source."""
    for layer in sp.build_plan(keras_io_convnet(np.random.default_rng(0))):
        for rows in (layer.exc, layer.inh):
            order = np.lexsort((rows[:, 1], rows[:, 0]))
            assert np.array_equal(order, np.arange(len(rows)))


def test_core_plan_rows_fit_at_256_neurons_per_core():
    plan = sp.build_plan(keras_io_convnet(np.random.default_rng(0)))
    cores = sp.core_plan(plan)
    assert [c["neurons_per_core"] for c in cores] == [256, 256, 256, 100]
    assert [c["cores"] for c in cores] == [22, 31, 7, 1]
    assert all(c["longest_row"] <= sp.ROW_LIMIT for c in cores)
    assert sp.longest_row(plan[1].exc, 7744) > sp.ROW_LIMIT  # one core: rows too long


def test_too_many_neurons_per_core_says_what_spynnaker_says():
    plan = sp.build_plan(keras_io_convnet(np.random.default_rng(0)))
    with pytest.raises(sp.MappingError, match="reduce the number of neurons per core"):
        sp.core_plan(plan, neurons_per_core=1000)


def test_mapping_remedy_agrees_with_spynnaker():
    class SynapseRowTooBigException(Exception):  # noqa: N818 (sPyNNaker's name)
        pass

    remedy = sp.pynn._remedy(SynapseRowTooBigException())
    assert "reduce the number of neurons per core" in remedy.lower()
    assert "more neurons per core" not in sp.pynn._remedy(RuntimeError()).lower()


def _counted_builds(monkeypatch) -> list:
    """A list that grows by one each time the back end builds a network."""
    builds, assemble = [], sp._assemble
    monkeypatch.setattr(sp, "_assemble", lambda *a: builds.append(1) or assemble(*a))
    return builds


def test_nest_run_with_progress_builds_once(monkeypatch):
    pytest.importorskip("pyNN.nest")
    rng = np.random.default_rng(1)
    net = small_convnet(rng)
    x = rng.normal(size=(12, 8, 8, 1)).astype("float32")
    builds, seen = _counted_builds(monkeypatch), []
    plain = spinnaker.run(net, x)
    reported = spinnaker.run(net, x, progress=seen.append)
    assert len(builds) == 2  # one build per run, however often progress is reported
    assert seen == sorted(seen) and seen[-1] == len(x) and len(seen) == 10
    np.testing.assert_array_equal(reported.output_spikes, plain.output_spikes)


def test_nest_run_in_several_simulations_equals_one(monkeypatch):
    """``images_per_run``: each part on a fresh network, the parts joined in order, the
    same spikes as one simulation of every image; progress counts the whole run."""
    pytest.importorskip("pyNN.nest")
    rng = np.random.default_rng(2)
    net = small_convnet(rng)
    x = rng.normal(size=(11, 8, 8, 1)).astype("float32")
    builds, seen = _counted_builds(monkeypatch), []
    whole = spinnaker.run(net, x)
    parts = spinnaker.run(net, x, images_per_run=4, progress=seen.append)
    assert len(builds) == 1 + 3 and parts.info["runs"] == 3  # 4 + 4 + 3 images
    np.testing.assert_array_equal(parts.output_spikes, whole.output_spikes)
    np.testing.assert_array_equal(parts.spike_counts, whole.spike_counts)
    np.testing.assert_array_equal(parts.predictions, whole.predictions)
    assert seen == sorted(seen) and seen[-1] == len(x) and max(seen[:10]) <= 4
    neurons = net.encoded_size + sum(layer.size for layer in sp.build_plan(net))
    assert sp.images_per_run(net) == sp.NEURON_IMAGES_PER_RUN // neurons
    with pytest.raises(ValueError, match="whole number of images >= 1"):
        spinnaker.run(net, x, images_per_run=-2)


@pytest.mark.slow
def test_keras_io_convnet_maps_on_virtual_board():
    """Mapped with no hand-given neurons per core (about 70 s: sPyNNaker's data generation)."""
    pytest.importorskip("pyNN.spiNNaker")
    report = spinnaker.map(keras_io_convnet(np.random.default_rng(0)))
    assert report["cores"] == 62 and report["boards"] == 1
    assert report["populations"]["conv_2"]["longest_row"] <= sp.ROW_LIMIT


def test_dense_population_spread_over_cores():
    w = np.ones((3, 600), "float32")
    net = SpikingNetwork((3,), [Stage("d", "dense", (3,), (600,), w)], input_encoding="binary")
    assert sp.core_plan(sp.build_plan(net), neurons_per_core=200)[0]["cores"] == 3


# ---------------------------------------------------------------- populations in pieces


def test_cores_are_counted_within_each_piece(monkeypatch):
    """A population above MAX_POPULATION is several PyNN populations, each filling its
    own cores: 20 neurons in pieces of 8, 8 and 4 take 3 + 3 + 2 cores of 3 neurons."""
    monkeypatch.setattr(spinnaker_plan, "MAX_POPULATION", 8)
    w = np.ones((3, 20), "float32")
    net = SpikingNetwork((3,), [Stage("d", "dense", (3,), (20,), w)], input_encoding="binary")
    assert sp.piece_starts(20).tolist() == [0, 8, 16, 20]
    entry = sp.core_plan(sp.build_plan(net), neurons_per_core=3)[0]
    assert (entry["cores"], entry["longest_row"]) == (8, 3)
    assert sp.longest_row(sp.build_plan(net)[0].exc, 8) == 8  # a core is at most a piece


@settings(
    max_examples=4,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(net=networks(ranks=(0, 2), dilation=False, on_chip=True, sizes=(3, 6), dag=True))
def test_pieces_run_the_same_on_nest(monkeypatch, net):
    """With the limit lowered to 3 neurons, sources and populations (skip edges included)
    are built in pieces, and NEST gives the spikes of one population each, and the
    reference's on every image without a tie."""
    pytest.importorskip("pyNN.nest")
    x = inputs(net, 8)
    whole = spinnaker.run(net, x)
    with monkeypatch.context() as patch:
        patch.setattr(spinnaker_plan, "MAX_POPULATION", 3)
        pieces = spinnaker.run(net, x)
    np.testing.assert_array_equal(pieces.output_spikes, whole.output_spikes)
    np.testing.assert_array_equal(pieces.spike_counts, whole.spike_counts)
    reference = simulate.run(net, x)
    clean = ~reference.tie_mask
    np.testing.assert_array_equal(
        pieces.output_spikes.reshape(len(x), -1)[clean],
        reference.output_spikes.reshape(len(x), -1)[clean],
    )


def test_build_gives_an_assembly_of_the_pieces(monkeypatch):
    pytest.importorskip("pyNN.nest")
    monkeypatch.setattr(spinnaker_plan, "MAX_POPULATION", 40)
    built = spinnaker.build(small_convnet(np.random.default_rng(3)), "nest")
    try:
        assert built.source.size == 192 and len(built.source.populations) == 5
        assert [p.size for p in built.populations] == [48, 16, 6]
        assert len(built.populations[0].populations) == 2  # the pool: 40 + 8
    finally:
        built.sim.end()


def test_virtual_board_maps_pieces(monkeypatch):
    """The mapping report counts each source or population once, its pieces summed."""
    pytest.importorskip("pyNN.spiNNaker")
    monkeypatch.setattr(spinnaker_plan, "MAX_POPULATION", 40)
    net = small_convnet(np.random.default_rng(4))
    report = spinnaker.map(net, neurons_per_core=64)
    assert sorted(report["populations"]) == ["c2", "d", "input", "p"]
    assert report["populations"]["input"]["cores"] == 5  # 192 neurons in 5 pieces
    assert report["populations"]["p"]["cores"] == 2  # 48 = 40 + 8
    assert report["cores"] == sum(e["cores"] for e in report["populations"].values())
