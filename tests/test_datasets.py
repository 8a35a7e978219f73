"""IDX reading and the dataset loaders (embedded demo set, real MNIST in ../shared/data)."""

import gzip
import struct

import numpy as np
import pytest

from whetstone import datasets
from whetstone.datasets import IDX_FILES, load, read_idx


def idx_bytes(array: np.ndarray) -> bytes:
    array = np.asarray(array, np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.tobytes()


def write_idx(path, array, gz=None):
    raw = idx_bytes(array) if isinstance(array, np.ndarray) else array
    gz = str(path).endswith(".gz") if gz is None else gz
    path.write_bytes(gzip.compress(raw) if gz else raw)
    return path


def fake_dataset(root, folder="mnist", n_train=5, n_test=3, n_test_labels=None):
    """Tiny IDX files laid out like ../shared/data/<folder>/."""
    rng = np.random.default_rng(0)
    (root / folder).mkdir(parents=True)
    sizes = {"train": (n_train, n_train), "test": (n_test, n_test_labels or n_test)}
    arrays = {}
    for split, (images_name, labels_name) in IDX_FILES.items():
        n_images, n_labels = sizes[split]
        images = rng.integers(0, 256, (n_images, 28, 28), dtype=np.uint8)
        images.flat[0] = 255
        labels = rng.integers(0, 10, n_labels, dtype=np.uint8)
        write_idx(root / folder / images_name, images)
        write_idx(root / folder / labels_name, labels)
        arrays[split] = (images, labels)
    return arrays


# --- read_idx -----------------------------------------------------------------------


@pytest.mark.parametrize("name", ["images-idx3-ubyte", "images-idx3-ubyte.gz"])
def test_read_idx_round_trips_plain_and_gzip(tmp_path, name):
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    got = read_idx(write_idx(tmp_path / name, array))
    assert got.dtype == np.uint8
    np.testing.assert_array_equal(got, array)


def test_read_idx_one_dimensional_labels(tmp_path):
    labels = np.array([7, 2, 1, 0, 4], np.uint8)
    np.testing.assert_array_equal(read_idx(write_idx(tmp_path / "l.gz", labels)), labels)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (idx_bytes(np.zeros((3, 4)))[:-1], r"truncated or damaged: header says \(3, 4\)"),
        (idx_bytes(np.zeros((3, 4))) + b"\0", r"damaged: header says \(3, 4\) \(12 bytes\)"),
        (idx_bytes(np.zeros((3, 4)))[:9], r"truncated: its header announces 2 dimensions"),
        (bytes([0, 0, 0x08, 3, 0, 0]), r"truncated: its header announces 3 dimensions"),
        (b"\x1f\x8bnot idx at all", "bad magic number"),
        (bytes([0, 0, 0x0D, 1, 0, 0, 0, 1]) + b"\0" * 4, "bad magic number"),  # float32 IDX
        (b"\0\0", "bad magic number"),
        (b"", "bad magic number"),
        # 65536**4 bytes: a product that wraps to 0 in int64 must not pass for empty data
        (bytes([0, 0, 0x08, 4]) + b"\0\1\0\0" * 4, r"header says \(65536, 65536, 65536"),
    ],
    ids=[
        "short-data",
        "long-data",
        "short-header",
        "cut-header",
        "magic",
        "float",
        "2B",
        "empty",
        "overflow",
    ],
)
@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gz"])
def test_read_idx_bad_file_is_value_error_naming_it(tmp_path, raw, message, gz):
    path = write_idx(tmp_path / ("bad.gz" if gz else "bad"), raw, gz=gz)
    with pytest.raises(ValueError, match=message) as error:
        read_idx(path)
    assert str(path) in str(error.value)


def test_read_idx_broken_gzip_is_value_error_naming_it(tmp_path):
    compressed = gzip.compress(idx_bytes(np.zeros((50, 50))))
    for name, raw in [("cut.gz", compressed[: len(compressed) // 2]), ("plain.gz", b"IDX?")]:
        path = tmp_path / name
        path.write_bytes(raw)
        with pytest.raises(ValueError, match=f"cannot read IDX file {path}"):
            read_idx(path)


def test_read_idx_missing_file_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_idx(tmp_path / "absent-idx1-ubyte.gz")


# --- loaders ------------------------------------------------------------------------


def test_load_demo_shapes_dtypes_range():
    (x, y), (x_test, y_test) = load("demo")
    assert x.shape == (6000, 28, 28) and x_test.shape == (1000, 28, 28)
    assert y.shape == (6000,) and y_test.shape == (1000,)
    assert x.dtype == x_test.dtype == np.float32
    assert y.dtype == y_test.dtype == np.int64
    assert x.min() == 0.0 and x.max() == 1.0
    assert set(y.tolist()) == set(y_test.tolist()) == set(range(10))
    assert y[:5].tolist() == [5, 0, 4, 1, 9]  # the first MNIST training labels


def test_load_idx_folder_scales_images_and_keeps_labels(tmp_path):
    arrays = fake_dataset(tmp_path)
    (x, y), (x_test, y_test) = load("mnist", tmp_path)
    np.testing.assert_array_equal(x, arrays["train"][0].astype(np.float32) / np.float32(255))
    np.testing.assert_array_equal(y_test, arrays["test"][1])
    assert x.dtype == np.float32 and y.dtype == np.int64
    assert x.max() == 1.0 and x_test.shape == (3, 28, 28)


def test_load_reads_whetstone_data_variable(tmp_path, monkeypatch):
    fake_dataset(tmp_path, folder="fashion-mnist")
    monkeypatch.setenv("WHETSTONE_DATA", str(tmp_path))
    (x, _), _ = load("fashion-mnist")
    assert x.shape == (5, 28, 28)


def test_load_images_and_labels_count_mismatch_is_an_error(tmp_path):
    fake_dataset(tmp_path, n_test=3, n_test_labels=4)
    with pytest.raises(ValueError, match=r"holds 3 images but .* holds 4 labels"):
        load("mnist", tmp_path)


@pytest.mark.parametrize("make_folder", [False, True])
def test_load_missing_files_is_file_not_found_naming_the_folder(tmp_path, make_folder):
    if make_folder:
        (tmp_path / "mnist").mkdir()
    with pytest.raises(FileNotFoundError, match=r"train-images-idx3-ubyte\.gz") as error:
        load("mnist", tmp_path)
    assert str(tmp_path / "mnist") in str(error.value)


def test_load_one_missing_file_names_only_it(tmp_path):
    fake_dataset(tmp_path)
    (tmp_path / "mnist" / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(FileNotFoundError, match=r"lacks \['t10k-labels-idx1-ubyte.gz'\]"):
        load("mnist", tmp_path)


def test_load_unknown_name_lists_the_datasets():
    with pytest.raises(
        ValueError, match=r"'emnist'.*\['cifar10', 'demo', 'fashion-mnist', 'mnist'\]"
    ):
        load("emnist")


def test_without_data_dir_and_network_the_error_says_what_to_do(monkeypatch):
    import keras

    def offline():
        raise OSError("no network")

    monkeypatch.delenv("WHETSTONE_DATA", raising=False)
    monkeypatch.setattr(keras.datasets.mnist, "load_data", offline)
    with pytest.raises(RuntimeError, match=r"no network.*--data-dir or WHETSTONE_DATA"):
        datasets.load("mnist")


@pytest.mark.parametrize("name", ["mnist", "fashion-mnist"])
def test_load_real_dataset(data_dir, name):
    (x, y), (x_test, y_test) = load(name, data_dir)
    assert x.shape == (60000, 28, 28) and x_test.shape == (10000, 28, 28)
    assert y.shape == (60000,) and y_test.shape == (10000,)
    assert x.dtype == np.float32 and y.dtype == np.int64
    assert x.min() == 0.0 and x.max() == 1.0
    assert set(np.unique(y).tolist()) == set(np.unique(y_test).tolist()) == set(range(10))
    assert np.bincount(y).min() > 5000  # every class well represented


def test_demo_is_the_start_of_real_mnist(data_dir):
    (x_demo, y_demo), (xt_demo, yt_demo) = load("demo")
    (x, y), (x_test, y_test) = load("mnist", data_dir)
    np.testing.assert_array_equal(x_demo, x[:6000])
    np.testing.assert_array_equal(y_demo, y[:6000])
    np.testing.assert_array_equal(xt_demo, x_test[:1000])
    np.testing.assert_array_equal(yt_demo, y_test[:1000])


# -- folder-per-class images (CIFAR-10 JPEG copy, the user's own images) ------------------


def image_tree(root, classes=("cat", "dog"), per_class=3, size=(5, 4)):
    """PNG images (lossless) in train/<class>/ and test/<class>/; returns the pixels."""
    image = pytest.importorskip("PIL.Image")
    rng = np.random.default_rng(0)
    pixels = {}
    for split in ("train", "test"):
        for label, name in enumerate(classes):
            (root / split / name).mkdir(parents=True)
            for i in range(per_class):
                array = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
                image.fromarray(array).save(root / split / name / f"{i:04d}.png")
                pixels[split, label, i] = array
    return pixels


@pytest.mark.parametrize("zipped", [False, True])
def test_image_folder_loads_exact_pixels_in_a_fixed_mixed_order(tmp_path, zipped):
    pytest.importorskip("tensorflow")
    import shutil

    pixels = image_tree(tmp_path / "images")
    source = tmp_path / "images"
    if zipped:
        source = shutil.make_archive(str(tmp_path / "images"), "zip", tmp_path / "images")
    (x, y), (x_test, y_test) = datasets.load_image_folder(source)
    assert x.shape == (6, 5, 4, 3) and x.dtype == np.float32
    order = [3, 2, 5, 4, 0, 1]  # datasets.image_order(6): class, then file name, permuted
    assert datasets.image_order(6).tolist() == order
    assert y.tolist() == [1, 0, 1, 1, 0, 0] and y_test.tolist() == y.tolist()
    for k, i in enumerate(order):
        label, index = divmod(i, 3)
        np.testing.assert_array_equal(x[k], pixels["train", label, index] / np.float32(255))
        np.testing.assert_array_equal(x_test[k], pixels["test", label, index] / np.float32(255))


def test_first_cifar10_test_images_sample_every_class(data_dir):
    """Benchmarks run slow back ends on the first test images: they must not be one class."""
    pytest.importorskip("tensorflow")  # Keras's image loader reads through tf.data
    if not (data_dir / "cifar10-jpeg").exists():
        pytest.skip("no CIFAR-10 copy in the data directory")
    _, y_test = datasets.load_split("cifar10", "test", data_dir)
    assert len(y_test) == 10_000 and np.bincount(y_test).tolist() == [1000] * 10
    assert np.bincount(y_test[:300], minlength=10).min() >= 15


def test_image_folder_without_splits_is_refused(tmp_path):
    (tmp_path / "cat").mkdir()
    with pytest.raises(FileNotFoundError, match="train/<class>/"):
        datasets.load_image_folder(tmp_path)


def test_cifar10_prefers_the_jpeg_copy_in_the_data_dir(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(datasets, "load_image_folder", lambda p, **kw: calls.append(p) or "ok")
    (tmp_path / "cifar10-jpeg").mkdir()
    assert datasets.load("cifar10", tmp_path) == "ok"
    assert calls == [tmp_path / "cifar10-jpeg"]
