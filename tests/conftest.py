"""Shared fixtures: the real datasets in ../shared/data and quiet TensorFlow."""

import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The folder with mnist/ and fashion-mnist/ (WHETSTONE_DATA or ../shared/data)."""
    path = Path(os.environ.get("WHETSTONE_DATA", SHARED_DATA))
    if not (path / "mnist").is_dir():
        pytest.skip(f"real datasets not found in {path}; set WHETSTONE_DATA")
    return path


@pytest.fixture(autouse=True)
def seeded_keras() -> None:
    """Every test starts from the same seed, so Keras's initial weights repeat run to run.

    Without it a test that builds a random network draws new kernels on every run, and one
    draw in a hundred can leave a layer silent (CI once saw that).
    """
    import keras

    keras.utils.set_random_seed(0)
