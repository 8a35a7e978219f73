"""An independent check of an exported NIR file: run it with snnTorch's NIR reader.

snnTorch (``snntorch.import_nir``) and torch may live in their own environment; then
:func:`independent_scores` runs this file there as a plain script (it imports only
NumPy at the top)::

    .venv-nir/bin/python whetstone/backends/nir/snntorch_reader.py GRAPH.nir X.npy OUT.npy STEPS

The environment is found at ``$WHETSTONE_NIR_READER_PYTHON``, else ``.venv-nir/bin/python``
in the current folder. Install lines::

    python3 -m venv .venv-nir
    .venv-nir/bin/pip install "torch==2.13.0" "nir==1.0.8" "nirtorch==2.6" \\
        "snntorch==1.0.0" "numpy<2"

Example:
    >>> from whetstone.backends.nir import snntorch_reader
    >>> snntorch_reader.reader_available(python="/no/such/python") in ("here", None)
    True
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

READER_PYTHON = Path(os.environ.get("WHETSTONE_NIR_READER_PYTHON", ".venv-nir/bin/python"))
"""The Python of the environment that has snnTorch, when this one has not."""


def snntorch_scores(path: str | os.PathLike, x: np.ndarray, steps: int) -> np.ndarray:
    """Run a NIR file with snnTorch's reader, in this process: each sample (unbatched,
    NIR's per-sample layout) held for ``steps`` steps from a fresh state; the last
    step's output, ``(len(x), outputs)``."""
    import nir
    import torch
    from snntorch.import_nir import import_from_nir

    module = import_from_nir(nir.read(path))
    outputs = []
    with torch.no_grad():
        for sample in np.asarray(x, np.float32):
            for m in module.modules():  # fresh hidden state per sample
                if hasattr(m, "reset_hidden"):
                    m.reset_hidden()
            state, inp = None, torch.from_numpy(sample)
            for _ in range(steps):
                out, state = module(inp, state)
            outputs.append(out.double().numpy())
    return np.stack(outputs)


def reader_available(python: str | os.PathLike | None = None) -> str | None:
    """Where snnTorch's NIR reader runs: ``"here"``, ``"venv"`` (``python``, default
    :data:`READER_PYTHON`) or None."""
    try:
        import snntorch.import_nir  # noqa: F401

        return "here"
    except Exception:
        pass
    return "venv" if Path(python or READER_PYTHON).exists() else None


def independent_scores(
    path: str | os.PathLike, x: np.ndarray, steps: int, python: str | os.PathLike | None = None
) -> np.ndarray:
    """snnTorch's outputs for ``x`` (NIR layout, see ``nir_input``), here or in ``python``."""
    python = Path(python or READER_PYTHON)
    where = reader_available(python)
    if where == "here":
        return snntorch_scores(path, x, steps)
    if where is None:
        raise RuntimeError(
            f"snnTorch's NIR reader is not installed here nor in {python}; see "
            "whetstone/backends/nir/snntorch_reader.py for the install lines."
        )
    with tempfile.TemporaryDirectory() as folder:
        x_path, out_path = Path(folder, "x.npy"), Path(folder, "out.npy")
        np.save(x_path, np.asarray(x, np.float32))
        command = [str(python), __file__, str(path), str(x_path), str(out_path), str(steps)]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"snnTorch reader failed:\n{done.stderr[-3000:]}")
        return np.load(out_path)


if __name__ == "__main__":  # the reader, in its own environment: GRAPH.nir X.npy OUT.npy STEPS
    graph_path, x_path, out_path, steps = sys.argv[1:]
    np.save(out_path, snntorch_scores(graph_path, np.load(x_path), int(steps)))
