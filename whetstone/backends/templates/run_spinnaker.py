"""Run a whetstone spiking network exported for SpiNNaker (PyNN), and check it.

    python run.py                           # locally on NEST (pip install pyNN nest-simulator)
    python run.py --simulator spinnaker     # on a host attached to a SpiNNaker board
    python run.py my_inputs.npz             # 'spikes' (encoded), or images 'x' / 'x_test'
                                            # (encoding images needs whetstone installed)
    python run.py --predictions out.npy     # also save the predicted classes

Paths are relative to the current folder; by default the inputs shipped beside this file.
Reads network.npz (thresholds, excitatory and inhibitory connection lists and neurons per
core of every population, the key or readout) and export.json (the step at which the
first input enters, the gate). A source or population of more than MAX_POPULATION
neurons is built as several PyNN populations (sPyNNaker's limit). One input enters per
1 ms step. Prints the agreement with the reference simulator's decisions: images where
the reference meets a tie are counted apart, and the run exits with status 1 when the
agreement on the other images is below --min-agreement (default: stored in export.json).
"""

import argparse
import importlib
import json
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
TAU_M = 2.0**-10  # ms and nF: exp(-1 / TAU_M) == 0, so neurons are memoryless
DT = 1.0  # ms
MAX_POPULATION = 65_280  # neurons per PyNN population: sPyNNaker allows at most 65,535


def arguments(manifest: dict) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("inputs", nargs="?", help="inputs file (default: inputs.npz here)")
    parser.add_argument("--simulator", default="nest", choices=["nest", "spinnaker"])
    parser.add_argument(
        "--min-agreement",
        type=float,
        default=manifest["min_agreement"],
        help="gate on the images without a tie (default: %(default)s)",
    )
    parser.add_argument(
        "--neurons-per-core", type=int, default=None, help="SpiNNaker: override the export's"
    )
    parser.add_argument("--predictions", help="save the predicted classes (.npy)")
    return parser.parse_args()


def load_inputs(path: Path) -> dict:
    """Spikes (encoded inputs) and, where known, decisions, ties and labels."""
    if path.suffix == ".npy":
        data = {"x": np.load(path)}
    else:
        with np.load(path) as npz:
            data = {name: npz[name] for name in npz.files}
    for short, long in (("x", "x_test"), ("y", "y_test")):
        if short not in data and long in data:
            data[short] = data[long]
    if "spikes" not in data:
        if "x" not in data:
            sys.exit(f"{path} holds neither 'spikes' nor images 'x': nothing to run.")
        data.update(encode(data["x"]))
    return data


def encode(x) -> dict:
    """Spikes of images ``x`` for the first population, with the reference's decisions."""
    try:
        from whetstone import simulate
        from whetstone.backends.exports import gate_ties
        from whetstone.backends.spinnaker import encode as source_spikes
        from whetstone.network import SpikingNetwork
    except ImportError:
        sys.exit(
            "these inputs are images: encoding them needs whetstone (pip install "
            "whetstone-snn); or save the encoded spikes as 'spikes' in the .npz file."
        )
    net = SpikingNetwork.load(HERE / "network.h5")
    reference = simulate.run(net, x)
    return {
        "spikes": source_spikes(net, x),
        "decisions": reference.predictions,
        "ties": gate_ties(reference),
    }


def spike_times(spikes: np.ndarray, first_step: int) -> list:
    return [list((np.nonzero(column)[0] + float(first_step)) * DT) for column in spikes.T]


def setup(sim, simulator: str) -> None:
    if simulator == "nest":
        sim.setup(timestep=DT, min_delay=DT, spike_precision="on_grid", verbosity="error")
    else:
        sim.setup(timestep=DT)


def pieces(size: int) -> list:
    """``(start, stop)`` of each PyNN population that ``size`` neurons are built as."""
    return [(lo, min(lo + MAX_POPULATION, size)) for lo in range(0, size, MAX_POPULATION)]


def piece_label(name: str, lo: int, hi: int, size: int) -> str:
    """``name`` for a population in one piece, else ``name[lo:hi]`` (as whetstone labels)."""
    return name if (lo, hi) == (0, size) else f"{name}[{lo}:{hi}]"


def population(sim, net, i: int, args) -> list:
    """Population ``i`` as ``(start, PyNN population)`` pieces."""
    thresholds = net[f"thresholds_{i}"]
    extra = {}
    if args.simulator == "spinnaker":
        summed = [max(m, 1e-12) for m in net[f"max_summed_{i}"]]
        per_core = args.neurons_per_core or int(net[f"neurons_per_core_{i}"])
        extra = {
            "additional_parameters": {
                "max_expected_summed_weight": summed,
                "neurons_per_core": per_core,
            }
        }
    out = []
    for lo, hi in pieces(len(thresholds)):
        cell = sim.IF_curr_delta(
            tau_m=TAU_M, cm=TAU_M, v_rest=0.0, v_reset=thresholds[lo:hi] - 1.0,
            tau_refrac=0.0, i_offset=0.0, v_thresh=thresholds[lo:hi],
        )  # fmt: skip
        label = piece_label(f"population_{i}", lo, hi, len(thresholds))
        out.append((lo, sim.Population(hi - lo, cell, label=label, **extra)))
    return out


def project(sim, pre: list, post: list, net, i: int) -> None:
    """Every pair of pieces that population ``i``'s rows connect, indices made local."""
    for name, receptor, sign in (("exc", "excitatory", 1), ("inh", "inhibitory", -1)):
        rows = net[f"{name}_{i}"] * np.array([1.0, 1.0, sign])
        for a, b in ((a, b) for a in pre for b in post):
            mine = rows[
                (rows[:, 0] >= a[0]) & (rows[:, 0] < a[0] + a[1].size)
                & (rows[:, 1] >= b[0]) & (rows[:, 1] < b[0] + b[1].size)
            ]  # fmt: skip
            if len(mine):
                local = mine - np.array([a[0], b[0], 0.0])
                connector = sim.FromListConnector(local, column_names=["weight"])
                synapse = sim.StaticSynapse(delay=DT)
                sim.Projection(a[1], b[1], connector, synapse, receptor_type=receptor)


def simulate_network(sim, net, spikes: np.ndarray, first_step: int, args) -> np.ndarray:
    """Output spikes ``(n, size)``: input ``i`` leaves ``depth`` steps after it enters."""
    n, depth = len(spikes), int(net["num_layers"])
    setup(sim, args.simulator)
    times = spike_times(spikes, first_step)
    pre = [
        (lo, sim.Population(hi - lo, sim.SpikeSourceArray(spike_times=times[lo:hi]),
                            label=piece_label("input", lo, hi, spikes.shape[1])))
        for lo, hi in pieces(spikes.shape[1])
    ]  # fmt: skip
    for i in range(depth):
        post = population(sim, net, i, args)
        project(sim, pre, post, net, i)
        pre = post
    for _, part in pre:
        part.record("spikes")
    sim.run((n + depth + first_step) * DT)
    out = np.zeros((n, sum(part.size for _, part in pre)), np.uint8)
    for lo, part in pre:
        for train in part.get_data("spikes").segments[0].spiketrains:
            sample = np.rint(np.asarray(train.magnitude) / DT).astype(int) - first_step - depth
            sample = sample[(sample >= 0) & (sample < n)]
            out[sample, lo + int(train.annotations["source_index"])] = 1
    sim.end()
    return out


def decode(net, out: np.ndarray) -> np.ndarray:
    if "key" in net:
        key = 2.0 * net["key"] - 1.0
        return ((2.0 * out - 1.0) @ key.T).argmax(axis=1)
    if "readout_weights" in net:
        return (out @ net["readout_weights"] + net["readout_bias"]).argmax(axis=1)
    return out.argmax(axis=1)


def main() -> int:
    manifest = json.loads((HERE / "export.json").read_text())
    args = arguments(manifest)
    source = Path(args.inputs) if args.inputs else HERE / "inputs.npz"
    if not args.inputs and not source.exists():
        sys.exit("no inputs were shipped with this export: give a file, python run.py x.npz")
    data = load_inputs(source)
    module = {"spinnaker": "pyNN.spiNNaker", "nest": "pyNN.nest"}[args.simulator]
    sim = importlib.import_module(module)
    net = np.load(HERE / "network.npz")
    out = simulate_network(sim, net, data["spikes"], int(manifest["first_step"]), args)
    predictions = decode(net, out)
    if args.predictions:
        np.save(args.predictions, predictions)
    line = f"{args.simulator}: {len(predictions)} inputs from {source}"
    if "y" in data:
        line += f"; accuracy {100 * float((predictions == data['y']).mean()):.2f}%"
    if "decisions" not in data:
        print(line + "; no reference decisions to compare with")
        return 0
    ties = data.get("ties", np.zeros(len(predictions), bool)).astype(bool)
    same = predictions == data["decisions"]
    gated = float(same[~ties].mean()) if (~ties).any() else 1.0
    print(
        f"{line}; agreement with the reference {100 * same.mean():.2f}%, on the "
        f"{int((~ties).sum())} without a tie {100 * gated:.2f}% "
        f"(gate {100 * args.min_agreement:.2f}%)"
    )
    if gated < args.min_agreement:
        message = f"agreement {gated:.4f} is below --min-agreement {args.min_agreement}"
        print(message, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
