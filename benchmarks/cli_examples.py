"""Run the README's command-line examples and keep their output in ``benchmarks/results``.

python -m benchmarks run cli     # then: python -m benchmarks report
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.common import RESULTS
from whetstone import files

MODELS = "benchmarks/results/models"
EXAMPLES = {
    "demo": "demo",
    "inspect": f"inspect {MODELS}/conv_mnist.keras",
    "verify": f"verify {MODELS}/dense_mnist.keras --to nengo --data mnist -n 1000",
    "sharpen": (
        "sharpen model.keras --data demo --epochs 11 --start-epoch 2 --steps 2 "
        "--hone-epochs 3 --hone-learning-rate 0.4 -o s.keras"
    ),
}


def _untrained_model(folder: Path) -> None:
    """``model.keras``: the dense MNIST network, never sharpened, for the sharpen example."""
    import whetstone

    whetstone.models.dense_mnist().save(folder / "model.keras")


def main(out: Path = RESULTS) -> None:
    """Run every example; write ``out/cli_<name>.txt``."""
    root = Path(__file__).resolve().parents[1]
    script = Path(sys.executable).parent / "whetstone"
    env = {**os.environ, "WHETSTONE_DATA": os.environ.get("WHETSTONE_DATA", "../shared/data")}
    with tempfile.TemporaryDirectory() as scratch:
        _untrained_model(Path(scratch))
        for name, command in EXAMPLES.items():
            args = command.split()
            cwd = scratch if name == "sharpen" else root
            done = subprocess.run(
                [str(script), *args], capture_output=True, text=True, env=env, cwd=cwd, check=True
            )
            path = Path(out) / f"cli_{name}.txt"
            text = f"$ whetstone {' '.join(args)}\n{done.stdout}"
            path = files.write_bytes(path, text.encode(), force=True)
            print(f"wrote {path}")


if __name__ == "__main__":
    main()
