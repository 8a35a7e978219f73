"""Shared test helpers: stage builders, the one random-network strategy, trained models.

Test modules import these (``from _helpers import networks``: pytest puts ``tests/`` on
``sys.path``); they never import each other, and only the tests of the benchmarks
themselves (``test_benchmarks*.py``, ``test_hardware_benchmarks.py``,
``test_peer_nengodl.py``) import the ``benchmarks`` package.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import strategies as st

from whetstone.network import KeyDecoder, ReadoutDecoder, SpikingNetwork, Stage, output_length

ROOT = Path(__file__).resolve().parents[1]
MODELS = Path(os.environ.get("WHETSTONE_MODEL_CACHE", ROOT / "benchmarks" / "results" / "models"))


# ---------------------------------------------------------------- stages


def dense_stage(rng, name, n_in, n_out, threshold=0.5) -> Stage:
    """A dense stage with normal weights and bias."""
    weights = rng.normal(0, 0.5, (n_in, n_out)).astype("float32")
    bias = rng.normal(0, 0.3, n_out).astype("float32")
    return Stage(name, "dense", (n_in,), (n_out,), weights, bias, threshold)


def conv_stage(rng, name, shape, channels, kernel, stride, padding, threshold=0.5) -> Stage:
    """A square 2-D conv stage with normal kernel and per-channel bias."""
    out = tuple(output_length(n, kernel, stride, 1, padding) for n in shape[:-1])
    weights = rng.normal(0, 0.6, (kernel, kernel, shape[-1], channels)).astype("float32")
    bias = rng.normal(0, 0.3, channels).astype("float32")
    return Stage(name, "conv", shape, (*out, channels), weights, bias, threshold,
                 strides=(stride, stride), padding=padding)  # fmt: skip


def pool_stage(name, shape, size, stride, padding) -> Stage:
    """A square 2-D OR-pool."""
    out = tuple(output_length(n, size, stride, 1, padding) for n in shape[:-1])
    return Stage(name, "pool", shape, (*out, shape[-1]), pool_size=(size, size),
                 strides=(stride, stride), padding=padding)  # fmt: skip


KEY = KeyDecoder(np.repeat(np.eye(10), 10, axis=1))
"""A 10-class key of 100 neurons, ten per class."""


def keras_io_convnet(rng, encoding="host") -> SpikingNetwork:
    """The keras.io MNIST convnet: Conv2D 32 and 64 (3x3), max-pooling, a dense key head."""
    stages = [
        conv_stage(rng, "conv_1", (28, 28, 1), 32, 3, 1, "valid"),
        pool_stage("pool_1", (26, 26, 32), 2, 2, "valid"),
        conv_stage(rng, "conv_2", (13, 13, 32), 64, 3, 1, "valid"),
        pool_stage("pool_2", (11, 11, 64), 2, 2, "valid"),
        dense_stage(rng, "dense", 5 * 5 * 64, 100),
    ]
    return SpikingNetwork((28, 28, 1), stages, KEY, encoding)


def small_convnet(rng, encoding="host") -> SpikingNetwork:
    """conv 'same' -> OR-pool -> strided conv -> dense -> key (8x8x1 inputs)."""
    conv1 = Stage("c1", "conv", (8, 8, 1), (8, 8, 3), rng.normal(size=(3, 3, 1, 3)).astype("f4"),
                  rng.normal(size=3).astype("f4") * 0.3, padding="same")  # fmt: skip
    pool = Stage("p", "pool", (8, 8, 3), (4, 4, 3), pool_size=(2, 2), strides=(2, 2))
    conv2 = Stage("c2", "conv", (4, 4, 3), (2, 2, 4), rng.normal(size=(2, 2, 3, 4)).astype("f4"),
                  rng.normal(size=4).astype("f4"), strides=(2, 2))  # fmt: skip
    w = rng.normal(size=(16, 6)).astype("float32")
    dense = Stage("d", "dense", (16,), (6,), w, rng.normal(size=6).astype("float32"))
    key = KeyDecoder(rng.integers(0, 2, (3, 6)))
    return SpikingNetwork((8, 8, 1), [conv1, pool, conv2, dense], key, input_encoding=encoding)


# ---------------------------------------------------------------- the random-network strategy


def _values(rng, shape, grid: bool) -> np.ndarray:
    """Normal float32 values, or multiples of 1/4 (their sums hit thresholds: ties)."""
    values = rng.normal(0, 0.6, shape)
    return (np.round(values * 4) / 4 if grid else values).astype(np.float32)


geometry = st.tuples(
    st.integers(1, 2),  # rank
    st.lists(st.integers(1, 9), min_size=2, max_size=2),  # sizes
    st.integers(1, 3),  # kernel
    st.integers(1, 3),  # stride
    st.integers(1, 2),  # dilation
    st.sampled_from(["valid", "same"]),
    st.integers(1, 3),  # c_in
    st.integers(1, 3),  # c_out
)
"""One window geometry: rank, input sizes, kernel, stride, dilation, padding, channels."""


@st.composite
def networks(
    draw,
    ranks=(0, 1, 2),
    dilation: bool = True,
    square: bool = False,
    sizes=(3, 7),
    windows=(1, 3),
    channels=(1, 3),
    units=(1, 8),
    window_stages=(0, 3),
    encodings=("host", "binary"),
    decoders=("none", "key", "readout", "softmax"),
    thresholds=(0.5, 0.0, 1.0, -0.25),
    position_bias: bool = True,
    on_chip: bool = False,
    dag: bool = False,
) -> SpikingNetwork:
    """Random chains: conv / OR-pool stages on a rank-1 or rank-2 input, then dense stages.

    ``dag=True``: a DAG instead: stages may also read an earlier stage than the one
    before (a skip edge, delayed to align; see :func:`_skips`), and at least one does
    where the chain has room.

    Weights are normal or on a 1/4 grid (exact ties). The options restrict the draw to
    what a back end accepts (e.g. ``dilation=False`` for Nengo, ``ranks=(0, 2)``,
    ``square=True`` for NIR) and size it; ``on_chip=True`` keeps at least one stage on
    the chip (a host encoder alone is refused by the chip back ends).

    Example:
        >>> net = networks(ranks=(0,)).example()                     # doctest: +SKIP
    """
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    grid = draw(st.booleans())
    theta = float(np.float32(draw(st.sampled_from(thresholds))))
    rank = draw(st.sampled_from(ranks))
    shape = (*(draw(st.integers(*sizes)) for _ in range(rank)), draw(st.integers(*channels)))
    if rank == 0:
        shape = (draw(st.integers(1, 12)),)
    stages = []
    for i in range(draw(st.integers(*window_stages)) if rank else 0):
        kind = draw(st.sampled_from(["conv", "conv", "pool"]))
        window = tuple(draw(st.integers(*windows)) for _ in range(rank))
        window = (window[0],) * rank if square or draw(st.booleans()) else window
        strides = tuple(draw(st.integers(1, 2)) for _ in range(rank))
        dilate = tuple(draw(st.integers(1, 2)) if dilation else 1 for _ in range(rank))
        padding = draw(st.sampled_from(["valid", "same"]))
        spatial = [
            output_length(n, k, s, d, padding)
            for n, k, s, d in zip(shape[:-1], window, strides, dilate, strict=True)
        ]
        if min(spatial) < 1:
            break
        geometry = {"strides": strides, "dilation": dilate, "padding": padding}
        if kind == "pool":
            out = (*spatial, shape[-1])
            stage = Stage(f"pool_{i}", "pool", shape, out, pool_size=window, **geometry)
        else:
            c_out = draw(st.integers(*channels))
            out = (*spatial, c_out)
            biases = [None, "channel", "position"] if position_bias else [None, "channel"]
            bias = {
                None: None,
                "channel": _values(rng, (c_out,), grid),
                "position": _values(rng, out, grid),
            }[draw(st.sampled_from(biases))]
            kernel = _values(rng, (*window, shape[-1], c_out), grid)
            stage = Stage(f"conv {i}", "conv", shape, out, kernel, bias, theta, **geometry)
        stages.append(stage)
        shape = out
    least = 0 if stages else 1
    least += on_chip and len(stages) + least < 2
    least = max(least, 3 - len(stages)) if dag else least  # room for a skip edge
    for i in range(draw(st.integers(least, max(least, 2)))):
        n = draw(st.integers(*units))
        bias = _values(rng, (n,), grid) if draw(st.booleans()) else None
        w = _values(rng, (int(np.prod(shape)), n), grid)
        stages.append(Stage(f"dense.{i}", "dense", shape, (n,), w, bias, theta))
        shape = (n,)
    if dag:
        stages = _skips(draw, rng, stages, grid)
    width = int(np.prod(shape))
    decoder = draw(st.sampled_from(decoders))
    classes = draw(st.integers(2, 4))
    if decoder == "key":
        decoder = KeyDecoder(rng.integers(0, 2, size=(classes, width)))
    elif decoder in ("readout", "softmax"):
        activation = "softmax" if decoder == "softmax" else "linear"
        w, b = _values(rng, (width, classes), grid), _values(rng, (classes,), grid)
        decoder = ReadoutDecoder(w, b, activation)
    else:
        decoder = None
    encoding = draw(st.sampled_from(encodings))
    if on_chip and len(stages) == 1:
        encoding = "binary"
    return SpikingNetwork(stages[0].input_shape, stages, decoder, encoding, {"source": "test"})


def _skips(draw, rng, stages: list[Stage], grid: bool) -> list[Stage]:
    """Give dense and conv stages an extra source: an earlier stage whose output fits
    (its size a multiple of the stage's leading dims; for a conv, the same spatial shape),
    its channels appended to (or put before) the stage's input."""
    out = list(stages)
    candidates = [k for k in range(2, len(out)) if out[k].kind != "pool"]
    forced = draw(st.sampled_from(candidates)) if candidates else None
    for k in candidates:
        if k != forced and not draw(st.booleans()):
            continue
        stage = out[k]
        lead = int(np.prod(stage.input_shape[:-1]))
        fits = [  # a conv reads sources of its own spatial shape (as Concatenate gives)
            j for j in range(k - 1) if out[j].num_neurons % lead == 0
            and (stage.kind == "dense" or out[j].output_shape[:-1] == stage.input_shape[:-1])
        ]  # fmt: skip
        if not fits:
            continue
        j = draw(st.sampled_from(fits))
        extra = out[j].num_neurons // lead
        shape = (*stage.input_shape[:-1], stage.input_shape[-1] + extra)
        if stage.kind == "dense":
            rows = stage.weights.reshape(lead, -1, stage.num_neurons)
            more = _values(rng, (lead, extra, stage.num_neurons), grid)
            weights = np.concatenate([rows, more], axis=1).reshape(-1, stage.num_neurons)
        else:
            more = _values(rng, (*stage.window, extra, stage.weights.shape[-1]), grid)
            weights = np.concatenate([stage.weights, more], axis=-2)
        first = draw(st.booleans())  # the skip's channels first or last
        if first:
            weights = (
                np.roll(weights.reshape(lead, shape[-1], -1), extra, axis=1).reshape(weights.shape)
                if stage.kind == "dense"
                else np.roll(weights, extra, axis=-2)
            )
        sources = (j, k - 1) if first else (k - 1, j)
        out[k] = Stage(stage.name, stage.kind, shape, stage.output_shape, weights, stage.bias,
                       stage.threshold, stage.strides, stage.padding, stage.dilation,
                       sources=sources)  # fmt: skip
    return out


@st.composite
def cases(draw, n=(1, 12), **options) -> tuple[SpikingNetwork, np.ndarray]:
    """A random network (:func:`networks` with ``options``) and a batch of its inputs."""
    net = draw(networks(**options))
    return net, inputs(net, draw(st.integers(*n)), draw(st.integers(0, 2**16)))


def inputs(net: SpikingNetwork, n: int = 16, seed: int = 0) -> np.ndarray:
    """``n`` inputs for ``net``: 0/1 for a binary network, multiples of 1/4 in [-1, 1] else."""
    rng = np.random.default_rng(seed)
    if net.input_encoding == "binary":
        return rng.integers(0, 2, size=(n, *net.input_shape)).astype(np.float32)
    return rng.integers(-4, 5, size=(n, *net.input_shape)).astype(np.float32) / 4


# ---------------------------------------------------------------- trained models


def trained_model(name: str):
    """The cached sharpened reference model ``name`` (``benchmarks/results/models``).

    Skips when the model has not been trained (``python -m benchmarks.trained NAME``).
    """
    import keras

    import whetstone  # noqa: F401  (registers the layers)

    path = MODELS / f"{name}.keras"
    if not path.is_file():
        pytest.skip(f"{path} not trained; run python -m benchmarks.trained {name}")
    return keras.models.load_model(path)


def trained_network(name: str) -> SpikingNetwork:
    """:func:`trained_model` converted to a SpikingNetwork."""
    from whetstone import convert

    return convert.to_spiking(trained_model(name))


# ================================================================ Keras conversion helpers
# (shared by test_convert.py and test_convert_layers.py; Keras is imported inside each
# function, so the modules above that know no Keras stay light)


def randomize(model, rng, positive_gamma=False):
    """Random biases and BatchNorm statistics (Keras starts them at 0 and 1)."""
    import keras

    from whetstone import convert

    L = keras.layers
    for layer in convert.layer_chain(model):
        if isinstance(layer, (L.Dense, L.Conv1D, L.Conv2D)) and layer.use_bias:
            layer.bias.assign(rng.normal(0, 0.5, layer.bias.shape))
        if isinstance(layer, L.BatchNormalization):
            n = layer.gamma.shape[0]
            low = 0.2 if positive_gamma or layer.name.startswith("pos") else -2.0
            gamma = rng.uniform(low, 2, n) * rng.choice([1, -1] if low < 0 else [1], n)
            layer.gamma.assign(gamma)
            layer.beta.assign(rng.normal(0, 1, n))
            layer.moving_mean.assign(rng.normal(0, 0.5, n))
            layer.moving_variance.assign(rng.uniform(0.05, 2, n))


def last_spikes(model):
    """The Keras layer whose output is the network's last spikes, or None.

    That is the last spiking layer or max pool of spikes; None when the last stage is a
    max pool of normalised spikes (its Keras output is ``a OR(s) + b``, not spikes).
    """
    import keras

    from whetstone import convert
    from whetstone.layers import Spiking

    L = keras.layers
    binary, last = False, None
    for layer in convert.layer_chain(model):
        if isinstance(layer, Spiking):
            binary, last = True, layer
        elif isinstance(layer, (L.MaxPooling1D, L.MaxPooling2D)):
            last = layer if binary else None
        elif not isinstance(layer, (L.Dropout, L.Flatten, L.Reshape)):
            binary = False
    return last


def keras_reference(model, x):
    """Keras's last spikes (None if the last stage has no Keras twin) and predicted classes."""
    import keras

    last = last_spikes(model)
    outputs = [model.outputs[0]] if last is None else [model.outputs[0], last.output]
    values = keras.Model(model.inputs, outputs).predict(x, verbose=0, batch_size=256)
    output = values if last is None else values[0]
    spikes = None if last is None else values[1].reshape(len(x), -1)
    return spikes, output.reshape(len(x), -1).argmax(axis=1)


def assert_agrees(model, x, input_encoding="host"):
    """Simulator == Keras on every sample without a tie; fast == timestep everywhere."""
    from whetstone import simulate
    from whetstone.convert import to_spiking

    net = to_spiking(model, input_encoding=input_encoding)
    result = simulate.run(net, x)
    spikes, predictions = keras_reference(model, x)
    no_tie = result.sample_ties.sum(axis=1) == 0  # no neuron within 1e-6 of threshold
    assert no_tie.mean() >= 0.9, f"too many ties: {result.ties}"
    if spikes is not None:
        got = result.output_spikes.reshape(len(x), -1)
        np.testing.assert_array_equal(got[no_tie], spikes[no_tie])
    ok = ~result.tie_mask  # also no near-equal readout logits
    np.testing.assert_array_equal(result.predictions[ok], predictions[ok])
    timestep = simulate.run(net, x, mode="timestep")
    np.testing.assert_array_equal(timestep.output_spikes, result.output_spikes)
    np.testing.assert_array_equal(timestep.ties, result.ties)
    np.testing.assert_array_equal(timestep.spike_counts, result.spike_counts)
    return net, result


def refused(model, *fragments, **kwargs) -> str:
    """The ConversionError message for ``model``, which must contain every fragment."""
    from whetstone.convert import ConversionError, to_spiking

    with pytest.raises(ConversionError) as info:
        to_spiking(model, **kwargs)
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, message
    return message


# ---------------------------------------------------------------- real write errors


def limit_file_size() -> None:
    """For ``subprocess.run(preexec_fn=...)``: the kernel refuses the child's writes past
    100 kB (``EFBIG``, "File too large"), a real write error like a full disk."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of a kill
    resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))


# ---------------------------------------------------------------- benchmark smoke runs


def benchmark_smoke(folder: Path, data_dir: Path, *suites: str) -> tuple[Path, str]:
    """``python -m benchmarks run SUITES --quick`` into ``folder/results``, then ``report``;
    returns the results folder and the benchmark README's text. Each in a fresh process
    (quick mode changes globals)."""
    out = folder / "results"
    env = {**os.environ, "WHETSTONE_DATA": str(data_dir), "TF_CPP_MIN_LOG_LEVEL": "3"}
    for args in (
        ["run", *suites, "--quick", "--out", str(out), "--data", str(data_dir)],
        ["report", "--results", str(out), "--no-readme"],
    ):
        done = subprocess.run(
            [sys.executable, "-m", "benchmarks", *args],
            cwd=ROOT, env=env, capture_output=True, text=True,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr[-4000:]
    return out, (folder / "README.md").read_text()


def check_model_suite(out: Path, text: str, suite: str, models: list[str]) -> None:
    """A quick model suite's JSON, CSV and report rows: exact back ends agree exactly."""
    result = json.loads((out / f"suite_{suite}.json").read_text())
    assert result["quick"] is True
    assert {"versions", "machine", "command", "date", "seed", "wall_seconds"} <= set(result)
    assert [row["model"] for row in result["summary"]] == models
    assert result["subsets"]["loihi"] == result["subsets"]["nest"] == dict.fromkeys(models, 100)
    for row in result["summary"]:
        for key in ("baseline_accuracy", "keras_accuracy", "reference_accuracy"):
            assert 0 <= row[key] <= 1
        # Exact back ends agree with the reference, whatever the (tiny) model learnt.
        assert row["nengo_agreement"] == 1.0
        assert row["nir_round_trip_agreement"] == 1.0
        assert row["nest_agreement"] >= 0.98
        # One step per stage: dense 2 layers; conv 2 x (conv, OR-pool) + a 256-wide
        # spiking layer; readouts on the host.
        assert row["timesteps"] == (2 if row["model"] == "dense_mnist" else 5)
        assert row["decoder"] == "readout"
    header = (out / f"suite_{suite}.csv").read_text().splitlines()[0]
    assert header.startswith("model,dataset,baseline_accuracy,keras_accuracy")
    for model in models:
        assert f"| {model} |" in text
        assert (out / f"sharpening_{model}.png").stat().st_size > 1000
        assert f"sharpening_{model}.png" in text
