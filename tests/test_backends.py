"""The one conformance test every registered back end passes (the Backend contract).

On random networks it computes what the reference simulator computes (ties, counted by
the reference, are the only allowed difference); it refuses an empty batch, a wrong
shape and NaN with a ValueError that says so; its export loads back as the same
network. A back end whose extra is not installed is skipped, never silently passed.
"""

from __future__ import annotations

import inspect
import os
import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path

import numpy as np
import pytest
from _helpers import ROOT, inputs, networks
from hypothesis import HealthCheck, assume, given, settings

from whetstone import backends, simulate
from whetstone.files import TargetExistsError
from whetstone.network import SpikingNetwork, Stage

EXAMPLES = {"nengo": 8, "nir": 15, "loihi": 3, "spinnaker": 3}
"""Random networks per back end (the emulators and NEST take seconds per network)."""

# what every back end accepts: flat or 2-D inputs, square windows, no dilation
CONTRACT = networks(ranks=(0, 2), dilation=False, square=True, on_chip=True, sizes=(3, 6))
# the same as DAGs: skip edges, delayed to align (small: the relays add populations)
DAG_CONTRACT = networks(ranks=(0, 2), dilation=False, square=True, on_chip=True, sizes=(3, 5),
                        dag=True, window_stages=(1, 3), units=(1, 5))  # fmt: skip


def _backend(name: str):
    backend = backends.get(name)
    if not backend.is_available():
        pytest.skip(f"{name}: its extra ({backend.extra}) is not installed")
    return backend


def _small_net() -> SpikingNetwork:
    rng = np.random.default_rng(0)
    encoder = Stage("e", "dense", (4,), (5,), rng.normal(size=(4, 5)).astype("float32"))
    hidden = Stage("h", "dense", (5,), (3,), rng.normal(size=(5, 3)).astype("float32"))
    return SpikingNetwork((4,), [encoder, hidden])


def test_every_back_end_is_registered_from_its_own_file():
    assert backends.names() == ["loihi", "nengo", "nir", "spinnaker"]
    for name in backends.names():
        backend = backends.get(name)
        assert backend.name == name
        for method in ("build", "run", "export", "resources", "load", "is_available"):
            assert callable(getattr(backend, method)), (name, method)


@pytest.mark.parametrize("name", backends.names())
def test_every_back_end_has_the_same_signatures(name):
    """``build``/``run``/``export``/``resources`` take the network first, then keywords;
    ``build`` returns one native object (no tuple)."""
    backend = backends.get(name)

    def parameters(method: str) -> list[inspect.Parameter]:
        return list(inspect.signature(getattr(backend, method)).parameters.values())

    keyword_only = inspect.Parameter.KEYWORD_ONLY
    for method, first in (("build", ["net"]), ("resources", ["net"]), ("run", ["net", "x"]),
                          ("export", ["net", "path"]), ("load", ["path"])):  # fmt: skip
        params = parameters(method)
        assert [p.name for p in params[: len(first)]] == first, (method, params)
        rest = params[len(first) :]
        assert all(p.default is not p.empty or p.kind is p.VAR_KEYWORD for p in rest), method
        assert all(p.kind is not p.VAR_POSITIONAL for p in rest), method
    run, export = (
        dict((p.name, p) for p in parameters("run")),
        dict((p.name, p) for p in parameters("export")),
    )
    assert run["compare_reference"].kind is run["progress"].kind is keyword_only
    assert export["force"].kind is export["x"].kind is export["y"].kind is keyword_only
    if backend.is_available():
        assert not isinstance(backend.build(_small_net()), tuple)


@pytest.mark.parametrize("name", backends.names())
def test_equals_the_reference_on_random_networks(name):
    _conforms(name, CONTRACT)


@pytest.mark.parametrize("name", backends.names())
def test_equals_the_reference_on_random_dag_networks(name):
    """Random DAGs (skip edges with aligned delays) are exact on every back end too."""
    _conforms(name, DAG_CONTRACT, dag=True)


def _conforms(name: str, strategy, dag: bool = False) -> None:
    backend = _backend(name)

    health = [HealthCheck.too_slow, HealthCheck.filter_too_much]

    @settings(max_examples=EXAMPLES[name], deadline=None, derandomize=True,
              suppress_health_check=health)  # fmt: skip
    @given(strategy)
    def check(net):
        assume(not dag or not net.is_chain)  # a DAG draw may find no room for a skip
        if name == "nir":  # NIR pads symmetrically: some windows have no NIR form
            try:
                backend.build(net)
            except ValueError as error:
                assert "has no NIR equivalent" in str(error)
                assume(False)
        x = inputs(net, n=12)
        result = backend.run(net, x, compare_reference=True, **backend.exact_options)
        reference = simulate.run(net, x)
        assert result.predictions.shape == (len(x),)
        assert result.output_spikes.shape == (len(x), int(np.prod(net.output_shape)))
        record = result.agreement
        assert record["images"] == len(x)
        assert record["output_spikes_differing_not_ties"] == 0, record
        assert record["differing_not_ties"] == 0, record
        clear = ~backends.gate_ties(reference)
        np.testing.assert_array_equal(
            result.output_spikes[clear], reference.output_spikes.reshape(len(x), -1)[clear]
        )
        assert result.build_seconds >= 0 and result.run_seconds >= 0

    check()


@pytest.mark.parametrize("name", backends.names())
@pytest.mark.parametrize(
    ("x", "message"),
    [
        (np.zeros((0, 4), np.float32), "empty batch"),
        (np.zeros((3, 5), np.float32), "shape"),
        (np.full((2, 4), np.nan, np.float32), "NaN"),
    ],
    ids=["empty", "wrong-shape", "nan"],
)
def test_refuses_bad_inputs(name, x, message):
    backend = _backend(name)
    with pytest.raises(ValueError, match=message):
        backend.run(_small_net(), x, **backend.exact_options)


@pytest.mark.parametrize("name", backends.names())
def test_export_loads_back_as_the_same_network(name, tmp_path):
    backend = _backend(name)
    net = _small_net()
    path = backend.export(net, tmp_path / f"{name}.out")
    assert backend.load(path) == net
    with pytest.raises(TargetExistsError):
        backend.export(net, path)
    resources = backend.resources(net)
    assert isinstance(resources, dict) and resources


def _python_without_tensorflow(folder: Path) -> tuple[list[str], dict]:
    """A Python environment like this one without TensorFlow and Keras: the interpreter
    without its site-packages (``-S``), a folder linking every installed package but
    those, and this checkout first. Returns the command and its environment."""
    site = folder / "site-packages"
    site.mkdir()
    paths = sysconfig.get_paths()
    for entry in {*Path(paths["purelib"]).iterdir(), *Path(paths["platlib"]).iterdir()}:
        hidden = entry.name.lower().startswith(("tensorflow", "keras", "tf_keras", "_keras"))
        if not hidden and not (site / entry.name).exists():
            (site / entry.name).symlink_to(entry)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(site)])}
    return [sys.executable, "-S"], env


def test_network_simulator_and_nengo_need_no_tensorflow_or_keras(tmp_path):
    """A saved network runs on the simulator and Nengo where TF and Keras are not installed."""
    pytest.importorskip("nengo")
    net = _small_net()
    net.save(tmp_path / "net.h5")
    x = np.random.default_rng(1).normal(size=(20, 4)).astype("float32")
    np.save(tmp_path / "x.npy", x)
    expected = simulate.run(net, x).predictions
    script = textwrap.dedent(
        f"""
        import importlib.util
        assert importlib.util.find_spec("tensorflow") is importlib.util.find_spec("keras") is None
        import numpy as np
        from whetstone.network import SpikingNetwork
        from whetstone import simulate
        from whetstone.backends import get
        net = SpikingNetwork.load({str(tmp_path / "net.h5")!r})
        x = np.load({str(tmp_path / "x.npy")!r})
        reference = simulate.run(net, x).predictions
        nengo = get("nengo").run(net, x).predictions
        print(",".join(map(str, reference)), ",".join(map(str, nengo)))
        """
    )
    python, env = _python_without_tensorflow(tmp_path)
    done = subprocess.run([*python, "-c", script], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    reference, nengo = done.stdout.split()
    assert reference == nengo == ",".join(map(str, expected))


TOY_BACK_END = '''
"""A back end that is only this file: the reference simulator under another name."""
from whetstone import simulate
from whetstone.backends import BackendResult, compared, register


@register("toy")
class Toy:
    extra = "none"

    def is_available(self):
        return True

    def build(self, net, **options):
        return net

    def run(self, net, x, *, compare_reference=False, progress=None, **options):
        x = net.check_input(x, "toy run")
        r = simulate.run(net, x)
        result = BackendResult(r.predictions, r.output_spikes.reshape(len(x), -1), r.spike_counts)
        return compared(net, x, result) if compare_reference else result

    def export(self, net, path, *, force=False, x=None, y=None, **options):
        net.save(path, force=force)
        return path

    def resources(self, net, **options):
        return {"neurons": net.num_neurons}

    def load(self, path):
        from whetstone.network import SpikingNetwork

        return SpikingNetwork.load(path)
'''


def test_adding_a_back_end_touches_one_file(tmp_path):
    """A new module beside the others (here: a folder added to the package's path) is a
    back end for the registry and the CLI's ``--to``: nothing else changes."""
    (tmp_path / "toy.py").write_text(TOY_BACK_END)
    _small_net().save(tmp_path / "net.h5")
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(30, 4)).astype("float32"), rng.integers(0, 3, 30)
    np.savez(tmp_path / "data.npz", x=x, y=y)
    script = textwrap.dedent(
        f"""
        import whetstone.backends as backends
        backends.__path__.append({str(tmp_path)!r})  # as if toy.py were in whetstone/backends
        from whetstone.cli import main
        print(backends.names())
        for args in (["verify", "--help"], ["verify", "net.h5", "--to", "toy",
                                            "--data", "data.npz", "--json"]):
            try:
                main(args, prog_name="whetstone")
            except SystemExit as exit:
                print("exit", exit.code)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    assert lines[0] == str(["loihi", "nengo", "nir", "spinnaker", "toy"])
    assert "--to [loihi|nengo|nir|spinnaker|toy]" in done.stdout
    assert '"stage": "toy"' in done.stdout and '"passed": true' in done.stdout
    assert lines.count("exit 0") == 2
