"""Exports that run: every exported run.py, in a subprocess, from another working folder.

Also the agreement gate of ``verify`` and ``run.py``: ties left out, a default per back end.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from _helpers import dense_stage
from click.testing import CliRunner

import whetstone.backends as registry
from whetstone import simulate
from whetstone.backends import BackendResult, exports
from whetstone.backends import spinnaker as sp
from whetstone.cli import main
from whetstone.network import KeyDecoder, SpikingNetwork


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """A tiny host-encoded network on 28x28 images (the demo data's shape), and inputs."""
    rng = np.random.default_rng(0)
    stages = [dense_stage(rng, "enc", 784, 24, 0.5), dense_stage(rng, "hidden", 24, 16, 0.5),
              dense_stage(rng, "out", 16, 20, 0.5)]  # fmt: skip
    net = SpikingNetwork((28, 28), stages, KeyDecoder(np.repeat(np.eye(10), 2, axis=1)))
    folder = tmp_path_factory.mktemp("exports")
    net.save(folder / "net.h5")
    x = rng.uniform(0, 1, (12, 28, 28)).astype("float32")
    np.savez(folder / "test.npz", x_test=x, y_test=np.arange(12) % 10)
    return {"net": net, "file": folder / "net.h5", "inputs": folder / "test.npz", "x": x}


def exported(model, target: str, folder, *extra):
    result = invoke("export", model["file"], "--to", target, "-o", folder,
                    "--inputs", model["inputs"], *extra)  # fmt: skip
    assert result.exit_code == 0, result.output
    return folder


def run_script(folder, *args, cwd):
    """``python FOLDER/run.py ARGS`` from ``cwd`` (not the export folder)."""
    return subprocess.run([sys.executable, str(folder / "run.py"), *map(str, args)],
                          capture_output=True, text=True, cwd=cwd, timeout=300)  # fmt: skip


def check_run(folder, tmp_path, *args):
    """run.py passes on the shipped inputs; predictions land relative to the working folder."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    done = run_script(folder, *args, "--predictions", "p.npy", cwd=elsewhere)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "agreement with the reference 100.00%" in done.stdout
    shipped = np.load(folder / "inputs.npz")
    np.testing.assert_array_equal(np.load(elsewhere / "p.npy"), shipped["decisions"])
    return done


# ---------------------------------------------------------------- what an export holds


def test_export_ships_inputs_decisions_and_manifest(model, tmp_path):
    folder = exported(model, "nengo", tmp_path / "nengo_run", "-n", "5")
    assert sorted(p.name for p in folder.iterdir()) == [
        "export.json", "inputs.npz", "network.h5", "run.py"
    ]  # fmt: skip
    shipped = np.load(folder / "inputs.npz")
    reference = simulate.run(model["net"], model["x"][:5])
    np.testing.assert_array_equal(shipped["x"], model["x"][:5])
    np.testing.assert_array_equal(shipped["decisions"], reference.predictions)
    assert shipped["y"].tolist() == [0, 1, 2, 3, 4] and shipped["ties"].dtype == bool
    manifest = json.loads((folder / "export.json").read_text())
    assert manifest["backend"] == "nengo" and manifest["latency"] == model["net"].latency
    assert manifest["min_agreement"] == exports.DEFAULT_MIN_AGREEMENT and manifest["inputs"] == 5


def test_export_takes_a_dataset(model, tmp_path):
    result = invoke("--json", "export", model["file"], "--to", "nengo", "-o", tmp_path / "run",
                    "--data", "demo", "-n", "3")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["inputs"] == 3
    assert np.load(tmp_path / "run" / "inputs.npz")["x"].shape == (3, 28, 28)


def test_export_input_errors_exit_2(model, tmp_path):
    both = invoke("export", model["file"], "--to", "nengo", "-o", tmp_path / "a",
                  "--inputs", model["inputs"], "--data", "demo")  # fmt: skip
    assert both.exit_code == 2 and "not both" in both.output
    nir = invoke("export", model["file"], "--to", "nir", "-o", tmp_path / "a.nir",
                 "--inputs", model["inputs"])  # fmt: skip
    assert nir.exit_code == 2 and "ships no inputs" in nir.output
    np.savez(tmp_path / "bad.npz", images=np.zeros((2, 784)))
    bad = invoke("export", model["file"], "--to", "nengo", "-o", tmp_path / "b",
                 "--inputs", tmp_path / "bad.npz")  # fmt: skip
    assert bad.exit_code == 2 and "save them as 'x'" in bad.output
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_spinnaker_export_refuses_what_cannot_map(model, tmp_path):
    with pytest.raises(sp.MappingError, match="at most 256"):
        registry.get("spinnaker").export(model["net"], tmp_path / "run", neurons_per_core=512)
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------- run.py on each target


def test_nengo_run_py_from_another_folder(model, tmp_path):
    folder = exported(model, "nengo", tmp_path / "nengo_run")
    done = check_run(folder, tmp_path)
    assert "on the 12 without a tie" in done.stdout and "accuracy" in done.stdout
    # an inputs file relative to the working folder, without decisions: whetstone computes them
    np.save(tmp_path / "mine.npy", model["x"][:4])
    done = run_script(folder, "mine.npy", cwd=tmp_path)
    assert done.returncode == 0 and "4 inputs from mine.npy" in done.stdout, done.stderr


def test_run_py_exits_1_below_the_gate(model, tmp_path):
    folder = exported(model, "nengo", tmp_path / "nengo_run")
    decisions = (simulate.run(model["net"], model["x"]).predictions + 1) % 10
    np.savez(tmp_path / "wrong.npz", x=model["x"], decisions=decisions)
    done = run_script(folder, "wrong.npz", cwd=tmp_path)
    assert done.returncode == 1 and "below --min-agreement" in done.stderr
    done = run_script(folder, "wrong.npz", "--min-agreement", "0", cwd=tmp_path)
    assert done.returncode == 0, done.stderr


def test_run_py_without_shipped_inputs_says_what_to_give(model, tmp_path):
    registry.get("nengo").export(model["net"], tmp_path / "bare")
    done = run_script(tmp_path / "bare", cwd=tmp_path)
    assert done.returncode != 0 and "python run.py x.npz" in done.stderr


def test_loihi_run_py_on_the_emulator(model, tmp_path):
    if not registry.get("loihi").is_available():
        pytest.skip("nengo-loihi is not installed")
    folder = exported(model, "loihi", tmp_path / "loihi_run")
    manifest = json.loads((folder / "export.json").read_text())
    assert manifest["min_agreement"] == 0.97 and manifest["cores"] == 2
    done = check_run(folder, tmp_path, "--target", "sim")
    assert done.stdout.startswith("sim: 12 inputs")


def test_spinnaker_run_py_on_nest(model, tmp_path):
    pytest.importorskip("nest")
    pytest.importorskip("pyNN.nest")
    folder = exported(model, "spinnaker", tmp_path / "spinnaker_run")
    manifest = json.loads((folder / "export.json").read_text())
    assert manifest["first_step"] == sp.OFFSET and manifest["cores"] == 2
    network = np.load(folder / "network.npz")
    assert int(network["neurons_per_core_0"]) == 16
    done = check_run(folder, tmp_path)
    assert "nest: 12 inputs" in done.stdout
    # images (not spikes) relative to the working folder: encoded with whetstone
    np.savez(tmp_path / "images.npz", x=model["x"][:3])
    done = run_script(folder, "images.npz", cwd=tmp_path)
    assert done.returncode == 0 and "agreement with the reference 100.00%" in done.stdout


# ---------------------------------------------------------------- the gate


def test_agreement_leaves_ties_out():
    report = exports.agreement([1, 0, 3], [1, 2, 3], ties=[False, True, False])
    assert report["agreement"] == pytest.approx(2 / 3) and report["differing_not_ties"] == 0
    assert report["agreement_excluding_ties"] == 1.0
    assert exports.agreement([0], [1], ties=[True])["agreement_excluding_ties"] == 1.0


def _one_wrong(n_wrong: int):
    def run(net, x, progress=None, **options):  # progress: one call for all of x
        predictions = simulate.run(net, x).predictions.copy()
        predictions[:n_wrong] = (predictions[:n_wrong] + 1) % 10
        return BackendResult(predictions, np.zeros((len(x), 20)), np.zeros(3))

    return run


@pytest.mark.parametrize(
    ("target", "extra", "status"),
    [
        ("loihi", [], 0),  # 63/64 = 98.4%: loihi's gate is 0.97 (its 8-bit weights)
        ("loihi", ["--min-agreement", "0.999"], 1),
        ("nengo", [], 1),  # exact back ends: 0.999
    ],
)
def test_verify_gate_is_per_back_end(model, monkeypatch, target, extra, status):
    monkeypatch.setattr(registry.get(target), "run", _one_wrong(1))
    result = invoke("--json", "verify", model["file"], "--to", target, "--data", "demo",
                    "-n", "64", *extra)  # fmt: skip
    assert result.exit_code == status, result.output
    report = json.loads(result.stdout)
    assert report["gate"]["differing"] == 1 and report["passed"] is (status == 0)
    assert report["min_agreement"] == (0.999 if extra or target == "nengo" else 0.97)


def test_verify_leaves_ties_out_of_the_gate(model, monkeypatch):
    def tied(x):
        mask = np.zeros(len(x), bool)
        mask[:2] = True
        return mask

    def run(net, x, progress=None, **options):  # progress: one call for all of x
        predictions = simulate.run(net, x).predictions.copy()
        predictions[tied(x)] = (predictions[tied(x)] + 1) % 10
        return BackendResult(predictions, np.zeros((len(x), 20)), np.zeros(3))

    monkeypatch.setattr(registry.get("nengo"), "run", run)
    monkeypatch.setattr(exports, "gate_ties", lambda reference: tied(reference.predictions))
    result = invoke("verify", model["file"], "--to", "nengo", "--data", "demo", "-n", "16",
                    "--min-agreement", "1")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "100.00% agree on the 14 images without a tie (2 with a tie left out)" in result.output
