"""Run the README's command-line examples and keep their output in ``benchmarks/results``.

python -m benchmarks.cli_examples     # then: python -m benchmarks.report --update README.md
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from benchmarks.common import RESULTS

MODELS = RESULTS / "models"
EXAMPLES = {
    "demo": ["demo"],
    "inspect": ["inspect", str(MODELS.relative_to(Path.cwd()) / "conv_mnist.keras")],
    "verify": [
        "verify",
        str(MODELS.relative_to(Path.cwd()) / "dense_mnist.keras"),
        "--to",
        "nengo",
        "--data",
        "mnist",
        "-n",
        "1000",
    ],
}


def main() -> None:
    script = Path(sys.executable).parent / "whetstone"
    env = {**os.environ, "WHETSTONE_DATA": os.environ.get("WHETSTONE_DATA", "../shared/data")}
    for name, args in EXAMPLES.items():
        done = subprocess.run(
            [str(script), *args], capture_output=True, text=True, env=env, check=True
        )
        path = RESULTS / f"cli_{name}.txt"
        path.write_text(f"$ whetstone {' '.join(args)}\n{done.stdout}")
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
