"""Reference simulator: arithmetic against loops and Keras, both paths, counts, real MNIST."""

import itertools

import keras
import numpy as np
import pytest
from _helpers import cases, small_convnet
from hypothesis import given, settings
from hypothesis import strategies as st

import whetstone.models
from whetstone import callbacks, convert, datasets
from whetstone.network import KeyDecoder, SpikingNetwork, Stage, output_length
from whetstone.simulate import preactivation, run, stage_spikes

L = keras.layers


def naive_conv(x, kernel, strides, dilation, padding):
    """Float64 cross-correlation by explicit loops (Keras 'same': extra pad after)."""
    spatial, window = x.shape[1:-1], kernel.shape[:-2]
    out, pads = [], []
    for n, k, s, d in zip(spatial, window, strides, dilation, strict=True):
        out.append(output_length(n, k, s, d, padding))
        total = max((out[-1] - 1) * s + (k - 1) * d + 1 - n, 0) if padding == "same" else 0
        pads.append(total // 2)
    y = np.zeros((len(x), *out, kernel.shape[-1]))
    for o in itertools.product(*map(range, out)):
        for tap in itertools.product(*map(range, window)):
            i = [
                oo * s + t * d - p
                for oo, t, s, d, p in zip(o, tap, strides, dilation, pads, strict=True)
            ]
            if all(0 <= ii < n for ii, n in zip(i, spatial, strict=True)):
                y[(slice(None), *o)] += x[(slice(None), *i)].astype(np.float64) @ kernel[tap]
    return y


@settings(max_examples=40, deadline=None)
@given(
    rank=st.integers(1, 2),
    size=st.integers(3, 9),
    k=st.integers(1, 4),
    s=st.integers(1, 3),
    d=st.integers(1, 2),
    padding=st.sampled_from(["valid", "same"]),
    seed=st.integers(0, 1000),
)
def test_conv_matches_loops(rank, size, k, s, d, padding, seed):
    out = output_length(size, k, s, d, padding)
    if out == 0:
        return
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(3, *(size,) * rank, 2)).astype(np.float32)
    kernel = rng.normal(size=(*(k,) * rank, 2, 3)).astype(np.float32)
    stage = Stage("c", "conv", x.shape[1:], (*(out,) * rank, 3), kernel, None, 0.5,
                  (s,) * rank, padding, (d,) * rank)  # fmt: skip
    expected = naive_conv(x, kernel, (s,) * rank, (d,) * rank, padding)
    np.testing.assert_allclose(preactivation(stage, x), expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(preactivation(stage, x, "float64"), expected, rtol=1e-12)


@pytest.mark.parametrize(
    ("size", "k", "s", "d"), [(28, 3, 1, 1), (8, 2, 2, 1), (7, 4, 3, 1), (9, 3, 1, 2)]
)
def test_conv_and_or_pool_follow_keras_same_padding(size, k, s, d):
    rng = np.random.default_rng(size)
    x = rng.uniform(0, 1, (4, size, size, 2)).astype(np.float32)
    conv = L.Conv2D(3, k, strides=s, dilation_rate=d, padding="same")
    expected = np.asarray(conv(x))
    w, b = conv.get_weights()
    stage = Stage("c", "conv", x.shape[1:], expected.shape[1:], w, b, 0.5, (s, s), "same", (d, d))
    np.testing.assert_allclose(preactivation(stage, x), expected, rtol=1e-5, atol=1e-5)
    spikes = (x > 0.7).astype(np.float32)
    pool = L.MaxPooling2D(k, strides=s, padding="same")
    expected = np.asarray(pool(spikes))
    stage = Stage("p", "pool", x.shape[1:], expected.shape[1:], strides=(s, s), padding="same",
                  pool_size=(k, k))  # fmt: skip
    result = run(SpikingNetwork(x.shape[1:], [stage], input_encoding="binary"), spikes)
    np.testing.assert_array_equal(result.output_spikes, expected)


def two_stage(threshold=0.5, bias=0.0):
    dense = Stage("a", "dense", (2,), (3,), np.array([[1, 0, 0.5], [0, 1, 0.5]], np.float32),
                  np.full(3, bias, np.float32), threshold)  # fmt: skip
    top = Stage("b", "dense", (3,), (2,), np.array([[1, 0], [0, 1], [1, 1]], np.float32),
                np.zeros(2, np.float32), 1.5)  # fmt: skip
    return SpikingNetwork((2,), [dense, top], KeyDecoder([[1, 0], [0, 1]]), "binary")


def test_hand_computed_network():
    net = two_stage()
    x = np.array([[0, 0], [1, 0], [0, 1], [1, 1]], np.float32)
    result = run(net, x)
    # stage a: pre = (x0, x1, (x0+x1)/2) >= 0.5; stage b: (a0 + a2, a1 + a2) >= 1.5
    np.testing.assert_array_equal(result.output_spikes, [[0, 0], [1, 0], [0, 1], [1, 1]])
    assert result.predictions.tolist() == [0, 0, 1, 0]  # equal votes -> lowest class
    assert result.decoder_ties == 2
    # ties: stage a at x=(1,0) and (0,1): a2 = 0.5 exactly
    assert result.sample_ties.tolist() == [[0, 0], [1, 0], [1, 0], [0, 0]]
    assert result.tie_mask.tolist() == [True, True, True, True]  # two decoder, two neuron ties
    assert result.spike_counts.tolist() == [0 + 2 + 2 + 3, 0 + 1 + 1 + 2]
    # synops (binary input on chip): input spikes x 3 + stage-a spikes x 2
    assert result.synaptic_operations.tolist() == [0, 3 + 4, 3 + 4, 6 + 6]
    assert result.ann_macs == 6 + 6 and result.latency == 2


def test_host_encoding_counts_no_synops_for_the_host_stage():
    net = two_stage()
    net.input_encoding = "host"
    result = run(net, np.array([[1, 1]], np.float32))
    assert result.synaptic_operations.tolist() == [6]


def test_step_fires_at_exactly_the_threshold():
    stage = Stage("s", "dense", (1,), (1,), np.ones((1, 1), np.float32), None, 0.0)
    result = run(SpikingNetwork((1,), [stage]), np.array([[0.0], [-1e-7], [-1e-5]], np.float32))
    assert result.output_spikes.ravel().tolist() == [1, 0, 0]
    assert result.ties.tolist() == [2]


@settings(max_examples=40, deadline=None)
@given(cases(n=(1, 40)))
def test_fast_and_timestep_paths_agree_exactly(case):
    net, x = case
    fast, slow = run(net, x), run(net, x, mode="timestep")
    for name in ("predictions", "output_spikes", "scores", "spike_counts", "ties", "sample_ties",
                 "tie_mask", "synaptic_operations"):  # fmt: skip
        a, b = getattr(fast, name), getattr(slow, name)
        if a is None or b is None:
            assert a is b is None, name
            continue
        np.testing.assert_array_equal(a, b, err_msg=name)
    assert fast.latency == slow.latency == len(net.stages)
    # memoryless: each sample alone gives the same spikes
    alone = np.concatenate([run(net, x[i : i + 1]).output_spikes for i in range(len(x))])
    np.testing.assert_array_equal(alone, fast.output_spikes)


def test_float64_mode_and_chunking_give_the_same_spikes():
    rng = np.random.default_rng(7)
    net = small_convnet(rng)
    x = rng.uniform(0, 1, (3000, 8, 8, 1)).astype(np.float32)
    a, b = run(net, x), run(net, x, dtype="float64")
    same = ~(a.tie_mask | b.tie_mask)
    np.testing.assert_array_equal(a.output_spikes[same], b.output_spikes[same])
    np.testing.assert_array_equal(run(net, x[:10]).output_spikes, a.output_spikes[:10])


@pytest.mark.parametrize(
    ("x", "kwargs", "message"),
    [
        (np.zeros((2, 3)), {}, r"x must be a batch of inputs of shape \(n, \*\(2,\)\)"),
        (np.full((1, 2), 0.5), {}, "input_encoding='binary' but x holds values other than 0"),
        (np.full((1, 2), np.nan), {}, "NaN or Inf"),
        (np.zeros((1, 2)), {"mode": "rate"}, "mode must be 'fast' or 'timestep'"),
        (np.zeros((1, 2)), {"dtype": "float16"}, "dtype must be"),
    ],
)
def test_bad_inputs_are_refused(x, kwargs, message):
    with pytest.raises(ValueError, match=message):
        run(two_stage(), x, **kwargs)


# ---------------------------------------------------------------- real MNIST


def train_sharpened(model, x, y, epochs, start_epoch, steps, optimizer="adam"):
    keras.utils.set_random_seed(0)
    model.compile(optimizer, "categorical_crossentropy", metrics=["accuracy"])
    sharpener = callbacks.SimpleSharpener(start_epoch, steps, stop_when_sharp=True, verbose=0)
    model.fit(x, keras.utils.to_categorical(y, 10), epochs=epochs, batch_size=128,
              callbacks=[sharpener], verbose=0)  # fmt: skip
    assert whetstone.sharpness.is_fully_sharpened(model)
    return model


def compare_on_test_set(model, x_test, y_test):
    net = convert.to_spiking(model)
    result = run(net, x_test)
    keras_predictions = model.predict(x_test, verbose=0, batch_size=1000).argmax(axis=1)
    differ = keras_predictions != result.predictions
    figures = {
        "keras_accuracy": float((keras_predictions == y_test).mean()),
        "simulator_accuracy": float((result.predictions == y_test).mean()),
        "disagreements": int(differ.sum()),
        "disagreements_without_tie": int((differ & ~result.tie_mask).sum()),
        "neuron_ties": result.ties.tolist(),
        "decoder_ties": result.decoder_ties,
    }
    print(figures)
    return figures


@pytest.mark.slow
def test_dense_mnist_simulator_equals_keras_on_all_test_images(data_dir):
    (x, y), (x_test, y_test) = datasets.load("mnist", data_dir)
    model = train_sharpened(whetstone.models.dense_mnist(), x, y, epochs=8, start_epoch=1, steps=2)
    figures = compare_on_test_set(model, x_test, y_test)
    assert figures["disagreements_without_tie"] == 0
    assert figures["keras_accuracy"] > 0.9


@pytest.mark.slow
def test_conv_mnist_simulator_equals_keras_on_all_test_images(data_dir):
    (x, y), (x_test, y_test) = datasets.load("mnist", data_dir)
    model = whetstone.models.conv_mnist(filters=(8, 16))
    model = train_sharpened(model, x[:15000], y[:15000], epochs=8, start_epoch=1, steps=2)
    figures = compare_on_test_set(model, x_test, y_test)
    assert figures["disagreements_without_tie"] == 0
    assert figures["keras_accuracy"] > 0.85


def test_raw_uint8_pixels_are_refused_and_binary_uint8_accepted():
    stage = Stage("d", "dense", (2,), (1,), np.ones((2, 1), "float32"), np.zeros(1, "float32"))
    net = SpikingNetwork((2,), [stage])
    with pytest.raises(ValueError, match=r"uint8 with values up to 255.*x / 255"):
        run(net, np.array([[0, 255]], np.uint8))
    assert run(net, np.array([[0, 1]], np.uint8)).output_spikes.tolist() == [[1]]


# ---------------------------------------------------------------- DAG networks


@given(cases(dag=True, n=(1, 6)))
@settings(max_examples=25, deadline=None)
def test_dag_paths_agree(case):
    """A DAG's spikes, ties and synaptic operations are the same on every path; the
    pipelined path aligns each sample's spikes through the edge delays."""
    net, x = case
    batch = run(net, x, mode="batch")
    for mode in ("fast", "timestep"):
        other = run(net, x, mode=mode)
        np.testing.assert_array_equal(other.output_spikes, batch.output_spikes)
        np.testing.assert_array_equal(other.sample_ties, batch.sample_ties)
        np.testing.assert_array_equal(other.sample_spikes, batch.sample_spikes)
        np.testing.assert_array_equal(other.synaptic_operations, batch.synaptic_operations)
    assert batch.latency == net.depths[-1] == max(net.depths)


def test_dag_equals_explicit_concatenation():
    """A stage reading two sources computes on their spikes concatenated (the same
    network written with the concatenation by hand, as one stage's weights)."""
    rng = np.random.default_rng(3)
    a = Stage("a", "dense", (3,), (4,), rng.normal(size=(3, 4)).astype("f4"))
    b = Stage("b", "dense", (4,), (2,), rng.normal(size=(4, 2)).astype("f4"))
    w = rng.normal(size=(6, 3)).astype("f4")
    c = Stage("c", "dense", (6,), (3,), w, sources=(0, 1))
    net = SpikingNetwork((3,), [a, b, c])
    assert net.depths == [1, 2, 3] and net.stages[2].delays == (1, 0) and net.latency == 3
    x = rng.normal(size=(20, 3)).astype("f4")
    sa = (x @ a.weights - 0.5 >= 0).astype("f4")
    sb = (sa @ b.weights - 0.5 >= 0).astype("f4")
    expected = (np.concatenate([sa, sb], axis=1) @ w - 0.5 >= 0).astype(np.uint8)
    for mode in ("batch", "fast", "timestep"):
        np.testing.assert_array_equal(run(net, x, mode=mode).output_spikes, expected)
    assert [s.shape for s in stage_spikes(net, x)] == [(20, 4), (20, 2), (20, 3)]
