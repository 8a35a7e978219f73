"""whetstone: sharpen Keras networks into single-spike neuromorphic networks.

Submodules load on first use (``ws.layers``, ``ws.callbacks``, ...), so importing
the package, or running ``whetstone --help``, does not start TensorFlow.

Example:
    >>> import whetstone as ws
    >>> ws.__version__
    '0.1.0'
    >>> ws.encoding.key_generator(2, 4, overlapping=False, seed=1).shape
    (2, 4)
"""

import importlib

__version__ = "0.1.0"

_SUBMODULES = (
    "backends",
    "callbacks",
    "convert",
    "datasets",
    "encoding",
    "layers",
    "models",
    "network",
    "sharpness",
    "simulate",
)

__all__ = ["__version__", *_SUBMODULES]


def __getattr__(name: str):
    if name in _SUBMODULES:
        return importlib.import_module(f"whetstone.{name}")
    raise AttributeError(f"module 'whetstone' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
