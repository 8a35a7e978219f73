"""NIR figures of one reference model (used by ``benchmarks.suite``): round trip and an
independent reader (snnTorch).

Per reference model: export to a ``.nir`` file, read
it with ``nir.read``, import it with ``whetstone.backends.nir.load``, run the reference
simulator and compare predictions with the original network on the test images; run
the file through snnTorch's NIR reader (``snntorch.import_nir``, stepped for the
network's latency with the input held) on a subset; record file size and node counts.

snnTorch and torch live in their own environment (``.venv-nir``, see
``tests/test_backend_nir.py``); this file runs there as a plain script too::

    .venv-nir/bin/python benchmarks/backend_nir.py GRAPH.nir X.npy OUT.npy STEPS

Example:
    >>> from benchmarks.backend_nir import independent_scores    # doctest: +SKIP
    >>> scores = independent_scores("model.nir", x_nir, steps=4)  # doctest: +SKIP
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
READER_PYTHON = Path(os.environ.get("WHETSTONE_NIR_READER_PYTHON", ROOT / ".venv-nir/bin/python"))


# ---------------------------------------------------------------- independent reader


def snntorch_scores(path, x: np.ndarray, steps: int) -> np.ndarray:
    """Run a NIR file with snnTorch's reader: each sample (unbatched, NIR's per-sample
    layout) held for ``steps`` steps from a fresh state; the last step's output."""
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


def reader_available() -> str | None:
    """Where snnTorch's NIR reader runs: "here", "venv" (``.venv-nir``) or None."""
    try:
        import snntorch.import_nir  # noqa: F401

        return "here"
    except Exception:
        pass
    return "venv" if READER_PYTHON.exists() else None


def independent_scores(path, x: np.ndarray, steps: int) -> np.ndarray:
    """snnTorch's outputs for ``x`` (NIR layout), here or in ``.venv-nir``."""
    where = reader_available()
    if where == "here":
        return snntorch_scores(path, x, steps)
    if where is None:
        raise RuntimeError(
            f"snnTorch's NIR reader is not installed here nor in {READER_PYTHON}; see "
            "tests/test_backend_nir.py for the install lines."
        )
    with tempfile.TemporaryDirectory() as folder:
        x_path, out_path = Path(folder, "x.npy"), Path(folder, "out.npy")
        np.save(x_path, np.asarray(x, np.float32))
        command = [str(READER_PYTHON), __file__, str(path), str(x_path), str(out_path)]
        done = subprocess.run([*command, str(steps)], capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"snnTorch reader failed:\n{done.stderr[-3000:]}")
        return np.load(out_path)


# ---------------------------------------------------------------- benchmark


def measure(subject, reader_images: int) -> dict:
    """Round trip on a loaded model's test images, snnTorch on the first ``reader_images``."""
    from whetstone import simulate
    from whetstone.backends import nir as nir_backend

    net, x_test, y_test, reference = subject.net, subject.x, subject.y, subject.reference
    with tempfile.TemporaryDirectory() as folder:
        path = nir_backend.export(net, Path(folder) / f"{subject.name}.nir")
        started = time.perf_counter()
        loaded = nir_backend.load(path)
        trip = simulate.run(loaded, x_test)
        trip_seconds = time.perf_counter() - started
        import nir

        kinds = Counter(type(n).__name__ for n in nir.read(path).nodes.values())
        figures = {
            "file_bytes": path.stat().st_size,
            "node_counts": dict(sorted(kinds.items())),
            "stages": len(net.stages),
            "neurons": net.num_neurons,
            "synapses": net.num_synapses,
            "identical_network": loaded == net,
            "round_trip": {
                "images": len(x_test),
                "agreement": float((trip.predictions == reference.predictions).mean()),
                "identical_predictions": bool(
                    np.array_equal(trip.predictions, reference.predictions)
                ),
                "identical_spikes": bool(
                    np.array_equal(trip.output_spikes, reference.output_spikes)
                ),
                "seconds": trip_seconds,
            },
            "reference_accuracy": float((reference.predictions == y_test).mean()),
            "reference_tie_samples": int(reference.tie_mask.sum()),
        }
        if reader_images and not net.is_chain:  # snnTorch's importer maps no nir.Delay
            figures["snntorch"] = {"skipped": "snnTorch's NIR importer has no Delay node"}
        elif reader_available() and reader_images:
            n = reader_images
            started = time.perf_counter()
            scores = independent_scores(path, nir_backend.nir_input(net, x_test[:n]), net.latency)
            predictions = scores.argmax(axis=1)
            agree = predictions == reference.predictions[:n]
            figures["snntorch"] = {
                "images": n,
                "steps": net.latency,
                "agreement": float(agree.mean()),
                "disagreements": int((~agree).sum()),
                "disagreements_on_tie_samples": int((~agree & reference.tie_mask[:n]).sum()),
                "scores_equal_reference": bool(np.array_equal(scores, reference.scores[:n])),
                "seconds": time.perf_counter() - started,
            }
    return figures


def reader_versions() -> dict:
    """Versions of the independent reader's packages (here or in ``.venv-nir``)."""
    from importlib import metadata

    reader = {"reader": "snnTorch import_nir (nirtorch)", "python": str(READER_PYTHON)}
    for package in ("nir", "nirtorch", "snntorch", "torch"):
        try:
            reader[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            reader[package] = _venv_version(package)
    return reader


def _venv_version(package: str) -> str | None:
    if not READER_PYTHON.exists():
        return None
    code = f"from importlib.metadata import version; print(version({package!r}))"
    done = subprocess.run([str(READER_PYTHON), "-c", code], capture_output=True, text=True)
    return done.stdout.strip() or None


if __name__ == "__main__":  # the reader, in .venv-nir: GRAPH.nir X.npy OUT.npy STEPS
    graph_path, x_path, out_path, steps = sys.argv[1:]
    np.save(out_path, snntorch_scores(graph_path, np.load(x_path), int(steps)))
