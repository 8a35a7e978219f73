"""Chunks of a batch in parallel processes give the single run's results, in input order."""

import numpy as np
import pytest
from _helpers import inputs

from whetstone import backends, simulate
from whetstone.backends.chunks import run_chunks
from whetstone.network import SpikingNetwork, Stage


def conv_net() -> SpikingNetwork:
    """A host encoder, a conv stage and a dense stage: spikes vary from image to image."""
    rng = np.random.default_rng(5)
    return SpikingNetwork((6, 6, 1), [
        Stage("e", "conv", (6, 6, 1), (6, 6, 3), rng.normal(size=(3, 3, 1, 3)), padding="same"),
        Stage("c", "conv", (6, 6, 3), (4, 4, 4), rng.normal(size=(3, 3, 3, 4)), threshold=0.5),
        Stage("d", "dense", (4, 4, 4), (5,), rng.normal(size=(64, 5)), threshold=0.5),
    ])  # fmt: skip


@pytest.mark.parametrize(
    "name, options", [("nengo", {}), ("loihi", {"target": "sim"}), ("loihi", {"target": "simreal"})]
)
def test_chunks_in_processes_equal_the_single_run(name, options):
    if not backends.get(name).is_available():
        pytest.skip(f"{name} is not installed")
    net, x = conv_net(), inputs(conv_net(), 23, seed=1)
    reference = simulate.run(net, x)
    assert len(set(reference.predictions.tolist())) > 1  # images differ: order shows
    done = []
    joined = run_chunks(name, net, x, processes=3, compare_reference=True, progress=done.append,
                        **options)  # fmt: skip
    single = backends.get(name).run(net, x, **options)
    np.testing.assert_array_equal(joined.output_spikes, single.output_spikes)
    np.testing.assert_array_equal(joined.predictions, reference.predictions)
    np.testing.assert_array_equal(joined.spike_counts, single.spike_counts)
    assert joined.info["processes"] == 3 and joined.info["chunk_images"] == [8, 8, 7]
    assert done == [8, 16, 23] and joined.agreement["agreement"] == 1.0
    assert joined.build_seconds > 0 and joined.run_seconds > 0


def test_one_process_runs_here_and_bad_counts_are_refused():
    net = conv_net()
    x = inputs(net, 2)
    one = run_chunks("nengo", net, x, processes=5)  # two images: two chunks at most
    assert one.info["processes"] == 2
    here = run_chunks("nengo", net, x, processes=1)
    assert "processes" not in here.info
    np.testing.assert_array_equal(here.output_spikes, one.output_spikes)
    for bad in (0, 1.5, "2"):
        with pytest.raises(ValueError, match="processes must be a whole number >= 1"):
            run_chunks("nengo", net, x, processes=bad)
    with pytest.raises(ValueError, match="empty batch"):
        run_chunks("nengo", net, x[:0], processes=2)
