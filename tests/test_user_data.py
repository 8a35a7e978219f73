"""The user's own data in the CLI: .npz files and image folders, checked against the model."""

import gzip
import json
import shutil
import struct
from pathlib import Path

import keras
import numpy as np
import pytest
from click.testing import CliRunner

import whetstone
from whetstone import datasets
from whetstone.cli import main


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def error_line(result) -> str:
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("Error")]
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    return lines[0]


@pytest.fixture(scope="module")
def demo():
    return datasets.load("demo")


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    keras.utils.set_random_seed(1)
    net = whetstone.models.dense_mnist(key_width=20)
    whetstone.sharpness.set_model_sharpness(net, 1.0)
    path = tmp_path_factory.mktemp("model") / "sharp.keras"
    net.save(path)
    return path


def npz(tmp_path, name="my.npz", **arrays) -> Path:
    np.savez(tmp_path / name, **arrays)
    return tmp_path / name


def as_uint8(x):
    return np.round(x * 255).astype(np.uint8)


# -- verify --data my.npz --------------------------------------------------------------


def test_verify_on_nengo_with_a_uint8_npz(model, demo, tmp_path):
    _, (x, y) = demo
    data = npz(tmp_path, x=as_uint8(x[:50]), y=y[:50])
    result = invoke("--json", "verify", model, "--to", "nengo", "--data", data,
                    "--min-agreement", "1")  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    rows = {row["stage"]: row for row in report["results"]}
    assert report["images"] == 50 and report["passed"] is True
    assert rows["nengo"]["agreement"] == 1.0 and rows["nengo"]["timesteps"] == 3
    # uint8 images are scaled by 1/255: the same decisions as the float images
    expected = whetstone.simulate.run(whetstone.convert.to_spiking(keras.models.load_model(model)),
                                      x[:50]).predictions  # fmt: skip
    assert rows["reference simulator"]["accuracy"] == float((expected == y[:50]).mean())


def test_verify_prefers_the_test_split_and_draws_with_a_seed(model, demo, tmp_path):
    (x, y), (x_test, y_test) = demo
    data = npz(tmp_path, x_train=x[:5], y_train=y[:5], x_test=x_test[:40], y_test=y_test[:40])
    args = ("--json", "verify", model, "--to", "nengo", "--data", data, "-n", 10)
    first = json.loads(invoke(*args, "--seed", 1, "--batch-size", 4).stdout)
    again = json.loads(invoke(*args, "--seed", 1).stdout)
    assert first["images"] == 10 and first["results"] == again["results"]


def test_table_shows_timesteps(model, demo, tmp_path):
    _, (x, y) = demo
    result = invoke("verify", model, "--to", "nengo", "--data", npz(tmp_path, x=x[:8], y=y[:8]))
    assert result.exit_code == 0, result.output
    header = next(line for line in result.stdout.splitlines() if line.startswith("stage"))
    assert header.split() == ["stage", "accuracy", "agreement", "timesteps"]


def test_one_hot_and_column_labels_are_accepted(model, demo, tmp_path):
    _, (x, y) = demo
    for labels in (np.eye(10)[y[:8]], y[:8, None]):
        data = npz(tmp_path, x=x[:8], y=labels)
        assert invoke("verify", model, "--to", "nengo", "--data", data).exit_code == 0


# -- bad data: exit 2, one line that says what to do ------------------------------------


@pytest.mark.parametrize(
    ("arrays", "fragments"),
    [
        ({"x": np.zeros((4, 20, 20)), "y": np.zeros(4, int)}, ["(20, 20)", "(28, 28)"]),
        ({"x": np.zeros((4, 28, 28)), "y": np.array([0, 1, 2, 10])}, ["up to 10", "10 classes"]),
        ({"x": np.full((4, 28, 28), 300), "y": np.zeros(4, int)}, ["0..255", "300"]),
        ({"x": np.zeros((4, 28, 28)), "y": np.zeros(3, int)}, ["4 images but 3 labels"]),
        ({"x": np.zeros((4, 28, 28)), "y": np.array([0, 1, 2, -1])}, [">= 0"]),
        ({"x": np.zeros((4, 28, 28)), "y": np.array([0.5, 1, 2, 3])}, ["class numbers"]),
        ({"x": np.full((4, 28, 28), np.nan), "y": np.zeros(4, int)}, ["NaN"]),
        ({"images": np.zeros((4, 28, 28))}, ["holds ['images']", "x and y"]),
    ],
    ids=["shape", "label-range", "int-range", "count", "negative", "fraction", "nan", "names"],
)
def test_bad_npz_is_one_clear_error(model, tmp_path, arrays, fragments):
    line = error_line(invoke("verify", model, "--to", "nengo", "--data", npz(tmp_path, **arrays)))
    assert "my.npz" in line
    for fragment in fragments:
        assert fragment in line


def test_unknown_data_lists_what_is_accepted(model, tmp_path):
    result = invoke("verify", model, "--to", "nengo", "--data", tmp_path / "nothing.csv")
    assert result.exit_code == 2
    assert "neither a dataset (demo, mnist" in result.output and ".npz" in result.output


def test_unscaled_float_images_get_a_note(model, demo, tmp_path):
    _, (x, y) = demo
    data = npz(tmp_path, x=x[:8] * 255, y=y[:8])
    result = invoke("verify", model, "--to", "nengo", "--data", data)
    assert result.exit_code == 0
    assert "from 0 to 255" in result.stderr and "divide by 255" in result.stderr
    quiet = invoke("verify", model, "--to", "nengo", "--data", data, "-q")
    assert "divide by 255" not in quiet.stderr


# -- image folders ---------------------------------------------------------------------


def png_tree(root: Path, x, y, splits=("train", "test")) -> Path:
    image = pytest.importorskip("PIL.Image")
    for split in splits:
        for i, (pixels, label) in enumerate(zip(as_uint8(x), y, strict=True)):
            folder = root / split / f"digit{label}" if split else root / f"digit{label}"
            folder.mkdir(parents=True, exist_ok=True)
            image.fromarray(pixels).save(folder / f"{i:03d}.png")
    return root


@pytest.mark.parametrize("zipped", [False, True])
def test_verify_reads_an_image_folder_or_its_zip(model, demo, tmp_path, zipped):
    _, (x, y) = demo
    x, y = x[:100], y[:100]
    assert set(y.tolist()) == set(range(10))  # so that folder digitK is class K
    source = png_tree(tmp_path / "digits", x, y)
    if zipped:
        source = shutil.make_archive(str(tmp_path / "digits"), "zip", tmp_path, "digits")
    result = invoke("--json", "verify", model, "--to", "nengo", "--data", source)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    accuracy = {row["stage"]: row["accuracy"] for row in report["results"]}
    net = whetstone.convert.to_spiking(keras.models.load_model(model))
    expected = whetstone.simulate.run(net, x).predictions
    assert report["images"] == len(x)
    assert accuracy["reference simulator"] == pytest.approx(float((expected == y).mean()))


def test_only_the_used_split_is_decoded(demo, tmp_path):
    _, (x, y) = demo
    root = png_tree(tmp_path / "digits", x[:20], y[:20], splits=("test",))
    for label in set(y[:20].tolist()):
        (root / "train" / f"digit{label}").mkdir(parents=True)
        (root / "train" / f"digit{label}" / "broken.png").write_bytes(b"not an image")
    archive = shutil.make_archive(str(tmp_path / "digits"), "zip", root)
    for source in (root, archive):
        x_read, _ = datasets.load_split(source, "test", image_size=(28, 28), color_mode="grayscale")
        assert x_read.shape == (20, 28, 28, 1)


def test_a_plain_class_tree_serves_both_splits(demo, tmp_path):
    _, (x, y) = demo
    root = png_tree(tmp_path / "digits", x[:12], y[:12], splits=(None,))
    x_read, _ = datasets.load_split(root, "train", image_size=(28, 28), color_mode="grayscale")
    by_class = x[:12][np.argsort(y[:12], kind="stable")]  # class, then file name, then mixed
    np.testing.assert_array_equal(x_read[..., 0], by_class[datasets.image_order(12)])
    assert not datasets.has_splits(root)


def idx_gz(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(gzip.compress(header + array.astype(np.uint8).tobytes()))


def test_idx_split_reads_only_its_files(tmp_path):
    (tmp_path / "mnist").mkdir()
    for name in datasets.IDX_FILES["train"]:
        (tmp_path / "mnist" / name).write_bytes(b"damaged")
    images, labels = datasets.IDX_FILES["test"]
    idx_gz(tmp_path / "mnist" / images, np.zeros((2, 28, 28)))
    idx_gz(tmp_path / "mnist" / labels, np.array([3, 4]))
    x_test, y_test = datasets.load_split("mnist", "test", tmp_path)
    assert y_test.tolist() == [3, 4] and x_test.dtype == np.float32


# -- sharpen --data my.npz --------------------------------------------------------------


def test_sharpen_on_an_npz_with_batch_size_and_seed(demo, tmp_path):
    (x, y), (x_test, y_test) = demo
    keras.utils.set_random_seed(0)
    soft = whetstone.models.dense_mnist(key_width=20)
    soft.save(tmp_path / "soft.keras")
    data = npz(tmp_path, x_train=as_uint8(x[:256]), y_train=y[:256],
               x_test=as_uint8(x_test[:64]), y_test=y_test[:64])  # fmt: skip
    reports = []
    for run in ("a", "b"):
        result = invoke("--json", "sharpen", tmp_path / "soft.keras", "--data", data,
                        "--epochs", 3, "--batch-size", 64, "--seed", 3,
                        "-o", tmp_path / f"{run}.keras")  # fmt: skip
        assert result.exit_code == 0, result.output
        reports.append(json.loads(result.stdout))
    assert reports[0]["fully_sharpened"] is True
    assert reports[0]["test_accuracy"] == reports[1]["test_accuracy"]
