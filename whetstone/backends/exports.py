"""What an exported folder ships besides the network, and the agreement gate.

Every folder export (nengo, loihi, spinnaker) holds:

* ``run.py``: a copy of a template in ``whetstone/backends/templates/``; it resolves
  its arguments against the current working directory and defaults to the files beside
  itself;
* ``export.json``: the manifest: back end, whetstone version, latency, the default
  ``min_agreement`` of :func:`agreement`'s gate, and back-end figures (e.g. SpiNNaker's
  first input step);
* ``inputs.npz`` when inputs are shipped: ``x`` (the inputs), ``decisions`` (the
  reference simulator's predictions for them), ``ties`` (True where the reference met a
  tie) and, when known, ``y`` (labels).

The gate. Back ends may differ from the reference only on ties (counted, never hidden)
and on documented precision effects. :func:`agreement` (defined in
:mod:`whetstone.backends`) reports the plain agreement and the agreement on the images
*without* a tie; a run passes when the latter reaches the back end's
``min_agreement`` (:func:`default_min_agreement`).

Example:
    >>> import numpy as np
    >>> report = agreement([1, 2, 3, 4], [1, 2, 0, 0], ties=[False, False, True, False])
    >>> report["agreement"], report["tie_images"], round(report["agreement_excluding_ties"], 3)
    (0.5, 1, 0.667)
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import numpy as np

from whetstone.backends import DEFAULT_MIN_AGREEMENT, agreement, gate_ties
from whetstone.network import SpikingNetwork

__all__ = [
    "DEFAULT_MIN_AGREEMENT",
    "agreement",
    "default_min_agreement",
    "gate_ties",
    "load_inputs",
    "load_network",
    "ship",
]

MANIFEST = "export.json"
INPUTS = "inputs.npz"


def default_min_agreement(backend) -> float:
    """The gate of ``backend`` (its ``min_agreement``, else :data:`DEFAULT_MIN_AGREEMENT`).

    Example:
        >>> from whetstone.backends import get
        >>> default_min_agreement(get("nengo"))
        0.999
    """
    return float(getattr(backend, "min_agreement", DEFAULT_MIN_AGREEMENT))


def load_inputs(path) -> dict:
    """Arrays of an inputs file: ``x`` and, where present, ``y``, ``decisions``, ``ties``.

    A ``.npz`` holds ``x`` (or ``x_test``) and optionally ``y`` (or ``y_test``) and the
    arrays :func:`ship` writes; a ``.npy`` holds ``x`` alone.

    Example:
        >>> import tempfile, os
        >>> path = os.path.join(tempfile.mkdtemp(), "in.npz")
        >>> np.savez(path, x_test=np.zeros((2, 3)), y_test=np.array([1, 2]))
        >>> sorted(load_inputs(path))
        ['x', 'y']
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such inputs file; give a .npz or .npy file.")
    if path.suffix == ".npy":
        return {"x": np.load(path, allow_pickle=False)}
    with np.load(path, allow_pickle=False) as data:
        names = set(data.files)
        x_name = "x" if "x" in names else "x_test" if "x_test" in names else None
        if x_name is None:
            raise ValueError(
                f"{path} holds {sorted(names)}, no inputs: save them as 'x' (or 'x_test'), "
                "with labels as 'y' (or 'y_test'), e.g. np.savez(path, x=x, y=y)."
            )
        out = {"x": data[x_name]}
        y_name = "y" if "y" in names else "y_test" if "y_test" in names else None
        if y_name is not None:
            out["y"] = data[y_name]
        for name in ("decisions", "ties", "spikes"):
            if name in names:
                out[name] = data[name]
    if "y" in out and len(out["y"]) != len(out["x"]):
        raise ValueError(f"{path}: {len(out['x'])} inputs but {len(out['y'])} labels.")
    return out


def ship(folder, net: SpikingNetwork, x, y=None, **arrays) -> dict:
    """Write ``folder/inputs.npz``: ``x``, the reference's decisions and ties, ``y``.

    ``arrays``: more arrays to store (e.g. SpiNNaker's encoded ``spikes``). Returns a
    summary for the manifest.
    """
    from whetstone import simulate  # imported here: numba stays out of ``whetstone --help``

    x = net.check_input(x, "export inputs")
    reference = simulate.run(net, x)
    ties = gate_ties(reference)
    data = {"x": x, "decisions": reference.predictions, "ties": ties, **arrays}
    if y is not None:
        y = np.asarray(y)
        if len(y) != len(x):
            raise ValueError(f"export inputs: {len(x)} inputs but {len(y)} labels.")
        data["y"] = y
    np.savez_compressed(Path(folder) / INPUTS, **data)
    return {"inputs": len(x), "tie_images": int(ties.sum())}


def load_network(folder) -> SpikingNetwork:
    """The network a folder export holds (its ``network.h5``)."""
    return SpikingNetwork.load(Path(folder) / "network.h5")


def write_manifest(folder, backend: str, net: SpikingNetwork, min_agreement: float, **more):
    """Write ``folder/export.json`` (what ``run.py`` reads besides the network)."""
    import whetstone

    manifest = {
        "backend": backend,
        "whetstone": whetstone.__version__,
        "latency": net.latency,
        "min_agreement": min_agreement,
        **more,
    }
    (Path(folder) / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def template(name: str) -> str:
    """The text of ``whetstone/backends/templates/NAME`` (a script an export ships).

    Example:
        >>> "def main()" in template("run_nengo.py")
        True
    """
    return resources.files("whetstone.backends").joinpath("templates", name).read_text()
