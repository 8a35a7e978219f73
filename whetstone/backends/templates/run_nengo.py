"""Run the whetstone network exported here on Nengo or Nengo-Loihi, and check it.

    python run.py                         # the inputs shipped beside this file
    python run.py my_inputs.npz           # x [and y], or x_test [y_test]; or a .npy of x
    python run.py --target nengo          # nengo, loihi (chip with NxSDK, else emulator),
                                          # sim (integer emulator) or simreal (float one)
    python run.py --predictions out.npy   # also save the predicted classes

Paths are relative to the current folder. Prints the agreement with the reference
simulator's decisions (shipped in inputs.npz; for other inputs whetstone computes them):
images where the reference meets a tie are counted apart, and the run exits with
status 1 when the agreement on the other images is below --min-agreement (default: the
back end's gate, stored in export.json). Needs: pip install whetstone-snn (and
'whetstone-snn[loihi]' for Loihi; NxSDK for the chip).
"""

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def arguments(manifest: dict) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("inputs", nargs="?", help="inputs file (default: inputs.npz here)")
    parser.add_argument(
        "--target",
        default=manifest["backend"],
        choices=["nengo", "loihi", "sim", "simreal"],
        help="back end (default: %(default)s)",
    )
    parser.add_argument(
        "--min-agreement",
        type=float,
        default=manifest["min_agreement"],
        help="gate on the images without a tie (default: %(default)s)",
    )
    parser.add_argument("--predictions", help="save the predicted classes (.npy)")
    return parser.parse_args()


def main() -> int:
    # nengo-loihi imports TensorFlow (through nengo-dl): keep its start-up lines off stderr
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from whetstone import simulate
    from whetstone.backends import get
    from whetstone.backends.exports import agreement, gate_ties, load_inputs
    from whetstone.network import SpikingNetwork

    manifest = json.loads((HERE / "export.json").read_text())
    args = arguments(manifest)
    source = Path(args.inputs) if args.inputs else HERE / "inputs.npz"
    if not args.inputs and not source.exists():
        sys.exit("no inputs were shipped with this export: give a file, python run.py x.npz")
    data = load_inputs(source)
    net = SpikingNetwork.load(HERE / "network.h5")
    if "decisions" not in data:
        reference = simulate.run(net, data["x"])
        data["decisions"], data["ties"] = reference.predictions, gate_ties(reference)
    backend = "nengo" if args.target == "nengo" else "loihi"
    options = {"chips": manifest.get("chips")} if backend == "loihi" else {}
    if args.target in ("sim", "simreal"):
        options["target"] = args.target
    result = get(backend).run(net, data["x"], **options)
    if args.predictions:
        np.save(args.predictions, result.predictions)
    report = agreement(result.predictions, data["decisions"], data.get("ties"))
    clear = report["images"] - report["tie_images"]
    line = (
        f"{args.target}: {report['images']} inputs from {source}; agreement with the "
        f"reference {100 * report['agreement']:.2f}%, on the {clear} without a tie "
        f"{100 * report['agreement_excluding_ties']:.2f}% (gate {100 * args.min_agreement:.2f}%)"
    )
    if "y" in data:
        line += f"; accuracy {100 * float((result.predictions == data['y']).mean()):.2f}%"
    print(line)
    if report["agreement_excluding_ties"] < args.min_agreement:
        print(
            f"agreement {report['agreement_excluding_ties']:.4f} is below --min-agreement "
            f"{args.min_agreement}",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
