"""Automatic Loihi partition: within every per-core limit, as nengo-loihi itself checks."""

from __future__ import annotations

import numpy as np
import pytest
from _helpers import KEY, conv_stage, dense_stage, keras_io_convnet, networks, pool_stage
from hypothesis import HealthCheck, assume, given, settings

import whetstone.backends as backends
from whetstone.backends.loihi import LIMITS, LoihiPartitionError, plan
from whetstone.backends.loihi_partition import partition
from whetstone.network import SpikingNetwork

loihi = backends.get("loihi")
KEYS = ("compartments", "in_axons", "out_axons", "synapse_bits")


def vgg_net(rng) -> SpikingNetwork:
    """VGG-style: 32-32-pool-64-64-pool-Dense(256)-key (100 key neurons)."""
    stages = [
        conv_stage(rng, "c1", (28, 28, 1), 32, 3, 1, "same", 0.5),
        conv_stage(rng, "c2", (28, 28, 32), 32, 3, 1, "same", 0.5),
        pool_stage("p1", (28, 28, 32), 2, 2, "valid"),
        conv_stage(rng, "c3", (14, 14, 32), 64, 3, 1, "same", 0.5),
        conv_stage(rng, "c4", (14, 14, 64), 64, 3, 1, "same", 0.5),
        pool_stage("p2", (14, 14, 64), 2, 2, "valid"),
        dense_stage(rng, "d1", 7 * 7 * 64, 256, 0.5),
        dense_stage(rng, "d2", 256, 100, 0.5),
    ]
    return SpikingNetwork((28, 28, 1), stages, KEY)


CONV_NETWORKS = networks(
    ranks=(2,),
    dilation=False,
    square=True,
    sizes=(6, 20),
    windows=(1, 4),
    channels=(1, 32),
    units=(10, 1500),
    window_stages=(1, 3),
    decoders=("none",),
    on_chip=True,
)
"""Random conv networks large enough that most stages need several cores."""


def _dense_inputs_fit(net: SpikingNetwork) -> bool:
    """A dense stage takes one input axon per input neuron: at most a core's in_axons."""
    dense = [s for s in net.chip_stages if s.kind == "dense"]
    return all(int(np.prod(s.input_shape)) <= LIMITS["in_axons"] for s in dense)


def _measured(net, **options) -> list[dict]:
    return loihi.resources(net, **options)["blocks"]


def _planned(parts) -> list[dict]:
    return [block for part in parts for block in part.blocks]


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
@given(CONV_NETWORKS)
def test_random_conv_networks_partition_within_limits(net):
    """nengo-loihi builds (and so validates) every block; none exceeds a core's limits."""
    assume(_dense_inputs_fit(net))
    parts = plan(net)
    measured = _measured(net)  # builds the nengo-loihi model: its validation raises if over
    assert len(measured) == sum(part.cores for part in parts)
    for ours, theirs in zip(_planned(parts), measured, strict=True):
        for key in KEYS:
            assert theirs[key] <= LIMITS[key]
            assert theirs[key] <= ours[key]  # our count is exact or an upper bound


def test_counts_equal_nengo_loihi_on_keras_io_convnet():
    net = keras_io_convnet(np.random.default_rng(0))
    parts = plan(net)
    measured = _measured(net)
    assert [{k: b[k] for k in KEYS} for b in measured] == _planned(parts)


def test_keras_io_convnet_runs_on_emulator_without_shapes():
    """Split over 18 cores, the float emulator still computes exactly the reference."""
    rng = np.random.default_rng(1)
    net = keras_io_convnet(rng)
    x = rng.random((6, 28, 28, 1)).astype("float32")
    result = loihi.run(net, x, target="simreal", chips=1, compare_reference=True)
    report = result.info["resources"]
    assert report["chips_available"] == 1
    assert result.info["output_spikes_differing_not_ties"] == 0
    assert not report["over_limits"] and report["cores"] == 18 and report["chips"] == 1
    assert [p["stage"] for p in report["partition"]] == ["pool_1", "conv_2", "pool_2", "dense"]
    assert sum(p["cores"] for p in report["partition"]) == report["cores"]


def test_vgg_net_partitions_fast_and_builds():
    net = vgg_net(np.random.default_rng(2))
    parts = plan(net)
    report = loihi.resources(net)
    assert report["cores"] == sum(p.cores for p in parts) == 76 and not report["over_limits"]


def test_pinned_shape_is_kept_and_checked():
    net = keras_io_convnet(np.random.default_rng(3))
    report = loihi.resources(net, block_shapes={"conv_2": (6, 11, 8)})
    conv = next(p for p in report["partition"] if p["stage"] == "conv_2")
    assert conv["pinned"] and conv["block_shape"] == [6, 11, 8] and conv["cores"] == 16
    with pytest.raises(LoihiPartitionError, match=r"\(11, 11, 64\).*synapse_bits \d+ > 1048576"):
        loihi.build(net, block_shapes={"conv_2": (11, 11, 64)})
    with pytest.raises(LoihiPartitionError, match=r"one positive size per axis"):
        loihi.build(net, block_shapes={"conv_2": (64,)})


def test_too_many_chips_error_states_needed_and_available():
    net = vgg_net(np.random.default_rng(4))
    with pytest.raises(LoihiPartitionError) as error:
        loihi.run(net, np.zeros((1, 28, 28, 1)), chips=1, block_shapes={"c2": (4, 4, 8)})
    message = str(error.value)
    assert "needs 244 Loihi cores (2 chips at 128 cores each)" in message
    assert "1 chips (128 cores) are available" in message and "c2: 196" in message
    assert "chips=" in message and "shrink" in message


def test_unplaceable_dense_stage_says_why():
    rng = np.random.default_rng(5)
    net = SpikingNetwork((5000,), [dense_stage(rng, "wide_in", 5000, 10, 0.5)], None, "binary")
    with pytest.raises(LoihiPartitionError, match=r"'wide_in'.*in_axons 5000 > 4096.*Flatten"):
        partition(net.stages)


def test_export_keeps_pins_and_refuses_what_does_not_fit(tmp_path):
    net = keras_io_convnet(np.random.default_rng(6))
    folder = loihi.export(net, tmp_path / "pinned", block_shapes={"conv_2": (6, 11, 8)})
    loaded = SpikingNetwork.load(folder / "network.h5")
    assert {p.name: p.block_shape for p in plan(loaded) if p.pinned} == {"conv_2": (6, 11, 8)}
    with pytest.raises(LoihiPartitionError, match="needs 299 Loihi cores"):
        loihi.export(net, tmp_path / "refused", block_shapes={"conv_2": (2, 2, 8)}, chips=1)
    assert not (tmp_path / "refused").exists()


def test_run_with_progress_reports_and_equals_plain_run():
    rng = np.random.default_rng(7)
    stages = [dense_stage(rng, "a", 4, 30, 0.5), dense_stage(rng, "b", 30, 6, 0.5)]
    net = SpikingNetwork((4,), stages, None, "binary")
    x = rng.integers(0, 2, (25, 4)).astype("float32")
    seen = []
    reported = loihi.run(net, x, target="sim", progress=seen.append)
    assert seen == sorted(seen) and seen[-1] == len(x) and len(seen) >= 5
    np.testing.assert_array_equal(
        reported.output_spikes, loihi.run(net, x, target="sim").output_spikes
    )
