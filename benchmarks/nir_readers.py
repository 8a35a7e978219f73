"""Which NIR readers run whetstone's exported files exactly: snnTorch, Sinabs, SpikingJelly.

For dense_mnist and conv_mnist (the committed models in ``results/models``), export each
NIR variant (``whetstone.backends.nir.export(..., variant=...)``), run it through each
reader in that reader's own environment, and compare the class scores with the reference
simulator's on the first MNIST test images. Per reader and protocol it records the
agreement of the decisions, whether the scores equal the reference's, or the reader's
error. Results: ``results/nir_readers.json``; docs: ``docs/backends/nir-readers.md``.

Protocols (the reader's network is a PyTorch module; every NIR node acts within the step):

* ``hold``: each sample held for ``latency`` steps from a fresh state, last step's output
  (what a memoryless network allows);
* ``one_step``: one step from a fresh state (every reader integrates from rest, so the
  first step's output is exact whatever the neuron's leak).

Environments (git-ignored; ``torch==2.13.0`` like ``.venv-nir``)::

    python -m venv .venv-sinabs && .venv-sinabs/bin/pip install "torch==2.13.0" \\
        "nir==1.0.8" "nirtorch==2.6" "numpy<2" matplotlib pbr samna \\
        && .venv-sinabs/bin/pip install --no-deps "sinabs==3.1.3"   # sinabs pins nir<=1.0.4
    python -m venv .venv-spikingjelly && .venv-spikingjelly/bin/pip install \\
        "torch==2.13.0" "nir==1.0.8" "nirtorch==2.6" "numpy<2" "spikingjelly==2.0.0"

Run: ``python -m benchmarks.nir_readers [--images N]`` (WHETSTONE_DATA: MNIST). The
readers run as this file in their environments (``--jobs JOBS.json``), one process per
environment, in parallel.

Example:
    >>> from benchmarks.nir_readers import READERS
    >>> sorted(READERS)
    ['sinabs', 'sinabs_single_spike', 'snntorch', 'spikingjelly']
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
READERS = {  # reader -> (environment, package whose version is recorded)
    "snntorch": (".venv-nir", "snntorch"),
    "sinabs": (".venv-sinabs", "sinabs"),
    "sinabs_single_spike": (".venv-sinabs", "sinabs"),
    "spikingjelly": (".venv-spikingjelly", "spikingjelly"),
}
PROTOCOLS = ("hold", "one_step")
MODELS = {"dense_mnist": 500, "conv_mnist": 100}  # model -> test images


# ---------------------------------------------------------------- readers (own envs)


def _fresh(module) -> None:
    for m in module.modules():
        for name in ("reset_hidden", "reset_states", "reset"):
            if hasattr(m, name) and callable(getattr(m, name)) and m is not module:
                with contextlib.suppress(TypeError):
                    getattr(m, name)()
                break


def run_snntorch(graph, x: np.ndarray, steps: int) -> np.ndarray:
    """snnTorch: ``import_from_nir``; each sample unbatched, ``steps`` steps from rest."""
    import torch
    from snntorch.import_nir import import_from_nir

    module = import_from_nir(graph)
    outputs = []
    with torch.no_grad():
        for sample in x:
            _fresh(module)
            state, inp = None, torch.from_numpy(sample)
            for _ in range(steps):
                out, state = module(inp, state)
            outputs.append(out.double().numpy())
    return np.stack(outputs)


def run_sinabs(graph, x: np.ndarray, steps: int, single_spike: bool = False) -> np.ndarray:
    """Sinabs: ``sinabs.from_nir(graph, batch_size=n)``; the input repeated ``steps``
    times in the squeezed (batch * time) layout; the last step's output per sample.
    ``single_spike``: every spiking layer's ``spike_fn`` set to ``SingleSpike`` (the
    default ``MultiSpike`` emits floor(v / threshold) spikes)."""
    import sinabs
    import torch
    from sinabs.activation import SingleSpike

    n = len(x)
    module = sinabs.from_nir(graph, batch_size=n)
    if single_spike:
        for m in module.modules():
            if hasattr(m, "spike_fn"):
                m.spike_fn = SingleSpike
    inp = torch.from_numpy(np.repeat(x, steps, axis=0))  # sample-major: (n * steps, ...)
    with torch.no_grad():
        out = module(inp)
    out = out[0] if isinstance(out, tuple) else out
    return out.double().numpy().reshape(n, steps, -1)[:, -1]


def run_spikingjelly(graph, x: np.ndarray, steps: int) -> np.ndarray:
    """SpikingJelly: ``import_from_nir(graph, dt=1e-4)``; ``(output, state)`` per step,
    the state passed back, each sample unbatched from ``state=None``."""
    import torch
    from spikingjelly.activation_based.nir_exchange import import_from_nir

    module = import_from_nir(graph, dt=1e-4, dtype=torch.float32)
    outputs = []
    with torch.no_grad():
        for sample in x:
            state, inp = None, torch.from_numpy(sample)[None]
            for _ in range(steps):
                out, state = module(inp, state)
            outputs.append(out[0].double().numpy())
    return np.stack(outputs)


def read(reader: str, graph_path, x: np.ndarray, steps: int) -> np.ndarray:
    """Scores of ``reader`` for ``x`` (NIR layout); run in the reader's environment."""
    import nir

    graph = nir.read(graph_path)
    x = np.asarray(x, np.float32)
    if reader == "snntorch":
        return run_snntorch(graph, x, steps)
    if reader.startswith("sinabs"):
        return run_sinabs(graph, x, steps, single_spike=reader == "sinabs_single_spike")
    if reader == "spikingjelly":
        return run_spikingjelly(graph, x, steps)
    raise ValueError(f"unknown reader {reader!r}; choose one of {sorted(READERS)}.")


# ---------------------------------------------------------------- benchmark (main env)


def reader_python(reader: str) -> Path:
    return ROOT / READERS[reader][0] / "bin" / "python"


def run_jobs(jobs_path) -> None:
    """In a reader's env: every job of the JSON list, scores saved or the error kept."""
    jobs = json.loads(Path(jobs_path).read_text())
    for job in jobs:
        try:
            scores = read(job["reader"], job["graph"], np.load(job["x"]), job["steps"])
            np.save(job["out"], scores)
        except Exception as error:  # the reader's refusal is the result
            message = f"{type(error).__name__}: {error}".strip().splitlines()[0]
            Path(job["out"]).with_suffix(".error").write_text(message)


def in_envs(jobs: list[dict]) -> None:
    """Run the jobs, one process per reader environment, the environments in parallel."""
    running = []
    for env in sorted({READERS[job["reader"]][0] for job in jobs}):
        mine = [job for job in jobs if READERS[job["reader"]][0] == env]
        python = ROOT / env / "bin" / "python"
        if not python.exists():
            for job in mine:
                Path(job["out"]).with_suffix(".error").write_text(
                    f"environment {env} not found (see the docstring)")  # fmt: skip
            continue
        listing = Path(mine[0]["out"]).parent / f"jobs_{env.strip('.')}.json"
        listing.write_text(json.dumps(mine))
        command = [str(python), __file__, "--jobs", str(listing)]
        running.append(subprocess.Popen(command, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.PIPE, text=True))  # fmt: skip
    for process in running:
        _, err = process.communicate()
        if process.returncode != 0:
            print(f"reader process failed: {err[-2000:]}", file=sys.stderr)


def compare(scores: np.ndarray, reference) -> dict:
    """Decisions and scores of a reader against the reference simulator's."""
    n = len(scores)
    predictions = scores.argmax(axis=1)
    agree = predictions == reference.predictions[:n]
    return {
        "images": n,
        "agreement": float(agree.mean()),
        "disagreements": int((~agree).sum()),
        "disagreements_on_tie_samples": int((~agree & reference.tie_mask[:n]).sum()),
        "scores_equal_reference": bool(np.array_equal(scores, reference.scores[:n])),
    }


def versions() -> dict:
    code = "from importlib.metadata import version as v; import sys; print(v(sys.argv[1]))"
    found = {}
    for reader, (env, package) in READERS.items():
        python = reader_python(reader)
        if python.exists():
            for name in (package, "nir", "nirtorch", "torch"):
                done = subprocess.run([str(python), "-c", code, name], capture_output=True,
                                      text=True)  # fmt: skip
                found.setdefault(env, {})[name] = done.stdout.strip() or None
    return found


def measure(images: int | None = None, data_dir=None, readers=None) -> dict:
    """Every model x variant x reader x protocol; see the module docstring."""
    import keras

    from whetstone import convert, datasets, simulate
    from whetstone.backends import nir as nir_backend

    _, (x_test, _) = datasets.load("mnist", data_dir)
    report = {"models": {}, "variants": list(nir_backend.VARIANTS),
              "reader_versions": versions()}  # fmt: skip
    with tempfile.TemporaryDirectory() as folder:
        jobs, references = [], {}
        for name, count in MODELS.items():
            count = min(count, images or count)
            net = convert.to_spiking(keras.models.load_model(RESULTS / "models" / f"{name}.keras"))
            references[name] = simulate.run(net, x_test[:count])
            x_path = Path(folder, f"{name}_x.npy")
            np.save(x_path, nir_backend.nir_input(net, x_test[:count]).astype(np.float32))
            report["models"][name] = {"images": count, "latency": net.latency}
            for variant in nir_backend.VARIANTS:
                graph = nir_backend.export(net, Path(folder, f"{name}_{variant}.nir"),
                                           variant=variant)  # fmt: skip
                for reader in readers or READERS:
                    for protocol in PROTOCOLS:
                        out = Path(folder, f"{name}_{variant}_{reader}_{protocol}.npy")
                        steps = net.latency if protocol == "hold" else 1
                        key = [name, variant, reader, protocol]
                        jobs.append({"reader": reader, "graph": str(graph), "x": str(x_path),
                                     "steps": steps, "out": str(out), "key": key})  # fmt: skip
        started = time.perf_counter()
        in_envs(jobs)
        report["reader_seconds"] = round(time.perf_counter() - started, 1)
        for job in jobs:
            name, variant, reader, protocol = job["key"]
            out = Path(job["out"])
            if out.exists():
                row = compare(np.load(out), references[name])
            else:
                error = out.with_suffix(".error")
                row = {"error": error.read_text() if error.exists() else "no result"}
            models = report["models"][name]
            models.setdefault(variant, {}).setdefault(reader, {})[protocol] = row
    return report


def markdown(report: dict) -> str:
    """The results as one Markdown table: a row per reader and variant, a cell per model
    and protocol (agreement of the decisions, ``=`` where the scores equal the reference's,
    or the reader's error)."""
    header = ["reader", "variant"] + [
        f"{name} ({entry['images']} images), {protocol.replace('_', ' ')}"
        for name, entry in report["models"].items()
        for protocol in PROTOCOLS
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for reader in READERS:
        for variant in report["variants"]:
            cells = [f"`{reader}`", f"`{variant}`"]
            for entry in report["models"].values():
                for protocol in PROTOCOLS:
                    row = entry.get(variant, {}).get(reader, {}).get(protocol)
                    cells.append(_cell(row))
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _cell(row: dict | None) -> str:
    if row is None:
        return "not run"
    if "error" in row:
        return "fails: " + row["error"].replace("|", "/")[:90]
    exact = ", scores equal" if row["scores_equal_reference"] else ""
    return f"{100 * row['agreement']:.1f}%{exact}"


def main(argv=None) -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=None, help="at most N test images")
    parser.add_argument("--out", default=str(RESULTS / "nir_readers.json"))
    parser.add_argument("--markdown", action="store_true", help="print --out as a table")
    parser.add_argument(
        "--readers", nargs="*", choices=sorted(READERS),
        help="rerun these readers only, keeping the others' results in --out",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if args.markdown:
        print(markdown(json.loads(Path(args.out).read_text())))
        return
    report = measure(args.images, os.environ.get("WHETSTONE_DATA"), args.readers)
    if args.readers and Path(args.out).exists():
        kept = json.loads(Path(args.out).read_text())
        for name, entry in report["models"].items():
            for variant in report["variants"]:
                kept["models"][name].setdefault(variant, {}).update(entry[variant])
        report = {**kept, "reader_versions": report["reader_versions"]}
    report["command"] = "python -m benchmarks.nir_readers" + (
        f" --images {args.images}" if args.images else "")  # fmt: skip
    from benchmarks.common import write_result  # not in the readers' environments

    out = Path(args.out)
    print("wrote", write_result(out.stem, report, folder=out.parent))


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--jobs":  # in a reader's env
        run_jobs(sys.argv[2])
    else:
        main()
