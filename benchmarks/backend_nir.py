"""NIR figures of one reference model (used by ``benchmarks.suite``): round trip and an
independent reader (snnTorch).

Per reference model: export to a ``.nir`` file, read
it with ``nir.read``, import it with ``whetstone.backends.nir.load``, run the reference
simulator and compare predictions with the original network on the test images; run
the file through snnTorch's NIR reader (``snntorch.import_nir``, stepped for the
network's latency with the input held) on a subset; record file size and node counts.

snnTorch and torch live in their own environment (``.venv-nir``, see
``whetstone/backends/nir/snntorch_reader.py``, which runs the reader).

Example:
    >>> from benchmarks.backend_nir import measure
    >>> figures = measure(subject.load("dense_mnist", data_dir, 100), 20)  # doctest: +SKIP
    >>> figures["round_trip"]["identical_predictions"]                      # doctest: +SKIP
    True
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

from whetstone.backends.nir.snntorch_reader import independent_scores, reader_available

ROOT = Path(__file__).resolve().parents[1]
READER_PYTHON = Path(os.environ.get("WHETSTONE_NIR_READER_PYTHON", ROOT / ".venv-nir/bin/python"))


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
        elif reader_available(READER_PYTHON) and reader_images:
            n = reader_images
            started = time.perf_counter()
            x_nir = nir_backend.nir_input(net, x_test[:n])
            scores = independent_scores(path, x_nir, net.latency, READER_PYTHON)
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
