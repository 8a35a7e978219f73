"""whetstone: sharpen Keras networks into single-spike neuromorphic networks.

Example:
    >>> import whetstone as ws
    >>> ws.__version__
    '0.1.0'
"""

from whetstone import callbacks, datasets, encoding, layers, sharpness

__version__ = "0.1.0"

__all__ = ["__version__", "callbacks", "datasets", "encoding", "layers", "sharpness"]
