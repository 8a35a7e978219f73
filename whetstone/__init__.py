"""whetstone: sharpen Keras networks into single-spike neuromorphic networks.

Importing the package registers its Keras layers, so ``keras.models.load_model``
reads models that use them.

Example:
    >>> import whetstone as ws
    >>> ws.__version__
    '0.1.0'
"""

from whetstone import (
    backends,
    callbacks,
    convert,
    datasets,
    encoding,
    layers,
    models,
    network,
    rewrite,
    sharpness,
    simulate,
)

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "backends",
    "callbacks",
    "convert",
    "datasets",
    "encoding",
    "layers",
    "models",
    "network",
    "rewrite",
    "sharpness",
    "simulate",
]
