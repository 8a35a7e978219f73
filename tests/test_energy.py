"""Loihi energy per inference (whetstone.energy) on hand-computed counts."""

import numpy as np
import pytest

from whetstone import energy, simulate
from whetstone.network import SpikingNetwork, Stage


def test_energy_of_given_counts_is_the_weighted_sum():
    e = energy.loihi_energy(synaptic_operations=1000, spikes=200, neuron_updates=50)
    assert e["synaptic_ops_j"] == pytest.approx(1000 * 23.6e-12)
    assert e["spikes_j"] == pytest.approx(200 * 1.7e-12)
    assert e["neuron_updates_j"] == pytest.approx(50 * 81e-12)
    assert e["total_j"] == pytest.approx(23600e-12 + 340e-12 + 4050e-12)


def test_estimate_counts_only_the_chip():
    # host encoder a: 2 inputs -> 3 neurons; on chip b: 3 -> 2 neurons, every input
    # reaching both (fan-out 2)
    a = Stage("a", "dense", (2,), (3,), np.array([[1, 1, 0], [0, 1, 1]], "f4"))
    b = Stage("b", "dense", (3,), (2,), np.array([[1, 0], [1, 0], [0, 1]], "f4"))
    net = SpikingNetwork((2,), [a, b])
    x = np.array([[1, 0], [1, 1]], "f4")
    # sample 1: a fires [1,1,0] (2 spikes -> 4 synops), b fires [1,0] (sum 2, 0)
    # sample 2: a fires [1,1,1] (3 spikes -> 6 synops), b fires [1,1]
    r = energy.estimate(net, simulate.run(net, x))
    assert r["synaptic_operations"] == 5.0  # (4 + 6) / 2
    assert r["spikes"] == 1.5  # b only: (1 + 2) / 2; a runs on the host
    assert r["neuron_updates"] == 2  # b's neurons, once each (pipelined)
    expected = 5.0 * 23.6e-12 + 1.5 * 1.7e-12 + 2 * 81e-12
    assert r["total_j"] == pytest.approx(expected)
    assert r["energy_nj"] == pytest.approx(expected * 1e9)
    alone = energy.estimate(net, simulate.run(net, x), steps=net.latency)
    assert alone["neuron_updates"] == 4


def test_estimate_counts_a_binary_input_network_whole():
    stage = Stage("d", "dense", (2,), (1,), np.ones((2, 1), "f4"))
    net = SpikingNetwork((2,), [stage], input_encoding="binary")
    r = energy.estimate(net, simulate.run(net, np.array([[1, 1]], "f4")))
    assert (r["synaptic_operations"], r["spikes"], r["neuron_updates"]) == (2.0, 1.0, 1)


def test_costs_can_be_replaced_and_bad_counts_refused():
    costs = energy.EnergyCosts(synaptic_op=1.0, spike=0.0, neuron_update=0.0, source="unit")
    assert energy.loihi_energy(3, 5, 7, costs)["total_j"] == 3.0
    with pytest.raises(ValueError, match="synaptic_operations"):
        energy.loihi_energy(-1, 0, 0)
    with pytest.raises(ValueError, match="steps"):
        stage = Stage("d", "dense", (1,), (1,), np.ones((1, 1), "f4"))
        net = SpikingNetwork((1,), [stage], input_encoding="binary")
        energy.estimate(net, simulate.run(net, np.ones((1, 1))), steps=0)
