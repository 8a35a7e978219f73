"""The whetstone command line: every command and every bad input."""

import errno
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
from click.testing import CliRunner

import whetstone
import whetstone.backends as registry
from whetstone.backends import BackendResult, MissingDependencyError
from whetstone.cli import main


def invoke(*args: str):
    return CliRunner().invoke(main, [str(a) for a in args])


def tiny_model(sharpness: float) -> keras.Model:
    """A small dense model on 28x28 images; sharp or not, untrained, not compiled."""
    keras.utils.set_random_seed(1)
    model = whetstone.models.dense_mnist(key_width=20)
    whetstone.sharpness.set_model_sharpness(model, sharpness)
    return model


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("cli")
    paths = {"sharp": folder / "sharp.keras", "soft": folder / "soft.keras"}
    tiny_model(1.0).save(paths["sharp"])
    tiny_model(0.0).save(paths["soft"])
    paths["net"] = folder / "sharp.h5"
    whetstone.convert.to_spiking(keras.models.load_model(paths["sharp"])).save(paths["net"])
    paths["garbage"] = folder / "garbage.keras"
    paths["garbage"].write_bytes(b"not a zip file")
    paths["damaged"] = folder / "damaged.h5"
    paths["damaged"].write_bytes(paths["net"].read_bytes()[:500])
    return paths


def assert_one_line_error(result, code: int, *fragments: str):
    assert result.exit_code == code, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("Error")]
    assert len(lines) == 1, result.output
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in lines[0]


# -- version, help, console script ----------------------------------------------------


def test_version_and_help():
    assert invoke("--version").output.strip() == f"whetstone, version {whetstone.__version__}"
    help_text = invoke("--help").output
    for command in ("demo", "inspect", "export", "verify", "sharpen"):
        assert command in help_text
    assert "Examples:" in help_text


def test_console_script_runs():
    script = shutil.which("whetstone", path=str(Path(sys.executable).parent))
    assert script, "the whetstone console script is not installed"
    done = subprocess.run([script, "--version"], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == f"whetstone, version {whetstone.__version__}"


# -- demo ------------------------------------------------------------------------------


def test_demo_trains_sharpens_and_runs_exactly_on_nengo():
    result = invoke("--json", "demo", "-q", "--epochs", "5", "--plain-epochs", "2",
                    "--backend", "nengo", "-n", "300")  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    rows = {row["stage"]: row for row in report["results"]}
    assert report["fully_sharpened"] is True
    assert report["test_images"] == 300
    sharpened = rows["Keras, sharpened and honed"]["accuracy"]
    assert sharpened > 0.5  # 3 sharpening + 3 honing epochs on 6,000 images
    assert rows["reference simulator"]["accuracy"] == sharpened
    assert rows["reference simulator"]["agreement"] == 1.0  # with Keras
    assert rows["nengo"]["accuracy"] == sharpened
    assert rows["nengo"]["agreement"] == 1.0  # with the reference
    assert rows["reference simulator"]["timesteps"] == 2  # 256-64 spiking, readout on the host


def test_demo_refuses_epochs_without_room_for_sharpening():
    result = invoke("demo", "--epochs", "3", "--plain-epochs", "3")
    assert result.exit_code == 2
    assert "--epochs (3) must exceed --plain-epochs (3)" in result.output


# -- inspect ---------------------------------------------------------------------------


def test_inspect_sharp_model(files):
    result = invoke("inspect", files["sharp"])
    assert result.exit_code == 0, result.output
    assert "spiking_1  SpikingBRelu   (256,)  1" in result.output
    assert "total: 340 neurons, 218368 synapses, 3 timesteps" in result.output


def test_inspect_json_has_sizes_and_resources(files):
    report = json.loads(invoke("inspect", files["sharp"], "--json").stdout)
    assert report["converts"] is True
    assert report["totals"] == {"neurons": 340, "synapses": 784 * 256 + 256 * 64 + 64 * 20}
    assert [s["neurons"] for s in report["stages"]] == [256, 64, 20]
    assert report["resources"]["loihi"]["fits_one_chip"] is True
    if registry.get("spinnaker").is_available():  # CI installs sPyNNaker
        plan = report["resources"]["spinnaker"]  # the core plan: dense_2, dense_3
        assert plan["population_cores"] == 2 and "core plan" in plan["mapped"]


@pytest.mark.skipif(not registry.get("spinnaker").is_available(), reason="needs sPyNNaker")
def test_inspect_board_maps_quietly_with_q(files):
    result = invoke("inspect", files["sharp"], "--board", "--json", "-q")
    assert result.exit_code == 0, result.output
    spinnaker = json.loads(result.stdout)["resources"]["spinnaker"]
    assert spinnaker["cores"] == 3 and spinnaker["boards"] == 1  # input source, dense_2, dense_3
    assert result.stderr == ""


def test_inspect_unsharpened_model_explains_and_hints(files):
    result = invoke("inspect", files["soft"])
    assert result.exit_code == 0
    assert "Does not convert" in result.output
    assert "spiking_1" in result.output and "whetstone sharpen" in result.output


def test_inspect_hints_at_sharpen_only_when_not_sharp(tmp_path):
    model = keras.Sequential([
        keras.Input((4, 2)), keras.layers.LSTM(3),
        keras.layers.Dense(2), whetstone.layers.SpikingBRelu(sharpness=1.0),
    ])  # fmt: skip
    model.save(tmp_path / "lstm.keras")
    result = invoke("inspect", tmp_path / "lstm.keras")
    assert result.exit_code == 0 and "Does not convert" in result.output
    assert "whetstone sharpen" not in result.output


def test_inspect_saved_network(files):
    result = invoke("--json", "inspect", files["net"])
    report = json.loads(result.stdout)
    assert report["layers"] == [] and report["totals"]["neurons"] == 340


# -- export ----------------------------------------------------------------------------


def test_export_writes_and_refuses_to_overwrite(files, tmp_path):
    target = tmp_path / "deploy"
    assert invoke("export", files["sharp"], "--to", "nengo", "-o", target).exit_code == 0
    assert (target / "network.h5").exists()
    again = invoke("export", files["sharp"], "--to", "nengo", "-o", target)
    assert again.exit_code == 2 and "pass --force" in again.output
    assert invoke("export", files["net"], "--to", "nengo", "-o", target, "--force").exit_code == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["deploy"]


def test_failed_export_leaves_nothing(files, tmp_path, monkeypatch):
    def full_disk(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(whetstone.files.os, "fsync", full_disk)
    result = invoke("export", files["sharp"], "--to", "nengo", "-o", tmp_path / "out")
    assert_one_line_error(result, 2, "No space left on device", str(tmp_path / "out"))
    assert "partial" not in result.output
    assert list(tmp_path.iterdir()) == []


def test_export_of_unsharpened_model_names_layers_and_sharpen(files, tmp_path):
    result = invoke("export", files["soft"], "--to", "nengo", "-o", tmp_path / "x")
    assert_one_line_error(result, 2, "spiking_1", "whetstone sharpen")
    assert list(tmp_path.iterdir()) == []


def test_unknown_backend_lists_known_ones(files, tmp_path):
    result = invoke("export", files["sharp"], "--to", "truenorth", "-o", tmp_path / "x")
    assert result.exit_code == 2
    assert all(name in result.output for name in registry.names())


def test_missing_optional_dependency_names_the_extra(files, tmp_path, monkeypatch):
    def missing(net, path, **options):
        raise MissingDependencyError("this back end needs 'pyNN'. pip install 'whetstone[nest]'")

    monkeypatch.setattr(registry.get("nengo"), "export", missing)
    result = invoke("export", files["sharp"], "--to", "nengo", "-o", tmp_path / "x")
    assert_one_line_error(result, 2, "pip install 'whetstone[nest]'")


# -- verify ----------------------------------------------------------------------------


def test_verify_on_nengo_agrees_exactly(files):
    result = invoke("--json", "verify", files["sharp"], "--to", "nengo", "--data", "demo",
                    "-n", "64", "--min-agreement", "1")  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    rows = {row["stage"]: row for row in report["results"]}
    assert report["passed"] is True and report["images"] == 64
    assert rows["nengo"]["agreement"] == 1.0
    assert rows["Keras"]["agreement"] == 1.0


def test_verify_in_processes_reports_them_and_agrees(files):
    result = invoke("--json", "verify", files["net"], "--to", "nengo", "--data", "demo",
                    "-n", "30", "--processes", "2", "--min-agreement", "1")  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["passed"] is True and report["backend_info"]["processes"] == 2


def test_verify_exits_1_below_threshold(files, monkeypatch):
    def wrong(net, x, **options):
        return BackendResult(np.full(len(x), -1), np.zeros((len(x), 20)), np.zeros(3))

    monkeypatch.setattr(registry.get("nengo"), "run", wrong)
    result = invoke("verify", files["net"], "--to", "nengo", "--data", "demo", "-n", "8")
    assert result.exit_code == 1
    assert "below --min-agreement" in result.output


def test_verify_rejects_data_of_the_wrong_shape(tmp_path):
    model = keras.Sequential([keras.Input((10,)), keras.layers.Dense(4),
                              whetstone.layers.SpikingBRelu(sharpness=1.0)])  # fmt: skip
    path = tmp_path / "small.keras"
    model.save(path)
    result = invoke("verify", path, "--to", "nengo", "--data", "demo", "-n", "4")
    assert_one_line_error(result, 2, "(28, 28)", "(10,)")


# -- sharpen ---------------------------------------------------------------------------


def test_sharpen_continues_training_until_sharp(files, tmp_path):
    output = tmp_path / "sharpened.keras"
    result = invoke("--json", "sharpen", files["soft"], "--data", "demo", "--epochs", "3",
                    "--steps", "1", "-o", output, "-q")  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["fully_sharpened"] is True
    assert whetstone.sharpness.is_fully_sharpened(keras.models.load_model(output))
    again = invoke("sharpen", files["soft"], "--data", "demo", "--epochs", "1", "-o", output)
    assert again.exit_code == 2 and "pass --force" in again.output


def plain_model(path: Path, loss: str = "sparse_categorical_crossentropy", activation="relu"):
    """A plain Keras classifier (relu hidden layer, softmax head), compiled and saved."""
    keras.utils.set_random_seed(2)
    model = keras.Sequential([
        keras.Input((28, 28)), keras.layers.Flatten(),
        keras.layers.Dense(32, activation=activation, name="hidden"),
        keras.layers.Dense(10, activation="softmax", name="head"),
    ])  # fmt: skip
    model.compile(keras.optimizers.Adam(1e-3), loss)
    model.save(path)
    return path


def test_sharpen_rewrites_a_plain_relu_model_and_hones(tmp_path):
    output = tmp_path / "sharp.keras"
    result = invoke("--json", "sharpen", plain_model(tmp_path / "plain.keras"), "--data", "demo",
                    "--epochs", "2", "--hone-epochs", "1", "--hone-learning-rate", "1e-4",
                    "--hone-schedule", "cosine", "--sample", "200", "-o", output, "-q")  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["labels"] == "sparse" and report["fully_sharpened"] is True
    assert report["epochs_trained"] == 2 and report["honing_epochs"] == 1
    assert report["rewrite"]["head"] == "readout" and report["rewrite"]["sample_images"] == 200
    assert set(report["rewrite"]["scales"]) == {"hidden_spiking"}
    assert 0 <= report["rewrite"]["accuracy"] <= 1
    sharp = keras.models.load_model(output)
    net = whetstone.convert.to_spiking(sharp)
    assert type(net.decoder).__name__ == "ReadoutDecoder"
    x = whetstone.datasets.load("demo")[1][0][:50]
    keras_predictions = sharp.predict(x, verbose=0).argmax(axis=1)
    reference = whetstone.simulate.run(net, x)
    assert ((reference.predictions == keras_predictions) | reference.tie_mask).all()


def test_sharpen_widens_a_layer_into_staggered_copies(tmp_path):
    output = tmp_path / "sharp.keras"
    result = invoke("--json", "sharpen", plain_model(tmp_path / "plain.keras"), "--data", "demo",
                    "--epochs", "1", "--widen", "hidden:3:0.5", "--sample", "200", "-o", output,
                    "-q")  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["widened"] == [{"layer": "hidden", "copies": 3, "spread": 0.5}]
    assert report["fully_sharpened"] is True
    sharp = keras.models.load_model(output)
    assert sharp.get_layer("hidden").units == 96
    assert isinstance(sharp.optimizer, keras.optimizers.Adam)  # the plain model's optimizer
    x = whetstone.datasets.load("demo")[1][0][:50]
    reference = whetstone.simulate.run(whetstone.convert.to_spiking(sharp), x)
    keras_predictions = sharp.predict(x, verbose=0).argmax(axis=1)
    assert ((reference.predictions == keras_predictions) | reference.tie_mask).all()


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("hidden", "LAYER:COPIES"),
        ("hidden:0", "LAYER:COPIES"),
        ("hidden:2:0", "SPREAD"),
        ("hidden:2:x", "SPREAD"),
        ("head:2", "output"),
    ],
)
def test_sharpen_refuses_a_layer_it_cannot_widen(tmp_path, value, fragment):
    output = tmp_path / "sharp.keras"
    result = invoke("sharpen", plain_model(tmp_path / "plain.keras"), "--data", "demo",
                    "--epochs", "1", "--widen", value, "--sample", "100", "-o", output)  # fmt: skip
    assert result.exit_code == 2 and fragment in result.output
    assert not output.exists()


def test_sharpen_gives_a_plain_model_an_n_hot_key_on_request(tmp_path):
    output = tmp_path / "sharp.keras"
    plain = plain_model(tmp_path / "plain.keras", loss="categorical_crossentropy")
    result = invoke("--json", "sharpen", plain, "--data", "demo", "--epochs", "2", "--head", "key",
                    "--sample", "300", "-o", output, "-q")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["labels"] == "one-hot"
    net = whetstone.convert.to_spiking(keras.models.load_model(output))
    assert type(net.decoder).__name__ == "KeyDecoder"


def test_sharpen_takes_integer_labels_for_a_sparse_loss(files, tmp_path):
    model = keras.models.load_model(files["soft"])
    model.compile(keras.optimizers.Adadelta(4.0), "sparse_categorical_crossentropy")
    model.save(tmp_path / "sparse.keras")
    output = tmp_path / "sharp.keras"
    result = invoke("--json", "sharpen", tmp_path / "sparse.keras", "--data", "demo",
                    "--epochs", "3", "-o", output, "-q")  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["labels"] == "sparse" and report["fully_sharpened"] is True


@pytest.mark.parametrize("option", ["--learning-rate", "--hone-learning-rate"])
@pytest.mark.parametrize("value", ["nan", "0", "-1", "inf"])
def test_sharpen_rejects_a_learning_rate_that_is_not_positive(files, tmp_path, option, value):
    result = invoke("sharpen", files["soft"], "--data", "demo", "--epochs", "1", option, value,
                    "-o", tmp_path / "s.keras")  # fmt: skip
    assert result.exit_code == 2 and "finite number > 0" in result.output


def test_sharpen_needs_honing_epochs_and_rate_for_a_cosine_schedule(files, tmp_path):
    result = invoke("sharpen", files["soft"], "--data", "demo", "--epochs", "1",
                    "--hone-schedule", "cosine", "-o", tmp_path / "s.keras")  # fmt: skip
    assert result.exit_code == 2 and "give both" in result.output
    assert not (tmp_path / "s.keras").exists()


def test_sharpen_refuses_out_of_range_labels_with_exit_2(files, tmp_path):
    data = tmp_path / "labels.npz"
    x = np.random.default_rng(0).random((16, 28, 28)).astype("float32")
    np.savez(data, x=x, y=np.arange(16))  # 10 classes, labels up to 15
    result = invoke("sharpen", files["soft"], "--data", data, "--epochs", "1",
                    "-o", tmp_path / "s.keras")  # fmt: skip
    assert result.exit_code == 2 and "labels go up to 15" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "s.keras").exists()


def test_sharpen_checks_the_output_before_training(files, tmp_path, monkeypatch):
    def no_training(*_args, **_kwargs):
        raise AssertionError("loaded data before checking the output")

    monkeypatch.setattr(whetstone.datasets, "load", no_training)
    args = ["sharpen", files["soft"], "--data", "demo", "--epochs", "1", "-o"]
    missing = invoke(*args, tmp_path / "nowhere" / "s.keras")
    assert missing.exit_code == 2 and "does not exist" in missing.output
    suffix = invoke(*args, tmp_path / "s.h5")
    assert suffix.exit_code == 2 and ".keras suffix" in suffix.output
    same = invoke(*args, files["soft"], "--force")
    assert same.exit_code == 2 and "is the input" in same.output
    (tmp_path / "taken.keras").write_text("")
    taken = invoke(*args, tmp_path / "taken.keras")
    assert taken.exit_code == 2 and "pass --force" in taken.output
    access = os.access
    monkeypatch.setattr(
        os, "access", lambda path, mode: Path(path) != tmp_path and access(path, mode)
    )
    locked = invoke(*args, tmp_path / "s.keras")
    assert locked.exit_code == 2 and "not writable" in locked.output


def test_sharpen_saves_through_the_one_write_helper(files, tmp_path, monkeypatch):
    """A 255-byte name is written; a failed save names the output, never a staging path."""
    data = tmp_path / "data" / "tiny.npz"
    data.parent.mkdir()
    x = np.random.default_rng(0).random((16, 28, 28)).astype("float32")
    np.savez(data, x=x, y=np.arange(16) % 10)
    args = ["sharpen", files["soft"], "--data", data, "--epochs", "1", "-q", "-o"]
    longest = tmp_path / ("s" * 249 + ".keras")
    assert invoke(*args, longest).exit_code == 0
    assert [p.name for p in tmp_path.iterdir() if p.is_file()] == [longest.name]

    def full_disk(self, path, *rest, **options):
        Path(path).write_bytes(b"half a model")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(keras.Model, "save", full_disk)
    result = invoke(*args, tmp_path / "full.keras")
    assert_one_line_error(result, 2, str(tmp_path / "full.keras"), "No space left")
    assert "partial" not in result.output
    assert [p.name for p in tmp_path.iterdir() if p.is_file()] == [longest.name]


def test_sharpen_refuses_a_plain_model_it_cannot_rewrite(tmp_path):
    plain = plain_model(tmp_path / "tanh.keras", activation="tanh")
    result = invoke("sharpen", plain, "--data", "demo", "--epochs", "1", "-o", tmp_path / "s.keras")
    assert_one_line_error(result, 2, "'hidden' (Dense)", "'tanh'")


# -- bad files -------------------------------------------------------------------------


def test_missing_file_is_a_usage_error(tmp_path):
    result = invoke("inspect", tmp_path / "nope.keras")
    assert result.exit_code == 2 and "does not exist" in result.output


def test_not_a_keras_model(files):
    assert_one_line_error(invoke("inspect", files["garbage"]), 2, "not a loadable Keras model")


def test_damaged_network_file(files):
    assert_one_line_error(invoke("inspect", files["damaged"]), 2, str(files["damaged"]))


def test_verbose_shows_the_traceback(files):
    result = invoke("inspect", files["garbage"], "-v")
    assert result.exit_code == 2 and "Traceback" in result.output  # same status as without -v
    assert "ValueError" in result.output and "Error: " in result.output


# -- quiet -----------------------------------------------------------------------------


def test_silenced_drops_what_c_code_writes_to_stderr(capfd):
    import logging

    from whetstone.cli import silenced

    with silenced():
        os.write(2, b"NEST: a C++ log line\n")
        logging.getLogger("spinn_front_end_common").warning("a sPyNNaker log line")
        print("a progress bar")
    os.write(2, b"after\n")
    captured = capfd.readouterr()
    assert captured.err == "after\n" and captured.out == ""


def test_quiet_verify_writes_nothing_to_stderr(files):
    done = subprocess.run(
        [str(Path(sys.executable).with_name("whetstone")), "-q", "verify", str(files["sharp"]),
         "--to", "nengo", "--data", "demo", "-n", "20"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stderr == "" and "timesteps" in done.stdout


def test_training_progress_is_one_short_line_per_epoch(files, tmp_path):
    result = invoke("sharpen", files["soft"], "--data", "demo", "--epochs", "2",
                    "--batch-size", "512", "-o", tmp_path / "s.keras")  # fmt: skip
    assert result.exit_code == 0, result.output
    lines = [line for line in result.stderr.splitlines() if line.startswith("epoch")]
    assert [line.split()[1] for line in lines] == ["1/2", "2/2"]
    assert all(len(line) < 80 for line in lines) and "sharpness_" not in result.stderr


def test_export_nir_variant_one_step(files, tmp_path):
    nir = pytest.importorskip("nir")
    result = invoke("export", files["sharp"], "--to", "nir", "--nir-variant", "one_step",
                    "-o", tmp_path / "one.nir")  # fmt: skip
    assert result.exit_code == 0, result.output
    lif = [n for n in nir.read(tmp_path / "one.nir").nodes.values() if type(n).__name__ == "LIF"]
    assert lif and all(float(n.r.flat[0]) == 2.0 for n in lif)
    wrong = invoke("export", files["sharp"], "--to", "nengo", "--nir-variant", "one_step",
                   "-o", tmp_path / "folder")  # fmt: skip
    assert wrong.exit_code == 2 and "--to nir" in wrong.output
