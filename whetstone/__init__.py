"""whetstone: sharpen Keras networks into single-spike neuromorphic networks.

Submodules load on first use, so the network, the simulator, the back ends and the
CLI's ``--help`` work without importing TensorFlow or Keras. Keras finds the layers
of a saved model by their module (``whetstone.layers``); when Keras is already
imported, importing the package registers them at once.

Example:
    >>> import whetstone as ws
    >>> ws.__version__
    '0.1.0'
"""

import contextlib
import importlib
import sys

from whetstone import _imports

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "backends",
    "callbacks",
    "convert",
    "datasets",
    "encoding",
    "energy",
    "files",
    "layers",
    "models",
    "network",
    "plot",
    "quantize",
    "rewrite",
    "sharpness",
    "simulate",
    "spike_budget",
    "weight_sharpening",
    "widen",
]


def __getattr__(name: str):
    """Import a submodule on first use (``whetstone.simulate``, ``whetstone.layers``, ...)."""
    if name in __all__ and name != "__version__":
        return importlib.import_module(f"whetstone.{name}")
    raise AttributeError(f"module 'whetstone' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


def _register_layers(load_keras) -> None:
    load_keras()
    with contextlib.suppress(ImportError):
        importlib.import_module("whetstone.layers")
        importlib.import_module("whetstone.spike_budget")  # a Keras object saved with models


if sys.modules.get("keras") is not None:  # Keras is loaded: register the layers now
    importlib.import_module("whetstone.layers")
    importlib.import_module("whetstone.spike_budget")
else:  # register them as soon as anything imports Keras
    _imports.around_import("keras", _register_layers)
