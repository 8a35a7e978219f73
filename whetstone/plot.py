"""Pictures of a single-spike network: spikes, firing rates, sharpening, accuracy, cores.

Every function returns a ``matplotlib.figure.Figure`` (drawn without pyplot, so it leaves
your matplotlib back end alone) and, given ``path``, also writes it as a PNG (atomically,
like every file whetstone writes; an existing file is replaced only with ``force=True``).
matplotlib is imported on first use: ``pip install 'whetstone-snn[plot]'``. The command
line draws the same pictures: ``whetstone plot KIND SOURCE -o out.png``.

Example:
    >>> import numpy as np
    >>> from whetstone import plot
    >>> from whetstone.network import Stage, SpikingNetwork
    >>> net = SpikingNetwork((2,), [Stage("d", "dense", (2,), (3,), np.ones((2, 3), "float32"))])
    >>> plot.raster(net, np.array([[0.3, 0.4]])).axes[0].get_title()
    'spikes of one input, stage by stage'
"""

from __future__ import annotations

import csv
import math
import os
import re
from collections.abc import Mapping
from typing import Any

import numpy as np

from whetstone import files, simulate
from whetstone.network import SpikingNetwork

__all__ = ["accuracy_vs_timesteps", "firing_rates", "raster", "resources", "sharpening"]

PathLike = str | os.PathLike


def _figure(*args, **kwargs):
    """A matplotlib Figure (no pyplot); a clear error when matplotlib is missing."""
    try:
        from matplotlib.figure import Figure
    except ImportError as error:
        raise ImportError(
            f"whetstone.plot needs matplotlib ({error}). Install it with: "
            "pip install 'whetstone-snn[plot]' (from a checkout: pip install -e '.[plot]')"
        ) from error
    return Figure(*args, layout="constrained", **kwargs)


def _finish(fig, path: PathLike | None, force: bool):
    """Write ``fig`` to ``path`` as a PNG (atomically) when a path is given."""
    if path is not None:
        with files.staged(path, force) as staging:
            fig.savefig(staging, format="png", dpi=120)
    return fig


# ---------------------------------------------------------------- spikes


def raster(
    net: SpikingNetwork,
    x,
    index: int = 0,
    path: PathLike | None = None,
    force: bool = False,
):
    """Spike raster of input ``x[index]`` through every stage.

    Stage ``l`` fires ``l + 1`` steps after the input enters; each stage gets a band of
    the same height, its neurons spread over it, and its label says how many fired.

    Example:
        >>> import numpy as np
        >>> from whetstone.network import Stage, SpikingNetwork
        >>> net = SpikingNetwork((2,), [Stage("d", "dense", (2,), (3,), np.ones((2, 3)))])
        >>> fig = raster(net, np.array([[0.3, 0.4]]))
        >>> [t.get_text() for t in fig.axes[0].get_yticklabels()]
        ['d: 3/3']
    """
    x = np.asarray(x)
    if not -len(x) <= index < len(x):
        raise ValueError(f"raster: index {index} is outside the batch of {len(x)} inputs.")
    spikes = simulate.stage_spikes(net, x[index : index + 1])
    fig = _figure(figsize=(6, 1 + 0.6 * len(spikes)))
    ax = fig.subplots()
    labels = []
    for layer, (stage, s) in enumerate(zip(net.stages, spikes, strict=True)):
        fired = np.flatnonzero(s[0].ravel())
        y = len(spikes) - 1 - layer + (fired + 0.5) / s[0].size * 0.9
        ax.scatter(np.full(len(fired), layer + 1), y, marker="_", s=200, lw=0.6, rasterized=True)
        labels.append(f"{stage.name}: {len(fired)}/{s[0].size}")
    ax.set_yticks([len(spikes) - 1 - k + 0.45 for k in range(len(spikes))], labels)
    ax.set(
        xlabel="time step after the input enters",
        xlim=(0.5, len(spikes) + 0.5),
        ylim=(0, len(spikes)),
        title="spikes of one input, stage by stage",
    )
    ax.set_xticks(range(1, len(spikes) + 1))
    return _finish(fig, path, force)


def firing_rates(
    net: SpikingNetwork,
    x,
    batch_size: int = 256,
    path: PathLike | None = None,
    force: bool = False,
):
    """Per stage, how often each neuron fires over the inputs ``x`` (box plot, mean marked).

    Example:
        >>> import numpy as np
        >>> from whetstone.network import Stage, SpikingNetwork
        >>> w = np.array([[1.0, -1.0, 0.0]], "float32")
        >>> net = SpikingNetwork((1,), [Stage("d", "dense", (1,), (3,), w)])
        >>> fig = firing_rates(net, np.array([[0.9], [-0.9]]))
        >>> fig.axes[0].get_ylabel()
        'fraction of inputs a neuron fires for'
    """
    x = np.asarray(x)
    totals = [np.zeros(stage.num_neurons) for stage in net.stages]
    for start in range(0, len(x), batch_size):
        spikes = simulate.stage_spikes(net, x[start : start + batch_size])
        for total, s in zip(totals, spikes, strict=True):
            total += s.reshape(len(s), -1).sum(axis=0)
    rates = [total / max(len(x), 1) for total in totals]
    fig = _figure(figsize=(1.5 + 1.2 * len(rates), 3.5))
    ax = fig.subplots()
    ax.boxplot(rates, showmeans=True, whis=(0, 100))
    ax.set_xticks(
        range(1, len(rates) + 1),
        [f"{s.name}\nmean {r.mean():.2f}" for s, r in zip(net.stages, rates, strict=True)],
    )
    ax.set(
        ylabel="fraction of inputs a neuron fires for",
        ylim=(-0.02, 1.02),
        title=f"firing rates per stage over {len(x)} inputs",
    )
    ax.grid(axis="y", alpha=0.3)
    return _finish(fig, path, force)


# ---------------------------------------------------------------- training


def _read_log(history) -> dict[str, list[float]]:
    """Columns of a Keras History, its ``history`` dict, or a CSVLogger file."""
    if isinstance(history, str | os.PathLike):
        with open(history, newline="") as f:
            rows = list(csv.DictReader(f))
        if not rows:
            raise ValueError(f"{history}: the CSV log has no epochs.")
        return {k: [float(r[k]) if r[k] else math.nan for r in rows] for k in rows[0]}
    history = getattr(history, "history", history)
    if not isinstance(history, Mapping):
        raise TypeError(
            f"sharpening: expected a Keras History, its .history dict or a CSV log file, "
            f"got {type(history).__name__}."
        )
    return {k: [float(v) for v in values] for k, values in history.items()}


def sharpening(history, path: PathLike | None = None, force: bool = False):
    """Sharpness per layer and accuracy (or loss) per epoch; honing epochs are shaded.

    ``history``: a Keras ``History``, its ``history`` dict, or a ``CSVLogger`` file, with
    the columns every sharpener logs (``sharpness_<layer>``, ``honing``).

    Example:
        >>> log = {"loss": [0.9, 0.5, 0.4], "accuracy": [0.7, 0.8, 0.85],
        ...        "sharpness_spiking_1": [0.0, 1.0, 1.0], "honing": [0.0, 0.0, 1.0]}
        >>> [ax.get_ylabel() for ax in sharpening(log).axes]
        ['sharpness', 'accuracy']
    """
    log = _read_log(history)
    layers = sorted(k for k in log if k.startswith("sharpness_"))
    if not layers:
        raise ValueError(
            "sharpening: the log has no sharpness_<layer> columns; train with a whetstone "
            f"sharpener (columns found: {', '.join(log) or 'none'})."
        )
    n = len(log[layers[0]])
    epochs = np.asarray(log.get("epoch", range(n)), float) + 1
    fig = _figure(figsize=(6, 5))
    top, bottom = fig.subplots(2, 1, sharex=True)
    for key in layers:
        top.plot(epochs, log[key], marker=".", label=key.removeprefix("sharpness_"))
    top.set(ylabel="sharpness", ylim=(-0.05, 1.05), title="sharpening")
    top.legend(fontsize=7, loc="lower right")
    metric = "accuracy" if "accuracy" in log else "loss"
    for key in (metric, f"val_{metric}"):
        if key in log:
            bottom.plot(epochs, log[key], marker=".", label=key)
    bottom.set(xlabel="epoch", ylabel=metric)
    if f"val_{metric}" in log:
        bottom.legend(fontsize=7)
    for ax in (top, bottom):
        for epoch, honing in zip(epochs, log.get("honing", [0] * n), strict=True):
            if honing:
                ax.axvspan(epoch - 0.5, epoch + 0.5, color="tab:green", alpha=0.12, lw=0)
        ax.grid(alpha=0.3)
    if any(log.get("honing", [])):
        top.text(0.01, 0.95, "shaded: honing", transform=top.transAxes, va="top", fontsize=7)
    return _finish(fig, path, force)


def accuracy_vs_timesteps(
    results: Mapping[str, Mapping[str, Any]],
    reference: float | None = None,
    path: PathLike | None = None,
    force: bool = False,
):
    """Accuracy against timesteps: a line per sweep, a star per single-timestep result.

    ``results``: ``{label: {"timesteps": ..., "accuracy": ...}}`` with sequences (a
    sweep, e.g. a rate-coded network read out after each step) or numbers (e.g. a
    whetstone network's latency and accuracy); accuracies are fractions.
    ``reference``: an accuracy drawn as a dashed line (e.g. the ANN's).

    Example:
        >>> results = {"rate code": {"timesteps": [1, 10, 100], "accuracy": [0.2, 0.8, 0.95]},
        ...            "whetstone": {"timesteps": 3, "accuracy": 0.96}}
        >>> accuracy_vs_timesteps(results, reference=0.97).axes[0].get_xscale()
        'log'
    """
    if not results:
        raise ValueError("accuracy_vs_timesteps: results is empty.")
    fig = _figure(figsize=(5.5, 4))
    ax = fig.subplots()
    steps = []
    for label, entry in results.items():
        t = np.atleast_1d(np.asarray(entry["timesteps"], float))
        accuracy = 100 * np.atleast_1d(np.asarray(entry["accuracy"], float))
        if t.shape != accuracy.shape:
            raise ValueError(
                f"accuracy_vs_timesteps: {label!r} has {t.size} timesteps and "
                f"{accuracy.size} accuracies."
            )
        style = {"marker": "*", "ms": 12, "ls": ""} if t.size == 1 else {"marker": "."}
        ax.plot(t, accuracy, label=label, **style)
        steps.extend(t)
    if reference is not None:
        ax.axhline(100 * reference, color="k", ls="--", lw=0.8, label="reference")
    if max(steps) >= 10 * max(min(steps), 1):
        ax.set_xscale("log")
    ax.set(xlabel="timesteps", ylabel="accuracy (%)", title="accuracy against timesteps")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    return _finish(fig, path, force)


# ---------------------------------------------------------------- hardware


def resources(report: Mapping[str, Any], path: PathLike | None = None, force: bool = False):
    """Use of each core against its limits, from a back end's ``resources(net)`` report.

    Loihi (``get("loihi").resources(net)``): per core, compartments, input and output
    axons and synapse memory as fractions of the core's limits. SpiNNaker
    (``get("spinnaker").resources(net)``): per population, neurons per core and the
    longest synapse row against sPyNNaker's limits, with the population's core count.

    Example:
        >>> report = {"populations": {"d1": {"cores": 2, "neurons_per_core": 256,
        ...                                  "longest_row": 120}}, "row_limit": 256}
        >>> resources(report).axes[0].get_ylabel()
        'fraction of the per-core limit'
    """
    if "blocks" in report:
        # nengo-loihi labels a block "<Ensemble 'conv_1'>[0]": keep the name and index
        labels = [re.sub(r"<\w+ '(.*)'>", r"\1", str(b["block"])) for b in report["blocks"]]
        limits = report["limits_per_core"]
        series = {k: [b[k] / limits[k] for b in report["blocks"]] for k in limits}
        title = f"Loihi: cores {report['cores']}, chips {report['chips']}"
    elif "populations" in report:
        from whetstone.backends.spinnaker import NEURONS_PER_CORE, ROW_LIMIT

        pops = report["populations"]
        labels = [f"{name}\n{p['cores']} cores" for name, p in pops.items()]
        row_limit = report.get("row_limit", ROW_LIMIT)
        series = {
            "neurons_per_core": [p["neurons_per_core"] / NEURONS_PER_CORE for p in pops.values()]
        }
        if any("longest_row" in p for p in pops.values()):  # the input has no synapse rows
            series["longest_row"] = [p.get("longest_row", 0) / row_limit for p in pops.values()]
        title = f"SpiNNaker: cores {sum(p['cores'] for p in pops.values())}"
    else:
        raise ValueError(
            "resources: expected a report from get('loihi').resources(net) ('blocks') or "
            f"get('spinnaker').resources(net) ('populations'); got keys {sorted(report)}."
        )
    return _bars(labels, series, title, path, force)


def _bars(labels: list[str], series: dict[str, list[float]], title: str, path, force: bool):
    fig = _figure(figsize=(max(5, 0.5 * len(labels) * len(series) + 2), 4))
    ax = fig.subplots()
    width = 0.8 / len(series)
    for k, (name, values) in enumerate(series.items()):
        ax.bar(np.arange(len(labels)) + k * width, values, width, label=name.replace("_", " "))
    ax.axhline(1.0, color="k", lw=0.8, ls="--")
    rotation = 90 if len(labels) > 6 else 0
    ax.set_xticks(np.arange(len(labels)) + 0.4 - width / 2, labels, fontsize=7, rotation=rotation)
    ax.set(ylabel="fraction of the per-core limit", title=title)
    ax.legend(fontsize=7)
    ax.grid(axis="y", alpha=0.3)
    return _finish(fig, path, force)
