"""The CLI on bad input and in an unusable environment: exit 2, one clean line, light imports."""

import errno
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import numpy as np
import pytest
from _helpers import limit_file_size
from click.testing import CliRunner

import whetstone
from whetstone.cli import main
from whetstone.network import Stage

SCRIPT = str(Path(sys.executable).with_name("whetstone"))


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def quiet_env() -> dict:
    """The environment of a user who never set TensorFlow's log level."""
    return {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("models")
    keras.utils.set_random_seed(1)
    model = whetstone.models.dense_mnist(key_width=20)
    paths = {"soft": folder / "soft.keras", "sharp": folder / "sharp.keras"}
    whetstone.sharpness.set_model_sharpness(model, 0.0)
    model.save(paths["soft"])
    whetstone.sharpness.set_model_sharpness(model, 1.0)
    model.save(paths["sharp"])
    paths["net"] = folder / "sharp.h5"
    whetstone.convert.to_spiking(model).save(paths["net"])
    paths["garbage"] = folder / "garbage.keras"
    paths["garbage"].write_bytes(b"not a zip file")
    return paths


def one_error_line(result, code: int = 2) -> str:
    assert result.exit_code == code, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("Error")]
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    return lines[0]


# ---------------------------------------------------------------- light imports


def test_help_and_version_import_no_tensorflow():
    """``--help`` answers in well under a second: neither TensorFlow (5-12 s) nor numba
    (the simulator's kernels, ~0.5 s) is imported for it."""
    script = textwrap.dedent("""
        import sys
        from whetstone.cli import main
        for args in (["--help"], ["--version"], ["export", "--help"]):
            try:
                main(args, prog_name="whetstone")
            except SystemExit:
                pass
        heavy = sorted(m for m in sys.modules
                       if m.split(".")[0] in ("tensorflow", "keras", "numba"))
        print("HEAVY", heavy, file=sys.stderr)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert "HEAVY []" in done.stderr, done.stderr[-2000:]
    assert "Usage: whetstone export" in done.stdout


def test_subcommand_help_goes_to_stdout():
    result = CliRunner().invoke(main, ["export", "--help"])
    assert result.exit_code == 0 and "export [OPTIONS] MODEL" in result.stdout


def test_no_tensorflow_noise_before_the_one_line_error(models, tmp_path):
    done = subprocess.run(
        [SCRIPT, "export", models["soft"], "--to", "nir", "-o", tmp_path / "x.nir"],
        capture_output=True,
        text=True,
        env=quiet_env(),
    )
    assert done.returncode == 2
    assert done.stderr.splitlines() == [done.stderr.strip()], done.stderr
    assert done.stderr.startswith("Error: model 'dense_mnist' is not fully sharpened")


def test_a_users_tensorflow_log_level_is_left_alone(monkeypatch):
    from whetstone import cli

    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "0")
    cli.quiet_tensorflow()
    assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == "0"


# ---------------------------------------------------------------- exit status 2


def test_export_refuses_to_overwrite_its_own_input(models):
    before = models["net"].read_bytes()
    line = one_error_line(
        invoke("export", models["net"], "--to", "nir", "-o", models["net"], "--force")
    )
    assert "it is the input" in line
    assert models["net"].read_bytes() == before


def test_export_refuses_to_replace_a_folder_with_a_file(models, tmp_path):
    (tmp_path / "keep.txt").write_text("keep")
    line = one_error_line(invoke("export", models["net"], "--to", "nir", "-o", tmp_path, "--force"))
    assert "folder" in line
    assert (tmp_path / "keep.txt").read_text() == "keep"


def test_export_with_too_long_a_name(models, tmp_path):
    line = one_error_line(
        invoke("export", models["net"], "--to", "nir", "-o", tmp_path / ("n" * 300))
    )
    assert "255 bytes" in line


@pytest.mark.parametrize(
    ("code", "text"),
    [(errno.ENOSPC, "No space left on device"), (errno.EROFS, "Read-only file system")],
)
def test_full_or_read_only_disk_exits_2_and_leaves_nothing(
    models, tmp_path, monkeypatch, code, text
):
    def fail(fd):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(whetstone.files.os, "fsync", fail)
    line = one_error_line(invoke("export", models["net"], "--to", "nir", "-o", tmp_path / "a.nir"))
    assert text in line and str(tmp_path / "a.nir") in line and "partial" not in line
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("verbose", [[], ["-v"]], ids=["plain", "verbose"])
def test_a_real_write_error_exits_2_and_leaves_nothing(tmp_path, verbose):
    rng = np.random.default_rng(0)
    stages = [Stage(n, "dense", (400,), (400,), rng.normal(size=(400, 400)).astype("f4"))
              for n in "ab"]  # fmt: skip
    whetstone.network.SpikingNetwork((400,), stages).save(tmp_path / "net.h5")  # 1.3 MB
    out = tmp_path / "out"
    out.mkdir()
    done = subprocess.run(
        [SCRIPT, *verbose, "export", tmp_path / "net.h5", "--to", "nir", "-o", out / "a.nir"],
        capture_output=True, text=True, preexec_fn=limit_file_size,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr[-2000:]
    lines = done.stderr.splitlines()
    assert lines[-1] == f"Error: cannot write {out / 'a.nir'}: File too large."
    if verbose:  # the traceback first; the same message and exit status
        assert "Traceback" in done.stderr
    else:
        assert len(lines) == 1
    assert os.listdir(out) == []


def test_missing_data_without_network_exits_2(models, monkeypatch):
    def offline():
        raise ConnectionError("no network")

    monkeypatch.setattr(keras.datasets.cifar10, "load_data", offline)
    monkeypatch.delenv("WHETSTONE_DATA", raising=False)  # a data folder may hold CIFAR-10
    line = one_error_line(invoke("verify", models["net"], "--to", "nir", "--data", "cifar10"))
    assert "Without network access" in line


def test_corrupt_keras_file_is_not_file_not_found(models):
    line = one_error_line(invoke("inspect", models["garbage"]))
    assert "not a loadable Keras model" in line and "File not found" not in line


def test_json_errors_are_a_json_document(models):
    result = invoke("--json", "inspect", models["garbage"])
    assert result.exit_code == 2
    document = json.loads(result.stdout)
    assert document["exit_status"] == 2 and "not a loadable Keras model" in document["error"]


def test_json_usage_errors_are_a_json_document(models, tmp_path):
    target = tmp_path / "a.nir"
    target.write_text("x")
    result = invoke("--json", "export", models["net"], "--to", "nir", "-o", target)
    assert result.exit_code == 2
    assert "--force" in json.loads(result.stdout)["error"]


@pytest.mark.parametrize("value", ["nan", "NaN", "-0.1", "1.5"])
def test_verify_refuses_min_agreement_outside_0_1(models, value):
    result = invoke(
        "verify", models["net"], "--to", "nir", "--data", "demo", "--min-agreement", value
    )
    assert result.exit_code == 2 and "--min-agreement" in result.output


def test_sigterm_unwinds_the_cli_like_ctrl_c():
    script = textwrap.dedent("""
        import os, signal, sys, time
        from whetstone import cli

        @cli.main.command("sleepy")
        def sleepy():
            try:
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(10)
            finally:
                print("cleaned up", file=sys.stderr)

        cli.main(["sleepy"])
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 143 and "cleaned up" in done.stderr, done.stderr[-2000:]
