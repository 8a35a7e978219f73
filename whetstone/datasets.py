"""Datasets: MNIST, Fashion-MNIST and CIFAR-10 loaders, and an embedded demo set.

MNIST and Fashion-MNIST are read from their standard IDX gzip files in a data
directory (argument ``data_dir``, else the ``WHETSTONE_DATA`` environment variable),
in a sub-folder ``mnist/`` or ``fashion-mnist/``; without one, ``keras.datasets``
downloads them. ``demo`` is a 6,000 / 1,000 image subset of MNIST shipped inside the
package, so the demo and first tests need no network and no data directory.

Every loader returns ``((x_train, y_train), (x_test, y_test))`` with images as
float32 in [0, 1] of shape (n, 28, 28) (CIFAR-10: (n, 32, 32, 3)) and labels as
int64 of shape (n,).

Example:
    >>> import whetstone as ws
    >>> (x, y), (x_test, y_test) = ws.datasets.load("demo")
    >>> x.shape, x.dtype.name, y[:5].tolist()
    ((6000, 28, 28), 'float32', [5, 0, 4, 1, 9])
"""

from __future__ import annotations

import gzip
import os
from collections.abc import Callable
from importlib import resources
from pathlib import Path

import numpy as np

__all__ = ["DATASETS", "load", "read_idx"]

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
    if data.size != int(np.prod(shape)):
        raise ValueError(
            f"{path} is truncated or damaged: header says {shape} "
            f"({int(np.prod(shape))} bytes), file holds {data.size}."
        )
    return data.reshape(shape)


def _data_dir(data_dir: str | os.PathLike | None) -> Path | None:
    chosen = data_dir or os.environ.get("WHETSTONE_DATA")
    return Path(chosen) if chosen else None


def _scaled(images: np.ndarray) -> np.ndarray:
    return (images.astype(np.float32) / 255.0).astype(np.float32)


def _load_idx_dataset(folder: str, keras_name: str, data_dir) -> tuple[Split, Split]:
    root = _data_dir(data_dir)
    if root is None:
        return _from_keras(keras_name)
    split_dir = root / folder
    missing = [
        name for files in IDX_FILES.values() for name in files if not (split_dir / name).exists()
    ]
    if missing:
        raise FileNotFoundError(
            f"{split_dir} lacks {missing}. Put the four IDX gzip files of {folder} there, "
            "or point --data-dir / WHETSTONE_DATA at the folder that holds "
            f"'{folder}/' (for example ../shared/data)."
        )
    splits = []
    for images_name, labels_name in IDX_FILES.values():
        images = read_idx(split_dir / images_name)
        labels = read_idx(split_dir / labels_name).astype(np.int64)
        if len(images) != len(labels):
            raise ValueError(
                f"{split_dir}: {images_name} holds {len(images)} images but "
                f"{labels_name} holds {len(labels)} labels."
            )
        splits.append((_scaled(images), labels))
    return splits[0], splits[1]


def _from_keras(
    name: str,
    hint: str = "pass a data directory (--data-dir or WHETSTONE_DATA)",
) -> tuple[Split, Split]:
    import keras

    try:
        (x, y), (x_test, y_test) = getattr(keras.datasets, name).load_data()
    except Exception as error:
        raise RuntimeError(
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
    """CIFAR-10 through ``keras.datasets`` (needs a network the first time)."""
    return _from_keras(
        "cifar10",
        "run keras.datasets.cifar10.load_data() once where a network is reachable and "
        "copy Keras's cache (~/.keras/datasets) to this machine",
    )


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
