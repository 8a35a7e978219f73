"""Peer comparison: NengoDL's Converter (rate-coded spiking ReLU) on whetstone's architectures.

NengoDL needs TensorFlow 2.12 / Keras 2, which cannot share whetstone's environment, so
this script creates its own (``.venv-nengodl``: tensorflow 2.12.1, nengo-dl 3.6.0,
nengo 3.2.0, numpy 1.23.5), hands it the data through a temporary ``.npz`` and runs
``benchmarks/nengodl_worker.py`` there. Per model (``dense_mnist``, ``conv_mnist``,
``conv_fashion``: whetstone's architectures with ReLU and a 10-way softmax output; the
``*_avgpool`` twins train average instead of max pooling, which is what NengoDL can
convert without changing the network) it records the ANN's accuracy, the spiking
network's accuracy at every timestep 1..T for each firing-rate scale, the timesteps it
needs to come within 1 and 0.1 points of its ANN, its spike counts and its images/s.
Writes ``benchmarks/results/peer_nengodl.json``.

    python -m benchmarks.peer_nengodl --data ../shared/data              # full run
    python -m benchmarks.peer_nengodl --setup-only                       # just the env
    python -m benchmarks.peer_nengodl --quick --out /tmp/smoke           # smoke run

Example:
    >>> from benchmarks.peer_nengodl import run                   # doctest: +SKIP
    >>> result = run(["dense_mnist"], "../shared/data", quick=True)
    >>> result["models"]["dense_mnist"]["best"]["within_1pt"]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import RESULTS, environment, write_result
from whetstone import datasets

ROOT = Path(__file__).resolve().parents[1]
ENV = ROOT / ".venv-nengodl"
WORKER = Path(__file__).resolve().parent / "nengodl_worker.py"
PINS = {"tensorflow": "2.12.1", "nengo-dl": "3.6.0", "nengo": "3.2.0", "numpy": "1.23.5"}
DATASETS = {
    "dense_mnist": "mnist",
    "conv_mnist": "mnist",
    "conv_fashion": "fashion-mnist",
    "conv_mnist_avgpool": "mnist",  # AveragePooling2D in the ANN: what NengoDL converts
    "conv_fashion_avgpool": "fashion-mnist",
    "vgg_cifar10": "cifar10",
    "vgg_cifar10_avgpool": "cifar10",
}
EPOCHS = {name: 10 if name == "dense_mnist" else 5 for name in DATASETS}
FULL = {"timesteps": 128, "scales": [1, 10, 100, 1000, 10000], "n_test_conv": 2000}
QUICK = {"train": 512, "test": 128, "timesteps": 8, "scales": [10, 1000], "epochs": 1}
CHECK = (
    "import json, numpy, nengo, nengo_dl, tensorflow as tf; "
    "print(json.dumps({'tensorflow': tf.__version__, 'nengo-dl': nengo_dl.__version__, "
    "'nengo': nengo.__version__, 'numpy': numpy.__version__}))"
)


def _log(message: str) -> None:
    print(f"[peer_nengodl] {message}", file=sys.stderr, flush=True)


def _child_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    return env


def _python(path: Path) -> Path:
    return path / "bin" / "python"


def _env_versions(path: Path) -> dict | None:
    """The peer env's versions, or None when it cannot import them."""
    if not _python(path).exists():
        return None
    check = subprocess.run(
        [str(_python(path)), "-I", "-c", CHECK], capture_output=True, text=True, env=_child_env()
    )
    if check.returncode != 0:
        return None
    return json.loads(check.stdout.strip().splitlines()[-1])


def _base_python() -> str:
    if (3, 8) <= sys.version_info[:2] <= (3, 11):
        return sys.executable
    return "python3.11"  # TensorFlow 2.12 has wheels for Python 3.8-3.11 only


def ensure_env(path: Path = ENV) -> dict:
    """Create (or repair) the peer environment at ``path``; return its package versions.

    Does nothing when ``path`` already imports the pinned versions. Raises
    ``RuntimeError`` naming the failed step and the commands to run by hand.
    """
    path = Path(path)
    versions = _env_versions(path)
    if versions == PINS:
        return versions
    pins = [f"{name}=={version}" for name, version in PINS.items()]
    steps = []
    if not _python(path).exists():
        steps.append([_base_python(), "-m", "venv", str(path)])
    steps.append([str(_python(path)), "-m", "pip", "install", "--quiet", *pins])
    for command in steps:
        _log("setting up the peer env: " + " ".join(command))
        done = subprocess.run(command, capture_output=True, text=True, env=_child_env())
        if done.returncode != 0:
            by_hand = f"python3.11 -m venv {path} && {_python(path)} -m pip install " + " ".join(
                f'"{pin}"' for pin in pins
            )
            raise RuntimeError(
                f"creating the NengoDL peer env failed at: {' '.join(command)}\n"
                f"{(done.stderr or done.stdout)[-2000:]}\nTo create it by hand: {by_hand}"
            )
    versions = _env_versions(path)
    if versions != PINS:
        raise RuntimeError(
            f"the peer env {path} was installed but imports {versions}, not {PINS}; "
            f"remove {path} and run `python -m benchmarks.peer_nengodl --setup-only` again."
        )
    return versions


def _stream(command: list[str], cwd: Path) -> tuple[int, str]:
    """Run ``command``, copying its output to stderr; return its status and last lines."""
    tail: list[str] = []
    with subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=_child_env(),
        cwd=cwd,
    ) as child:
        for line in child.stdout:
            sys.stderr.write(line)
            sys.stderr.flush()
            tail = [*tail[-39:], line]
    return child.returncode, "".join(tail)


def _write_data(models: list[str], data_dir, folder: Path, quick: bool) -> Path:
    arrays = {}
    for dataset in sorted({DATASETS[m] for m in models}):
        (x, y), (x_test, y_test) = datasets.load(dataset, data_dir)
        if quick:
            x, y = x[: QUICK["train"]], y[: QUICK["train"]]
            x_test, y_test = x_test[: QUICK["test"]], y_test[: QUICK["test"]]
        arrays.update(
            {
                f"{dataset}_x_train": x,
                f"{dataset}_y_train": y,
                f"{dataset}_x_test": x_test,
                f"{dataset}_y_test": y_test,
            }
        )
    path = folder / "data.npz"
    np.savez(path, **arrays)
    return path


def run(
    models: list[str],
    data_dir,
    *,
    epochs: dict | None = None,
    n_test: int | None = None,
    quick: bool = False,
    env: Path = ENV,
    timesteps: int | None = None,
    scales: list[float] | None = None,
) -> dict:
    """Run the peer benchmark in the NengoDL env; return the result (not written).

    ``epochs`` overrides the per-model epochs, ``n_test`` the number of test images the
    conv models' timestep sweep uses (dense always uses the whole test set). ``quick``:
    512 training and 128 test images, one epoch, 8 timesteps, two scales. ``timesteps``
    and ``scales`` override the sweep's (e.g. a shorter sweep for the larger CIFAR-10 net).
    """
    unknown = sorted(set(models) - set(DATASETS))
    if unknown:
        raise ValueError(f"unknown models {unknown}; choose from {sorted(DATASETS)}.")
    started = time.perf_counter()
    versions = ensure_env(env)
    chosen = {m: QUICK["epochs"] if quick else EPOCHS[m] for m in models}
    chosen.update({m: e for m, e in (epochs or {}).items() if m in chosen})
    n_conv = n_test or (QUICK["test"] if quick else FULL["n_test_conv"])
    settings = QUICK if quick else FULL
    with tempfile.TemporaryDirectory(prefix="peer_nengodl_") as tmp:
        folder = Path(tmp)
        config = {
            "data": str(_write_data(models, data_dir, folder, quick)),
            "models": models,
            "epochs": chosen,
            "timesteps": timesteps or settings["timesteps"],
            "scales": scales or settings["scales"],
            "n_test_sweep": {m: None if m == "dense_mnist" else n_conv for m in models},
            "minibatch": 64 if quick else 100,
            "spike_images": 8 if quick else 20,
            "timing_images": 128 if quick else 1000,
            "min_timing_seconds": 0.2 if quick else 3.0,
            "seed": 0,
        }
        (folder / "config.json").write_text(json.dumps(config))
        out = folder / "result.json"
        command = [str(_python(env)), "-I", str(WORKER), "--config", str(folder / "config.json")]
        command += ["--out", str(out)]
        _log(f"running {' '.join(command)}")
        status, tail = _stream(command, folder)
        if status != 0 or not out.exists():
            raise RuntimeError(f"the NengoDL worker failed (exit status {status}):\n{tail}")
        worker = json.loads(out.read_text())
    del config["data"]
    return {
        "description": (
            "NengoDL Converter (rate-coded spiking ReLU, nengo.SpikingRectifiedLinear) on "
            "whetstone's architectures with ReLU and a Dense(10) softmax output, trained in "
            "Keras 2; accuracy by timestep and firing-rate scale, the timesteps to come within "
            "1 and 0.1 points of the ANN (on the sweep images), spikes and images/s (CPU)."
        ),
        "quick": quick,
        "peer_env": {**worker.pop("peer_env"), "pins": PINS, "installed": versions},
        "peer_note": (
            "nengo-dl 3.6.0 declares TensorFlow 2.3-2.11; it runs here on 2.12.1. "
            "MaxPooling2D is converted to average pooling (max_to_avg_pool=True), as NengoDL "
            "has no native spiking max pool: converted_rate_accuracy is the converted "
            "network with non-spiking ReLU rates, the ceiling of the spiking runs. The "
            "*_avgpool models train AveragePooling2D instead, which converts unchanged."
        ),
        "converter": (
            "nengo_dl.Converter(model, allow_fallback=False, swap_activations={tf.nn.relu: "
            "nengo.SpikingRectifiedLinear()}, scale_firing_rates=s, synapse=None, "
            "max_to_avg_pool=True, inference_only=True)"
        ),
        "config": config,
        **worker,
        "wall_seconds": time.perf_counter() - started,
    }


def merged(result: dict, previous: Path) -> dict:
    """``result`` with the models of an earlier run at ``previous`` that it did not rerun.

    Every model keeps the settings it ran with (``run``: date, command, configuration),
    so a run of one model (``--models vgg_cifar10``) adds to the committed comparison.
    """
    now = environment()
    own = {"date": now["date"], "command": now["command"], "config": result["config"]}
    models = {m: {**r, "run": own} for m, r in result["models"].items()}
    if previous.exists():
        old = json.loads(previous.read_text())
        old_run = {k: old.get(k) for k in ("date", "command", "config")}
        kept = {m: {"run": old_run, **r} for m, r in old["models"].items() if m not in models}
        models = {**kept, **models}
    return {**result, "models": models}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    parser.add_argument("--data", default=os.environ.get("WHETSTONE_DATA", "../shared/data"))
    parser.add_argument("--quick", action="store_true", help="tiny subset, one epoch (smoke)")
    parser.add_argument("--n-test", type=int, help="conv sweep test images (default 2000)")
    parser.add_argument("--timesteps", type=int, help="sweep length (default 128)")
    parser.add_argument("--scales", type=float, nargs="+", help="firing-rate scales")
    parser.add_argument("--setup-only", action="store_true", help="only create the peer env")
    parser.add_argument("--out", type=Path, help="result folder (default benchmarks/results)")
    parser.add_argument("--env", type=Path, default=ENV, help="peer env (.venv-nengodl)")
    args = parser.parse_args(argv)
    if args.setup_only:
        print(json.dumps(ensure_env(args.env)))
        return 0
    out = args.out or RESULTS
    if args.quick and out.resolve() == RESULTS.resolve():
        parser.error("--quick needs --out DIR outside benchmarks/results (the full result)")
    result = run(
        args.models, args.data, n_test=args.n_test, quick=args.quick, env=args.env,
        timesteps=args.timesteps, scales=args.scales,
    )  # fmt: skip
    print(write_result("peer_nengodl", merged(result, out / "peer_nengodl.json"), out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
