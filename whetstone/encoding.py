"""N-hot output keys: each class is a binary code over a population of output neurons.

The network's last spiking layer has ``width`` neurons; class ``c`` "owns" the neurons
where ``key[c] == 1``. A prediction is the class whose code agrees best with the
spikes (``decode_from_key``), which is the argmax of ``SoftmaxDecode``'s output.

Example:
    >>> import whetstone as ws
    >>> key = ws.encoding.key_generator(num_classes=3, width=6, overlapping=False, seed=0)
    >>> key.sum(axis=1).tolist()          # 2 neurons per class, disjoint
    [2, 2, 2]
    >>> ws.encoding.decode_from_key(ws.encoding.encode_with_key([2, 0], key), key).tolist()
    [2, 0]
"""

from __future__ import annotations

import numpy as np

__all__ = ["decode_from_key", "encode_with_key", "key_generator", "vote"]


def key_generator(
    num_classes: int, width: int, overlapping: bool = True, seed: int | None = 0
) -> np.ndarray:
    """Make a reproducible N-hot key of shape (num_classes, width), entries 0/1.

    Every class gets ``n = width // num_classes`` active neurons. With
    ``overlapping=False`` the codes are disjoint (a random partition); with
    ``overlapping=True`` each code is an independent random choice of ``n`` neurons;
    a code equal to an earlier one is redrawn (there are always enough codes:
    ``n <= width / 2``, so there are at least ``width >= num_classes`` of them).

    Args:
        num_classes: number of classes (at least 2).
        width: number of output neurons (at least ``num_classes``).
        overlapping: allow codes to share neurons.
        seed: seed of the random generator; the same seed gives the same key.

    Example:
        >>> key_generator(2, 4, overlapping=False, seed=1).tolist()
        [[1, 1, 0, 0], [0, 0, 1, 1]]
    """
    if num_classes < 2:
        raise ValueError(f"key_generator: num_classes must be at least 2, got {num_classes}.")
    if width < num_classes:
        raise ValueError(
            f"key_generator: a key {width} wide cannot hold {num_classes} classes; "
            f"use width >= num_classes (e.g. width={10 * num_classes} for 10 neurons per class)."
        )
    n = width // num_classes
    rng = np.random.default_rng(seed)
    key = np.zeros((num_classes, width), dtype=np.int64)
    if not overlapping:
        order = rng.permutation(width)[: n * num_classes].reshape(num_classes, n)
        np.put_along_axis(key, order, 1, axis=1)
        return key
    seen: set[bytes] = set()
    for row in key:
        # Redraw only a code that repeats an earlier one: redrawing the whole key
        # until all codes differ never ends for e.g. 20 classes over 20 neurons.
        while True:
            row[:] = 0
            row[rng.choice(width, size=n, replace=False)] = 1
            if row.tobytes() not in seen:
                seen.add(row.tobytes())
                break
    return key


def encode_with_key(labels, key: np.ndarray) -> np.ndarray:
    """Integer class labels (shape ``(n,)``) to their N-hot codes (shape ``(n, width)``).

    Example:
        >>> encode_with_key([1], [[1, 0, 0], [0, 1, 1]]).tolist()
        [[0, 1, 1]]
    """
    key = np.asarray(key)
    labels = np.asarray(labels)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(
            f"encode_with_key: labels must be a 1-D array of integer classes, got shape "
            f"{labels.shape} of {labels.dtype}; for one-hot labels pass labels.argmax(axis=1)."
        )
    if labels.size and (labels.min() < 0 or labels.max() >= key.shape[0]):
        raise ValueError(
            f"encode_with_key: labels must lie in [0, {key.shape[0] - 1}] for a key of "
            f"{key.shape[0]} classes, got range [{labels.min()}, {labels.max()}]."
        )
    return key[labels]


def vote(spikes, key: np.ndarray) -> np.ndarray:
    """Each class's vote ``(2a - 1) @ (2K - 1)^T``: the logits of ``SoftmaxDecode``.

    Example:
        >>> vote([[1, 0]], [[1, 0], [0, 1]]).tolist()
        [[2.0, -2.0]]
    """
    spikes = np.asarray(spikes, dtype=np.float32)
    signed_key = 2.0 * np.asarray(key, dtype=np.float32) - 1.0
    if spikes.shape[-1] != signed_key.shape[1]:
        raise ValueError(
            f"vote: spikes have {spikes.shape[-1]} neurons but the key is "
            f"{signed_key.shape[1]} wide."
        )
    return (2.0 * spikes - 1.0) @ signed_key.T


def decode_from_key(spikes, key: np.ndarray) -> np.ndarray:
    """The predicted class of each row of output spikes (ties go to the lowest class).

    Example:
        >>> decode_from_key([[0, 1, 1], [1, 0, 0]], [[1, 0, 0], [0, 1, 1]]).tolist()
        [1, 0]
    """
    return vote(spikes, key).argmax(axis=-1)
