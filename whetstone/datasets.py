"""Datasets: MNIST, Fashion-MNIST and CIFAR-10 loaders, and an embedded demo set.

MNIST and Fashion-MNIST are read from their standard IDX gzip files in a data
directory (argument ``data_dir``, else the ``WHETSTONE_DATA`` environment variable),
in a sub-folder ``mnist/`` or ``fashion-mnist/``; without one, ``keras.datasets``
downloads them. CIFAR-10 is read from ``cifar10-jpeg/`` there (a folder-per-class
image dataset, or a zip of one; see :func:`load_image_folder`), else from the original
Python batches in ``cifar-10-batches-py/``, else through ``keras.datasets``. ``demo``
is a 6,000 / 1,000 image subset of MNIST shipped inside the package, so the demo and
first tests need no network and no data directory.

Every loader returns ``((x_train, y_train), (x_test, y_test))`` with images as
float32 in [0, 1] of shape (n, 28, 28) (CIFAR-10: (n, 32, 32, 3)) and labels as
int64 of shape (n,).

The user's own data: :func:`load_split` reads one split of a built-in dataset, of a
``.npz`` file (:func:`load_npz`) or of a folder-per-class image directory or zip
(:func:`load_image_split`), decoding only that split. Integer images (uint8 0..255)
are scaled by 1/255 like the built-in ones; float images are used as given.

Example:
    >>> import whetstone as ws
    >>> (x, y), (x_test, y_test) = ws.datasets.load("demo")
    >>> x.shape, x.dtype.name, y[:5].tolist()
    ((6000, 28, 28), 'float32', [5, 0, 4, 1, 9])
"""

from __future__ import annotations

import gzip
import math
import os
from collections.abc import Callable
from importlib import resources
from pathlib import Path

import numpy as np

__all__ = [
    "DATASETS",
    "DataUnavailableError",
    "check_labels",
    "has_splits",
    "load",
    "load_image_folder",
    "load_image_split",
    "load_npz",
    "load_split",
    "read_idx",
]

Split = tuple[np.ndarray, np.ndarray]
IDX_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (optionally gzipped) of unsigned bytes into an array.

    The header is a magic number ``0x0000 08 D`` (type ubyte, D dimensions) and D
    big-endian uint32 sizes, followed by the data. A missing file raises
    ``FileNotFoundError``; a damaged, truncated or non-IDX file raises ``ValueError``
    naming the file.
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise
    except (OSError, EOFError) as error:
        raise ValueError(f"cannot read IDX file {path}: {error}") from error
    if len(raw) < 4 or raw[:2] != b"\0\0" or raw[2] != 0x08:
        raise ValueError(f"{path} is not an IDX file of unsigned bytes (bad magic number).")
    ndim = raw[3]
    if len(raw) < 4 + 4 * ndim:
        raise ValueError(
            f"{path} is truncated: its header announces {ndim} dimensions "
            f"({4 + 4 * ndim} header bytes), the file holds {len(raw)} bytes."
        )
    shape = tuple(int(n) for n in np.frombuffer(raw, ">u4", count=ndim, offset=4))
    data = np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim)
    if data.size != math.prod(shape):  # exact: np.prod wraps around on huge headers
        raise ValueError(
            f"{path} is truncated or damaged: header says {shape} "
            f"({math.prod(shape)} bytes), file holds {data.size}."
        )
    return data.reshape(shape)


def _data_dir(data_dir: str | os.PathLike | None) -> Path | None:
    chosen = data_dir or os.environ.get("WHETSTONE_DATA")
    return Path(chosen) if chosen else None


def _scaled(images: np.ndarray) -> np.ndarray:
    return (images.astype(np.float32) / 255.0).astype(np.float32)


class DataUnavailableError(RuntimeError):
    """A dataset is neither in the data folder nor downloadable (no network)."""


def _load_idx_dataset(folder: str, keras_name: str, data_dir) -> tuple[Split, Split]:
    root = _data_dir(data_dir)
    if root is None:
        return _from_keras(keras_name)
    return _idx_split(root / folder, "train"), _idx_split(root / folder, "test")


def _idx_split(split_dir: Path, split: str) -> Split:
    """One split of an IDX dataset folder (e.g. ``mnist/``): images scaled, int64 labels."""
    missing = [
        name for files in IDX_FILES.values() for name in files if not (split_dir / name).exists()
    ]
    if missing:
        folder = split_dir.name
        raise FileNotFoundError(
            f"{split_dir} lacks {missing}. Put the four IDX gzip files of {folder} there, "
            "or point --data-dir / WHETSTONE_DATA at the folder that holds "
            f"'{folder}/' (for example ../shared/data)."
        )
    images_name, labels_name = IDX_FILES[split]
    images = read_idx(split_dir / images_name)
    labels = read_idx(split_dir / labels_name).astype(np.int64)
    if len(images) != len(labels):
        raise ValueError(
            f"{split_dir}: {images_name} holds {len(images)} images but "
            f"{labels_name} holds {len(labels)} labels."
        )
    return _scaled(images), labels


def _from_keras(
    name: str,
    hint: str = "pass a data directory (--data-dir or WHETSTONE_DATA)",
) -> tuple[Split, Split]:
    import keras

    try:
        (x, y), (x_test, y_test) = getattr(keras.datasets, name).load_data()
    except Exception as error:
        raise DataUnavailableError(
            f"could not download {name} through keras.datasets ({error}). Without network "
            f"access, {hint}."
        ) from error
    return (_scaled(x), y.reshape(-1).astype(np.int64)), (
        _scaled(x_test),
        y_test.reshape(-1).astype(np.int64),
    )


def load_mnist(data_dir=None) -> tuple[Split, Split]:
    """MNIST digits: 60,000 train and 10,000 test images, 28x28."""
    return _load_idx_dataset("mnist", "mnist", data_dir)


def load_fashion_mnist(data_dir=None) -> tuple[Split, Split]:
    """Fashion-MNIST: 60,000 train and 10,000 test images, 28x28."""
    return _load_idx_dataset("fashion-mnist", "fashion_mnist", data_dir)


def load_cifar10(data_dir=None) -> tuple[Split, Split]:
    """CIFAR-10: 50,000 train and 10,000 test images, 32x32x3.

    From ``cifar10-jpeg/`` in the data directory (a folder-per-class copy, or its zip),
    else the original Python batches in ``cifar-10-batches-py/``, else ``keras.datasets``
    (needs a network the first time).
    """
    root = _data_dir(data_dir)
    if root is not None:
        for candidate in (root / "cifar10-jpeg" / "cifar10-jpeg.zip", root / "cifar10-jpeg"):
            if candidate.exists():
                return load_image_folder(candidate, image_size=(32, 32))
        if (root / "cifar-10-batches-py").is_dir():
            return _cifar_batches(root / "cifar-10-batches-py")
    return _from_keras(
        "cifar10",
        "put cifar10-jpeg/ (folder per class, or its zip) or the original "
        "cifar-10-batches-py/ in the data directory",
    )


def _cifar_batches(folder: Path) -> tuple[Split, Split]:
    """The original CIFAR-10 Python pickles (``data_batch_1..5``, ``test_batch``)."""
    import pickle

    def read(names: list[str]) -> Split:
        xs, ys = [], []
        for name in names:
            with open(folder / name, "rb") as f:
                batch = pickle.load(f, encoding="bytes")
            xs.append(batch[b"data"].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
            ys.append(np.asarray(batch[b"labels"], np.int64))
        return _scaled(np.concatenate(xs)), np.concatenate(ys)

    return read([f"data_batch_{i}" for i in range(1, 6)]), read(["test_batch"])


def load_image_folder(
    path: str | os.PathLike, image_size: tuple[int, int] | None = None, color_mode: str = "rgb"
) -> tuple[Split, Split]:
    """A folder-per-class image dataset, or a zip of one, with ``train/`` and ``test/``.

    Layout: ``train/<class>/<image>`` and ``test/<class>/<image>``; classes are numbered
    in alphabetical order (Keras's ``image_dataset_from_directory`` reads each split).
    Images come back as float32 in [0, 1], shape ``(n, height, width, channels)``, in a
    fixed order that mixes the classes (:func:`image_order`). ``image_size`` defaults to
    the first image's.

    Example:
        >>> (x, y), (x_test, y_test) = load_image_folder("cifar10-jpeg.zip")  # doctest: +SKIP
        >>> x.shape, y.max()                                                  # doctest: +SKIP
        ((50000, 32, 32, 3), 9)
    """
    import tempfile
    import zipfile

    path = Path(path)
    if path.is_file() and zipfile.is_zipfile(path):
        with tempfile.TemporaryDirectory(prefix="whetstone-images-") as tmp:
            with zipfile.ZipFile(path) as archive:
                _check_members(archive, path)
                archive.extractall(tmp)
            return load_image_folder(Path(tmp), image_size, color_mode)
    splits = [path / "train", path / "test"]
    if not all(split.is_dir() for split in splits):
        raise FileNotFoundError(
            f"{path} is not a folder-per-class image dataset: it needs train/<class>/ and "
            "test/<class>/ folders of images (or a zip holding them)."
        )
    train_classes = sorted(p.name for p in splits[0].iterdir() if p.is_dir())
    return tuple(_image_split(s, image_size, color_mode, train_classes) for s in splits)


def _check_members(archive, path: Path) -> None:
    for name in archive.namelist():
        if name.startswith("/") or ".." in Path(name).parts:
            raise ValueError(f"{path}: refusing a zip member outside the archive: {name!r}.")


def _image_split(folder: Path, image_size, color_mode: str, class_names: list[str]) -> Split:
    import keras

    if image_size is None:
        first = next(p for p in sorted(folder.rglob("*")) if p.is_file())
        image_size = keras.utils.load_img(first).size[::-1]
    data = keras.utils.image_dataset_from_directory(
        folder, labels="inferred", label_mode="int", class_names=class_names,
        color_mode=color_mode, image_size=tuple(image_size), shuffle=False, batch_size=1024,
        verbose=False,
    )  # fmt: skip
    xs, ys = [], []
    for images, labels in data.as_numpy_iterator():
        xs.append(images)
        ys.append(labels)
    order = image_order(sum(len(labels) for labels in ys))
    return _scaled(np.concatenate(xs)[order]), np.concatenate(ys).astype(np.int64)[order]


def image_order(n: int) -> np.ndarray:
    """The fixed order of a folder-per-class split's ``n`` images: a seed-0 permutation of
    their class-then-file-name order, so that the first images sample every class (the
    benchmarks' subsets are the first images of a test set).

    Example:
        >>> image_order(5).tolist()
        [2, 4, 3, 0, 1]
    """
    return np.random.default_rng(0).permutation(n)


def load_image_split(
    path: str | os.PathLike,
    split: str = "test",
    image_size: tuple[int, int] | None = None,
    color_mode: str = "rgb",
) -> Split:
    """One split of a folder-per-class image dataset, or of a zip of one, decoded alone.

    With ``train/`` and ``test/`` folders (also inside one top folder of a zip), reads
    ``<split>/<class>/<image>``; a plain ``<class>/<image>`` tree is one set of images,
    returned for either split. Classes are numbered alphabetically (those of ``train/``
    where it exists); images come back as float32 in [0, 1], resized by Keras's loader
    to ``image_size`` (default: the first image's size), in the order of :func:`image_order`.

    Example:
        >>> x, y = load_image_split("mine.zip", "test", (28, 28), "grayscale")  # doctest: +SKIP
        >>> x.shape                                                           # doctest: +SKIP
        (200, 28, 28, 1)
    """
    import tempfile
    import zipfile

    path = Path(path)
    _check_split(split)
    if path.is_file() and zipfile.is_zipfile(path):
        with tempfile.TemporaryDirectory(prefix="whetstone-images-") as tmp:
            with zipfile.ZipFile(path) as archive:
                _check_members(archive, path)
                top = _zip_root(archive.namelist())
                archive.extractall(tmp, members=_split_members(archive.namelist(), top, split))
            return load_image_split(Path(tmp) / top, split, image_size, color_mode)
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such image folder or zip of one.")
    folder = path / split if (path / "train").is_dir() or (path / "test").is_dir() else path
    if not folder.is_dir():
        raise FileNotFoundError(f"{path} has no {split}/ folder of class folders.")
    classes_from = path / "train" if (path / "train").is_dir() else folder
    classes = sorted(p.name for p in classes_from.iterdir() if p.is_dir())
    if not classes:
        raise FileNotFoundError(
            f"{folder} holds no class folders: lay images out as <class>/<image> "
            "(optionally under train/ and test/)."
        )
    return _image_split(folder, image_size, color_mode, classes)


def _zip_root(names: list[str]) -> str:
    """The folder inside a zip that holds the dataset: "" or its one top folder."""
    tops = {name.split("/")[0] for name in names}
    files = [name for name in names if not name.endswith("/")]
    if len(tops) == 1 and not tops & {"train", "test"} and all(n.count("/") >= 2 for n in files):
        return tops.pop()
    return ""


def _split_members(names: list[str], top: str, split: str) -> list[str]:
    """The zip members of one split, and train/'s folders (they number the classes)."""
    prefix = f"{top}/" if top else ""
    has_splits = any(name.startswith(f"{prefix}train/") or name.startswith(f"{prefix}test/")
                     for name in names)  # fmt: skip
    if not has_splits:
        return names
    return [n for n in names if n.startswith(f"{prefix}{split}/")
            or (n.startswith(f"{prefix}train/") and n.endswith("/"))]  # fmt: skip


def _check_split(split: str) -> None:
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}.")


def load_npz(path: str | os.PathLike, split: str = "test") -> Split:
    """One split of a ``.npz`` file: ``x_<split>``, ``y_<split>``, else ``x``, ``y``.

    Only the split's two arrays are read. Integer images in 0..255 (e.g. uint8) are
    scaled by 1/255; float images are used as given. Labels may be integers of shape
    (n,) or (n, 1), or one-hot rows.

    Example:
        >>> import tempfile, os
        >>> path = os.path.join(tempfile.mkdtemp(), "mine.npz")
        >>> np.savez(path, x=np.full((2, 28, 28), 255, np.uint8), y=[3, 7])
        >>> x, y = load_npz(path)
        >>> float(x.max()), x.dtype.name, y.tolist()
        (1.0, 'float32', [3, 7])
    """
    _check_split(split)
    path = Path(path)
    with np.load(path, allow_pickle=False) as data:
        names = set(data.files)
        for x_name, y_name in ((f"x_{split}", f"y_{split}"), ("x", "y")):
            if x_name in names and y_name in names:
                x, y = data[x_name], data[y_name]
                break
        else:
            raise ValueError(
                f"{path} holds {sorted(names)}: save images and integer labels as x and y "
                f"(or x_{split} and y_{split}), e.g. np.savez({path.name!r}, x=x, y=y)."
            )
    where = f"{path} ({x_name}, {y_name})"
    x, y = _user_images(x, where), _user_labels(y, where)
    if len(x) != len(y):
        raise ValueError(f"{where}: {len(x)} images but {len(y)} labels.")
    return x, y


def _user_images(x: np.ndarray, where: str) -> np.ndarray:
    """Images as float32: integers in 0..255 scaled by 1/255, floats as given."""
    if x.ndim < 2 or len(x) == 0:
        raise ValueError(f"{where}: x must be a batch of images (n, ...), got shape {x.shape}.")
    if x.dtype == bool:
        return x.astype(np.float32)
    if np.issubdtype(x.dtype, np.integer):
        low, high = int(x.min()), int(x.max())
        if low < 0 or high > 255:
            raise ValueError(
                f"{where}: integer images must lie in 0..255 (they are scaled by 1/255), got "
                f"{low}..{high}; pass float images scaled as in training instead."
            )
        return _scaled(x)
    if not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f"{where}: x must hold numbers, got dtype {x.dtype}.")
    x = x.astype(np.float32, copy=False)
    if not np.isfinite(x).all():
        raise ValueError(f"{where}: x holds NaN or Inf values.")
    return x


def _user_labels(y: np.ndarray, where: str) -> np.ndarray:
    """Labels as int64 (n,): from integers, (n, 1), or one-hot rows."""
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    elif y.ndim == 2 and np.isin(y, (0, 1)).all() and (y.sum(axis=1) == 1).all():
        y = y.argmax(axis=1)
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.number) or (y != np.round(y)).any():
        raise ValueError(
            f"{where}: labels must be class numbers of shape (n,) (or one-hot rows), got "
            f"shape {y.shape} and dtype {y.dtype}."
        )
    if len(y) and y.min() < 0:
        raise ValueError(f"{where}: labels must be class numbers >= 0, got {y.min()}.")
    return y.astype(np.int64)


def check_labels(y: np.ndarray, classes: int, where: str) -> None:
    """Refuse labels that a model with ``classes`` outputs cannot predict.

    Example:
        >>> check_labels(np.array([0, 10]), 10, "my.npz")
        Traceback (most recent call last):
        ...
        ValueError: my.npz: labels go up to 10 but the model has 10 classes (0..9); ...
    """
    if len(y) and int(y.max()) >= classes:
        raise ValueError(
            f"{where}: labels go up to {int(y.max())} but the model has {classes} classes "
            f"(0..{classes - 1}); number the classes from 0, as in training."
        )


def load_split(
    source: str | os.PathLike,
    split: str = "test",
    data_dir: str | os.PathLike | None = None,
    *,
    image_size: tuple[int, int] | None = None,
    color_mode: str = "rgb",
) -> Split:
    """One split of a dataset: a built-in name, a ``.npz``, or an image folder or zip.

    Only that split is decoded where the source allows it (IDX files, CIFAR-10's JPEG
    copy, ``.npz`` members, image folders). ``image_size`` and ``color_mode`` apply to
    image folders.

    Example:
        >>> x, y = load_split("demo", "test")
        >>> x.shape, y.dtype.name
        ((1000, 28, 28), 'int64')
    """
    _check_split(split)
    if str(source) in DATASETS:
        return _builtin_split(str(source), split, data_dir)
    path = Path(source)
    if path.suffix == ".npz":
        return load_npz(path, split)
    if path.is_dir() or path.suffix == ".zip":
        return load_image_split(path, split, image_size, color_mode)
    raise ValueError(
        f"{source}: not a dataset; give one of {sorted(DATASETS)}, a .npz file with x and "
        "y, or a folder-per-class image directory (or a .zip of one)."
    )


def _builtin_split(name: str, split: str, data_dir) -> Split:
    root = _data_dir(data_dir)
    folders = {"mnist": "mnist", "fashion-mnist": "fashion-mnist"}
    if root is not None and name in folders:
        return _idx_split(root / folders[name], split)
    if root is not None and name == "cifar10":
        for candidate in (root / "cifar10-jpeg" / "cifar10-jpeg.zip", root / "cifar10-jpeg"):
            if candidate.exists():
                return load_image_split(candidate, split, (32, 32))
    return load(name, data_dir)[("train", "test").index(split)]


def has_splits(source: str | os.PathLike) -> bool:
    """True when ``source`` has a test split apart from its training split.

    Example:
        >>> has_splits("mnist")
        True
    """
    if str(source) in DATASETS:
        return True
    path = Path(source)
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as data:
            return {"x_train", "x_test"} <= set(data.files)
    if path.is_dir():
        return (path / "train").is_dir() and (path / "test").is_dir()
    import zipfile

    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
    top = _zip_root(names)
    prefix = f"{top}/" if top else ""
    return all(any(n.startswith(f"{prefix}{s}/") for n in names) for s in ("train", "test"))


def load_demo(data_dir=None) -> tuple[Split, Split]:
    """The embedded MNIST subset: the first 6,000 train and 1,000 test images."""
    with resources.files("whetstone").joinpath("data/mnist_demo.npz").open("rb") as f:
        arrays = np.load(f)
        return (_scaled(arrays["x_train"]), arrays["y_train"].astype(np.int64)), (
            _scaled(arrays["x_test"]),
            arrays["y_test"].astype(np.int64),
        )


DATASETS: dict[str, Callable[..., tuple[Split, Split]]] = {
    "demo": load_demo,
    "mnist": load_mnist,
    "fashion-mnist": load_fashion_mnist,
    "cifar10": load_cifar10,
}


def load(name: str, data_dir: str | os.PathLike | None = None) -> tuple[Split, Split]:
    """Load a dataset by name: one of ``demo``, ``mnist``, ``fashion-mnist``, ``cifar10``."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {sorted(DATASETS)}.")
    return DATASETS[name](data_dir)
