"""What every benchmark records next to its numbers, and how it writes them."""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from importlib import metadata
from pathlib import Path

from whetstone import files

RESULTS = Path(__file__).resolve().parent / "results"
PACKAGES = (  # distributions; whetstone itself (distribution whetstone-snn) is added
    "keras",
    "tensorflow",
    "numpy",
    "nengo",
    "nengo-loihi",
    "nir",
    "pyNN",
    "sPyNNaker",
    "nest-simulator",
)
VECTOR_FLAGS = (("AVX-512", "avx512f"), ("AVX2", "avx2"), ("SSE4.2", "sse4_2"))


def _command() -> str:
    """How this run was started, e.g. ``python -m benchmarks.backend_nir --limit 100``."""
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    start = ["-m", spec.name] if spec and spec.name else [sys.argv[0]]
    return " ".join(["python", *start, *sys.argv[1:]])


def _cpu() -> dict:
    """The CPU's model name and widest vector extension (AVX-512 or AVX2 on x86, where
    ``/proc/cpuinfo`` tells: both Keras and the simulator's kernels use it), or nothing."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return {}
    fields = dict(line.split(":", 1) for line in info.splitlines() if ":" in line)
    fields = {k.strip(): v.strip() for k, v in fields.items()}
    flags = fields.get("flags", "").split()
    vector = next((v for v, flag in VECTOR_FLAGS if flag in flags), None)
    return {"cpu": fields.get("model name"), "vector": vector}


def environment() -> dict:
    """Versions, machine and command line of this run."""
    import whetstone

    versions = {"whetstone": whetstone.__version__}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "versions": versions,
        "python": platform.python_version(),
        "machine": {"cores": os.cpu_count(), "processor": platform.machine(), **_cpu()},
        "command": _command(),
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def accuracy(model, x, y) -> float:
    """Test accuracy of a Keras classifier ``model`` (``predict``, batches of 500) on ``x``,
    against integer labels ``y``."""
    return float((model.predict(x, verbose=0, batch_size=500).argmax(axis=1) == y).mean())


def write_result(name: str, result: dict, folder: Path = RESULTS) -> Path:
    """Write ``result`` (plus the environment) to ``folder/name.json`` atomically."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.json"
    payload = {"benchmark": name, **environment(), **result}
    return files.write_bytes(path, (json.dumps(payload, indent=2) + "\n").encode(), force=True)
