"""The results table of the README, generated from ``benchmarks/results/*.json``.

    python -m benchmarks.report              # print the markdown
    python -m benchmarks.report --update README.md

``--update`` replaces the blocks between ``<!-- NAME:start -->`` and
``<!-- NAME:end -->`` (results, demo, inspect, verify); nothing in them is written by
hand: the command outputs come from ``python -m benchmarks.cli_examples``.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

from benchmarks.common import RESULTS


def _load(name: str) -> dict | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def _pct(value) -> str:
    return "-" if value is None else f"{100 * value:.2f}%"


def _agree(agreement, images) -> str:
    return "-" if agreement is None else f"{100 * agreement:.2f}% of {images:,}"


def model_rows() -> list[str]:
    """One markdown row per reference model."""
    throughput = {r["model"]: r for r in (_load("simulator_throughput") or {}).get("results", [])}
    nengo = (_load("backend_nengo") or {}).get("models", {})
    nir = (_load("backend_nir") or {}).get("models", {})
    spinnaker = {m["model"]: m for m in (_load("backend_spinnaker") or {}).get("models", [])}
    rows = []
    for name in sorted(set(throughput) | set(nengo)):
        sim, ng, nr, sp = (d.get(name, {}) for d in (throughput, nengo, nir, spinnaker))
        loihi = ng.get("loihi_sim", {})
        nest = sp.get("nest", {})
        snn = nr.get("snntorch", {})
        cells = [
            name,
            _pct(sim.get("keras_accuracy")),
            _agree(1 - sim["disagreements"] / sim["test_images"], sim["test_images"])
            if sim
            else "-",
            _agree(ng.get("nengo", {}).get("agreement"), ng.get("nengo", {}).get("images")),
            f"{_pct(loihi.get('accuracy'))} ({_agree(loihi.get('agreement'), loihi.get('images'))})"
            if loihi
            else "-",
            _agree(nest.get("prediction_agreement"), sp.get("images")),
            _agree(
                nr.get("round_trip", {}).get("agreement"), nr.get("round_trip", {}).get("images")
            ),
            _agree(snn.get("agreement"), snn.get("images")),
            str(sim.get("latency_steps", "-")),
            f"{sim['synops_per_inference']:,.0f} / {sim['ann_macs_per_inference']:,}"
            if sim
            else "-",
            f"{sim['simulator_over_keras']:.2f}x" if sim else "-",
        ]
        rows.append("| " + " | ".join(cells) + " |")
    return rows


def table() -> str:
    header = [
        "model",
        "Keras (sharpened)",
        "reference = Keras",
        "Nengo = reference",
        "Loihi emulator: accuracy (= reference)",
        "PyNN/NEST = reference",
        "NIR round trip",
        "snnTorch reads NIR",
        "timesteps",
        "synops / ANN MACs",
        "simulator / Keras speed",
    ]
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
        *model_rows(),
    ]
    overhead = _load("sharpener_overhead")
    if overhead:
        lines.append("")
        lines.append(
            "Sharpener training overhead per epoch ("
            + ", ".join(
                f"{name}: {row['overhead_ratio']:.3f}x"
                for name, row in overhead["configs"].items()
                if name != "no sharpener"
            )
            + f"; {overhead['dataset']}, {overhead['train_images']:,} images, "
            f"`{overhead['command']}`)."
        )
    commands = sorted(
        {d["command"] for d in map(_load, ("simulator_throughput", "backend_nengo",
                                           "backend_spinnaker", "backend_nir")) if d}
    )  # fmt: skip
    lines.append("")
    lines.append("Produced by: " + "; ".join(f"`{c}`" for c in commands) + ".")
    return "\n".join(lines)


def _replace_block(text: str, name: str, content: str) -> str:
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    block = f"{start}\n{content}\n{end}"
    new, count = re.subn(re.escape(start) + ".*?" + re.escape(end), lambda _: block, text,
                         flags=re.S)  # fmt: skip
    if count != 1:
        raise SystemExit(f"the README needs exactly one {start} ... {end} block, found {count}.")
    return new


def _cli_output(name: str) -> str:
    """A command and its committed output (``benchmarks.cli_examples``), as a code block."""
    path = RESULTS / f"cli_{name}.txt"
    output = path.read_text().rstrip() if path.exists() else f"$ whetstone {name}\n(not run yet)"
    return f"```console\n{output}\n```"


def update(path: Path) -> None:
    text = _replace_block(path.read_text(), "results", table())
    for name in ("demo", "inspect", "verify", "sharpen"):
        text = _replace_block(text, name, _cli_output(name))
    path.write_text(text)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--update", type=Path, help="rewrite the results block of this file")
    args = parser.parse_args(argv)
    if args.update:
        update(args.update)
    else:
        print(table())


if __name__ == "__main__":
    main()
