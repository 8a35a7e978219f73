"""SpikingNetwork: stage geometry and counts, decoders, versioned atomic save/load."""

import itertools
import math
import os

import h5py
import numpy as np
import pytest
from _helpers import cases, geometry
from hypothesis import HealthCheck, example, given, settings

from whetstone import network
from whetstone.network import (
    FORMAT_VERSION,
    KeyDecoder,
    NetworkFileError,
    ReadoutDecoder,
    SpikingNetwork,
    Stage,
    same_padding,
)
from whetstone.simulate import run, stage_spikes


def brute_taps(input_shape, window, strides, dilation, padding):
    """{(output position, input position)} pairs by explicit loops."""
    spatial = input_shape[:-1]
    pads = [
        same_padding(n, k, s, d)[0] if padding == "same" else 0
        for n, k, s, d in zip(spatial, window, strides, dilation, strict=True)
    ]
    out = [
        network.output_length(n, k, s, d, padding)
        for n, k, s, d in zip(spatial, window, strides, dilation, strict=True)
    ]
    pairs = []
    for o in itertools.product(*map(range, out)):
        for tap in itertools.product(*map(range, window)):
            i = tuple(
                oo * s + t * d - p
                for oo, t, s, d, p in zip(o, tap, strides, dilation, pads, strict=True)
            )
            if all(0 <= ii < n for ii, n in zip(i, spatial, strict=True)):
                pairs.append((o, i))
    return out, pairs


def make_conv(rank, sizes, k, s, d, padding, c_in, c_out):
    shape = (*sizes[:rank], c_in)
    window, strides, dilation = (k,) * rank, (s,) * rank, (d,) * rank
    out, pairs = brute_taps(shape, window, strides, dilation, padding)
    kernel = np.ones((*window, c_in, c_out), np.float32)
    stage = Stage("c", "conv", shape, (*out, c_out), kernel, None, 0.5, strides, padding, dilation)
    return stage, out, pairs


@settings(max_examples=60, deadline=None)
@given(geometry)
@example((1, [1, 1], 2, 1, 2, "same", 1, 1))  # one output, all its taps in the padding
def test_conv_counts_match_brute_force(geom):
    rank, sizes, k, s, d, padding, c_in, c_out = geom
    if math.prod(network.output_length(n, k, s, d, padding) for n in sizes[:rank]) == 0:
        return
    stage, out, pairs = make_conv(*geom)
    assert stage.num_neurons == math.prod(out) * c_out
    assert stage.num_synapses == len(pairs) * c_in * c_out
    fan_in = {}
    fan_out = np.zeros(stage.input_shape[:-1], np.int64)
    for o, i in pairs:
        fan_in[o] = fan_in.get(o, 0) + 1
        fan_out[i] += 1
    # Every tap of a neuron can fall in the padding (size 1, dilated 'same'): fan-in 0.
    assert stage.fan_in == max(fan_in.values(), default=0) * c_in
    expected = np.repeat(fan_out[..., None] * c_out, c_in, axis=-1)
    np.testing.assert_array_equal(stage.fan_out_map(), expected)
    assert stage.fan_out == expected.max()
    assert stage.fan_out_map().sum() == stage.num_synapses


def test_same_padding_is_keras_convention():
    # total = (ceil(n/s)-1)*s + (k-1)*d + 1 - n, the extra one after
    assert same_padding(28, 3) == (1, 1)
    assert same_padding(28, 2, 2) == (0, 0)
    assert same_padding(5, 2, 2) == (0, 1)
    assert same_padding(7, 3, 1, 2) == (2, 2)
    assert same_padding(6, 4) == (1, 2)


def test_dense_and_pool_counts():
    dense = Stage("d", "dense", (3, 4), (5,), np.zeros((12, 5), np.float32))
    assert (dense.num_neurons, dense.num_synapses, dense.fan_in, dense.fan_out) == (5, 60, 12, 5)
    assert dense.dense_matrix().shape == (12, 5)
    pool = Stage(
        "p", "pool", (5, 5, 2), (3, 3, 2), pool_size=(2, 2), strides=(2, 2), padding="same"
    )
    # rows/cols: windows [0,1], [2,3], [4] -> 2+2+1 = 5 taps per axis
    assert pool.num_synapses == 5 * 5 * 2
    assert (pool.fan_in, pool.fan_out) == (4, 1)


def test_conv_has_no_dense_matrix():
    stage, _, _ = make_conv(2, [4, 4], 3, 1, 1, "valid", 1, 1)
    with pytest.raises(ValueError, match="conv stage; only dense stages have a matrix"):
        stage.dense_matrix()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"kind": "lstm"}, "kind must be one of"),
        ({"weights": np.zeros((3, 2), np.float32)}, r"dense weights must have shape \(4, 2\)"),
        ({"bias": np.zeros(3, np.float32)}, r"bias must have shape \(2,\) or \(2,\)"),
        ({"weights": np.full((4, 2), np.nan, np.float32)}, "NaN or Inf"),
    ],
)
def test_stage_validation(kwargs, message):
    base = {"name": "d", "kind": "dense", "input_shape": (4,), "output_shape": (2,)}
    base["weights"] = np.zeros((4, 2), np.float32)
    with pytest.raises(ValueError, match=message):
        Stage(**{**base, **kwargs})


def test_conv_geometry_is_checked():
    with pytest.raises(ValueError, match=r"gives \(3, 3, 2\), not the stated output \(4, 4, 2\)"):
        Stage("c", "conv", (5, 5, 1), (4, 4, 2), np.zeros((3, 3, 1, 2), np.float32))


def test_network_checks_sizes_between_stages():
    a = Stage("a", "dense", (4,), (3,), np.zeros((4, 3), np.float32))
    b = Stage("b", "dense", (2,), (1,), np.zeros((2, 1), np.float32))
    with pytest.raises(ValueError, match="stage 'b' expects 2 inputs"):
        SpikingNetwork((4,), [a, b])
    with pytest.raises(ValueError, match="decoder reads 5 spikes"):
        SpikingNetwork((4,), [a], KeyDecoder(np.eye(5)))


def test_decoders():
    key = KeyDecoder([[1, 1, 0, 0], [0, 0, 1, 1]])
    spikes = np.array([[1, 1, 0, 0], [0, 1, 1, 1], [1, 0, 1, 0]])
    np.testing.assert_array_equal(key.scores(spikes), [[4, -4], [-2, 2], [0, 0]])
    assert key.decode(spikes).tolist() == [0, 1, 0]  # a tied vote goes to the lowest class
    readout = ReadoutDecoder(np.array([[1.0, 0.0], [0.0, 3.0]]), np.array([0.5, 0.0]), "softmax")
    p = 1 / (1 + np.exp(-1.5))  # logits (1.5, 0)
    np.testing.assert_allclose(readout.outputs(np.array([[1, 0]])), [[p, 1 - p]], rtol=1e-6)
    assert readout.decode(np.array([[1, 0], [1, 1]])).tolist() == [0, 1]
    np.testing.assert_allclose(readout.outputs(np.array([[1, 1]])).sum(), 1.0, rtol=1e-6)


def random_network(rng, encoding="host", decoder="key"):
    conv = Stage(
        "conv", "conv", (6, 6, 1), (6, 6, 3),
        rng.normal(size=(3, 3, 1, 3)).astype(np.float32),
        rng.normal(size=(6, 6, 3)).astype(np.float32),  # a position-dependent bias
        0.5, (1, 1), "same", (1, 1),
    )  # fmt: skip
    pool = Stage("pool", "pool", (6, 6, 3), (3, 3, 3), pool_size=(2, 2), strides=(2, 2))
    dense = Stage(
        "dense", "dense", (3, 3, 3), (4,),
        rng.normal(size=(27, 4)).astype(np.float32), rng.normal(size=4).astype(np.float32), 0.0,
    )  # fmt: skip
    dec = (
        KeyDecoder([[1, 1, 0, 0], [0, 0, 1, 1]])
        if decoder == "key"
        else ReadoutDecoder(rng.normal(size=(4, 3)), rng.normal(size=3), "softmax")
    )
    meta = {"source_model": "m", "created": "2026-01-01T00:00:00+00:00"}
    return SpikingNetwork((6, 6), [conv, pool, dense], dec, encoding, meta)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases(dag=False) | cases(dag=True))
def test_the_network_answers_what_every_back_end_asks(case):
    """Host encoder, stages on chip, encoding a batch, decoding outputs: the network's
    answers equal what the reference simulator computes."""
    net, x = case
    host = [net.host_stage] if net.host_stage is not None else []
    assert [id(s) for s in host + net.chip_stages] == [id(s) for s in net.stages]
    assert (net.input_encoding == "host") == bool(host)
    encoded = net.encode(x)
    first = stage_spikes(net, x)[0] if host else x
    np.testing.assert_array_equal(encoded, first.reshape(len(x), -1))
    assert encoded.dtype == np.uint8 and encoded.shape == (len(x), net.encoded_size)
    result = run(net, x)
    np.testing.assert_array_equal(net.decode(result.output_spikes), result.predictions)
    np.testing.assert_array_equal(net.check_input(x.reshape(len(x), -1)), x)


@pytest.mark.parametrize(("encoding", "decoder"), [("host", "key"), ("binary", "readout")])
def test_save_load_roundtrip_is_exact(tmp_path, encoding, decoder):
    net = random_network(np.random.default_rng(1), encoding, decoder)
    path = tmp_path / "net.h5"
    net.save(path)
    loaded = SpikingNetwork.load(path)
    assert loaded == net
    assert network.load(str(path)) == net
    assert os.listdir(tmp_path) == ["net.h5"]  # no temp file left behind
    for a, b in zip(loaded.stages, net.stages, strict=True):
        assert a.weights is None or a.weights.tobytes() == b.weights.tobytes()


def test_equality_sees_one_ulp():
    a = random_network(np.random.default_rng(2))
    b = random_network(np.random.default_rng(2))
    assert a == b
    b.stages[2].weights[0, 0] = np.nextafter(b.stages[2].weights[0, 0], np.float32(np.inf))
    assert a != b


def test_failed_save_leaves_old_file_and_no_temp(tmp_path, monkeypatch):
    path = tmp_path / "net.h5"
    net = random_network(np.random.default_rng(3))
    net.save(path)
    before = path.read_bytes()

    def broken(net, f):
        f.attrs["format"] = "half"
        raise RuntimeError("disk full")

    monkeypatch.setattr(network, "_write", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        net.save(path, force=True)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["net.h5"]


def test_newer_version_is_refused(tmp_path):
    path = tmp_path / "net.h5"
    random_network(np.random.default_rng(4)).save(path)
    with h5py.File(path, "a") as f:
        f.attrs["format_version"] = FORMAT_VERSION + 1
    with pytest.raises(NetworkFileError, match=r"written by a newer whetstone.*upgrade"):
        SpikingNetwork.load(path)


def test_damaged_and_foreign_files_are_refused(tmp_path):
    path = tmp_path / "net.h5"
    random_network(np.random.default_rng(5)).save(path)
    data = path.read_bytes()
    (tmp_path / "cut.h5").write_bytes(data[: len(data) // 2])
    (tmp_path / "text.h5").write_text("hello")
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f["x"] = np.zeros(3)
    with h5py.File(tmp_path / "partial.h5", "w") as f:
        f.attrs["format"] = network.FORMAT_NAME
        f.attrs["format_version"] = FORMAT_VERSION
    for name in ("cut.h5", "text.h5", "other.h5", "partial.h5", "missing.h5"):
        with pytest.raises(NetworkFileError, match=f"not a whetstone network file: .*{name}: "):
            SpikingNetwork.load(tmp_path / name)


def test_summary_lists_every_stage_and_totals():
    net = random_network(np.random.default_rng(6))
    text = net.summary()
    lines = text.splitlines()
    assert lines[0].split() == [
        "stage", "kind", "input", "output", "neurons", "synapses", "fan-in", "fan-out",
    ]  # fmt: skip
    assert lines[2].split()[:2] == ["conv", "conv"]
    # conv 6x6 'same' 3x3: in-bounds taps per axis 2+3+3+3+3+2 = 16 -> 16*16 * 1 * 3
    # synapses; an interior input pixel drives 3x3 positions x 3 channels = 27
    assert lines[2].split()[-4:] == ["108", "768", "9", "27"]
    assert lines[3].split()[-4:] == ["27", "108", "4", "1"]
    assert lines[4].split()[-4:] == ["4", "108", "27", "4"]
    assert lines[-2].split() == ["total", "139", str(768 + 108 + 108)]
    assert lines[-1] == "input (6, 6) encoded on 'host'; decoder KeyDecoder"


# -- crafted files: checked before anything is allocated ---------------------------------


def _saved(tmp_path) -> str:
    path = tmp_path / "net.h5"
    random_network(np.random.default_rng(7)).save(path)
    return str(path)


def _crafted(tmp_path, edit) -> str:
    path = _saved(tmp_path)
    with h5py.File(path, "a") as f:
        edit(f)
    return path


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda f: f.attrs.__setitem__("format_version", 0), "version 0 is not valid"),
        (lambda f: f.attrs.__setitem__("format_version", -3), "version -3 is not valid"),
        (lambda f: f["stages/0002"].attrs.__setitem__("threshold", np.nan), "finite"),
        (lambda f: f["stages/0002"].attrs.__setitem__("threshold", np.inf), "finite"),
        (lambda f: f["stages/0000"].attrs.__setitem__("input_shape", [-6, -6]), "negative"),
        (lambda f: f["stages/0001"].attrs.__setitem__("pool_size", [0, 0]), "at least 1"),
        (
            lambda f: f["stages/0001"].attrs.__setitem__("input_shape", [1 << 20, 1 << 20, 3]),
            "larger than",
        ),
        (lambda f: f.attrs.__setitem__("input_shape", [1 << 30]), "larger than"),
    ],
    ids=["version-0", "version-negative", "nan", "inf", "negative", "pool-0", "huge", "input"],
)
def test_crafted_files_are_refused(tmp_path, edit, message):
    path = _crafted(tmp_path, edit)
    with pytest.raises(NetworkFileError, match=message):
        SpikingNetwork.load(path)


def test_a_dataset_larger_than_the_file_is_refused_before_reading(tmp_path):
    def huge_weights(f):  # 4 GB declared, nothing stored (fill value)
        del f["stages/0002/weights"]
        f["stages/0002"].create_dataset("weights", shape=(1 << 15, 1 << 15), dtype="f4")

    path = _crafted(tmp_path, huge_weights)
    assert os.path.getsize(path) < 100_000
    with pytest.raises(NetworkFileError, match="declares shape"):
        SpikingNetwork.load(path)


def test_a_compressed_bomb_is_refused(tmp_path):
    def bomb(f):
        del f["decoder/key"]
        f["decoder"].create_dataset("key", data=np.zeros((4000, 4000), "f4"), compression="gzip")

    path = _crafted(tmp_path, bomb)
    with pytest.raises(NetworkFileError, match="declares shape"):
        SpikingNetwork.load(path)


def test_memory_error_is_a_network_file_error(tmp_path, monkeypatch):
    path = _saved(tmp_path)

    def out_of_memory(f):
        raise MemoryError("cannot allocate")

    monkeypatch.setattr(network, "_read", out_of_memory)
    with pytest.raises(NetworkFileError, match="cannot allocate"):
        SpikingNetwork.load(path)


@pytest.mark.parametrize("threshold", [np.nan, np.inf, -np.inf])
def test_stage_refuses_a_threshold_that_is_not_finite(threshold):
    with pytest.raises(ValueError, match="threshold must be finite"):
        Stage("d", "dense", (2,), (1,), np.ones((2, 1), "f4"), threshold=threshold)


def test_save_refuses_to_overwrite_without_force(tmp_path):
    path = _saved(tmp_path)
    with pytest.raises(FileExistsError, match="force=True"):
        random_network(np.random.default_rng(8)).save(path)
    random_network(np.random.default_rng(8)).save(path, force=True)
    assert SpikingNetwork.load(path) == random_network(np.random.default_rng(8))


# ---------------------------------------------------------------- DAG networks


def _residual():
    """a -> b -> c, with c also reading a (a skip edge, delayed one step to align)."""
    a = Stage("a", "dense", (2,), (3,), np.ones((2, 3), "float32"))
    b = Stage("b", "dense", (3,), (3,), np.eye(3, dtype="float32"))
    c = Stage("c", "dense", (6,), (2,), np.ones((6, 2), "float32"), sources=(1, 0))
    return SpikingNetwork((2,), [a, b, c], input_encoding="binary")


def test_dag_depths_delays_and_edges():
    net = _residual()
    assert net.depths == [1, 2, 3] and net.latency == 3 and not net.is_chain
    assert net.stages[2].delays == (0, 1)
    edges = net.edges(2)
    assert [(e.source, e.delay, e.operator.input_shape) for e in edges] == [
        (1, 0, (3,)),
        (0, 1, (3,)),
    ]
    assert SpikingNetwork((2,), net.stages[:2]).is_chain


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"delays": (0, 0)}, "arrive at steps"),
        ({"sources": (1, 2)}, "must be earlier stages"),
        ({"sources": (1, -1)}, "only stage 0 reads the network input"),
        ({"input_shape": (7,), "weights": np.ones((7, 2), "float32")}, "expects 7 inputs"),
    ],
)
def test_dag_validation(change, message):
    a, b, c = _residual().stages
    c = Stage(**{**{f: getattr(c, f) for f in ("name", "kind", "input_shape", "output_shape",
                                                 "weights", "sources")}, **change})  # fmt: skip
    with pytest.raises(ValueError, match=message):
        SpikingNetwork((2,), [a, b, c])


def test_unread_stage_is_refused():
    a, b, _ = _residual().stages
    c = Stage("c", "dense", (2,), (1,), np.ones((2, 1), "float32"), sources=(-1,))
    with pytest.raises(ValueError, match="only stage 0"):
        SpikingNetwork((2,), [a, b, c])
    d = Stage("d", "dense", (3,), (1,), np.ones((3, 1), "float32"), sources=(0,))
    with pytest.raises(ValueError, match="read by no other stage"):
        SpikingNetwork((2,), [a, b, d])


def test_dag_save_load_roundtrip(tmp_path):
    net = _residual()
    net.save(tmp_path / "dag.h5")
    loaded = network.load(tmp_path / "dag.h5")
    assert loaded == net and loaded.depths == net.depths


def test_version_1_files_are_read_as_chains(tmp_path):
    """A version-1 file (no sources or delays: every network was a chain) still loads."""
    rng = np.random.default_rng(0)
    stages = [Stage("a", "dense", (2,), (3,), rng.normal(size=(2, 3))),
              Stage("b", "dense", (3,), (2,), rng.normal(size=(3, 2)))]  # fmt: skip
    net = SpikingNetwork((2,), stages, KeyDecoder(np.eye(2)))
    path = tmp_path / "v1.h5"
    net.save(path)
    with h5py.File(path, "r+") as f:  # the version-1 layout: no edge attributes
        f.attrs["format_version"] = 1
        for g in f["stages"].values():
            del g.attrs["sources"], g.attrs["delays"]
    loaded = network.load(path)
    assert loaded == net and loaded.is_chain and loaded.latency == 2
