"""Back ends: a registry from a target name to the object that builds, runs and exports.

Every back end implements the same small interface (see :class:`Backend`) and
registers itself with ``@register("name")``. Importing a back end's optional
dependency happens inside its methods, so ``get("spinnaker")`` works everywhere and
only using it needs the extra (``pip install 'whetstone-snn[spinnaker]'``; from a
checkout, ``pip install -e '.[spinnaker]'``).

Example:
    >>> import whetstone.backends as backends
    >>> "nengo" in backends.names()
    True
"""

from __future__ import annotations

import functools
import importlib
import pkgutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

__all__ = [
    "DEFAULT_MIN_AGREEMENT",
    "Backend",
    "BackendResult",
    "MissingDependencyError",
    "agreement",
    "available",
    "compare",
    "compared",
    "gate_ties",
    "get",
    "names",
    "register",
]

_REGISTRY: dict[str, Backend] = {}


class MissingDependencyError(ImportError):
    """A back end's optional dependency is not installed; the message names the extra."""


def require(module: str, extra: str):
    """Import ``module`` or raise a MissingDependencyError naming the pip extra."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise MissingDependencyError(
            f"this back end needs {module!r}, which is not installed ({error}). "
            f"Install it with: pip install 'whetstone-snn[{extra}]' "
            f"(from a checkout: pip install -e '.[{extra}]')"
        ) from error


@dataclass
class BackendResult:
    """What ``Backend.run`` returns: comparable with ``whetstone.simulate.run``'s result.

    Example:
        >>> r = BackendResult(np.array([1]), np.ones((1, 2), np.uint8), np.array([2]),
        ...                   build_seconds=0.5, run_seconds=0.25)
        >>> r.images_per_second
        4.0
    """

    predictions: np.ndarray  # (n,) class per input
    output_spikes: np.ndarray  # (n, width) spikes of the last stage, matched to inputs
    spike_counts: np.ndarray  # (num_stages,) total spikes per stage over the run
    info: dict[str, Any] = field(default_factory=dict)  # back-end specific figures
    build_seconds: float = 0.0  # building the native network (and its simulator)
    run_seconds: float = 0.0  # running the inputs through it
    agreement: dict | None = None  # :func:`compare` with the reference, when asked for

    @property
    def images_per_second(self) -> float:
        """Inputs per second of :attr:`run_seconds` (inf when the run took no time)."""
        return len(self.predictions) / self.run_seconds if self.run_seconds else float("inf")


# ---------------------------------------------------------------- agreement with the reference


def gate_ties(reference) -> np.ndarray:
    """``(n,)`` True where the reference met a tie in a stage: the images a gate skips.

    Decoder ties (equal key votes, near-equal readout logits) are not among them: every
    back end's output spikes go through the same host decoder, so equal spikes decode
    equally and a decoder tie alone cannot make a back end differ.

    Example:
        >>> from whetstone import simulate
        >>> from whetstone.network import Stage, SpikingNetwork
        >>> stage = Stage("d", "dense", (1,), (1,), np.full((1, 1), 0.5, "float32"))
        >>> net = SpikingNetwork((1,), [stage], input_encoding="binary")  # theta 0.5
        >>> gate_ties(simulate.run(net, np.array([[0.0], [1.0]]))).tolist()
        [False, True]
    """
    return np.asarray(reference.sample_ties).reshape(len(reference.predictions), -1).any(axis=1)


def agreement(predictions, reference, ties=None) -> dict:
    """The one agreement record: ``predictions`` against ``reference`` decisions.

    ``ties``: True per image where the reference met a tie (:func:`gate_ties`, or a
    result's ``tie_mask`` when comparing with Keras); those images are counted apart:
    ``agreement_excluding_ties`` is the agreement on the others (1.0 if none).

    Example:
        >>> report = agreement([1, 2, 3, 4], [1, 2, 0, 0], ties=[False, False, True, False])
        >>> report["agreement"], report["differing_not_ties"], report["agreement_excluding_ties"]
        (0.5, 1, 0.6666666666666666)
    """
    predictions, reference = np.asarray(predictions), np.asarray(reference)
    ties = np.zeros(len(reference), bool) if ties is None else np.asarray(ties, bool)
    same = predictions == reference
    clear = ~ties
    return {
        "images": len(reference),
        "agreement": float(same.mean()) if len(same) else 1.0,
        "tie_images": int(ties.sum()),
        "differing": int((~same).sum()),
        "differing_not_ties": int((~same & clear).sum()),
        "agreement_excluding_ties": float(same[clear].mean()) if clear.any() else 1.0,
    }


def compare(reference, result: BackendResult) -> dict:
    """:func:`agreement` of a back end's run with the reference's run on the same inputs,
    plus how many images' output spikes differ and the reference's tie count.

    Example:
        >>> from whetstone import simulate
        >>> from whetstone.network import Stage, SpikingNetwork
        >>> net = SpikingNetwork((1,), [Stage("d", "dense", (1,), (2,), [[1.0, -1.0]])])
        >>> ref = simulate.run(net, [[1.0], [-1.0]])
        >>> spikes = ref.output_spikes.reshape(2, -1)
        >>> mine = BackendResult(ref.predictions, spikes, ref.spike_counts)
        >>> compare(ref, mine)["output_spikes_differing"]
        0
    """
    ties = gate_ties(reference)
    n = len(reference.predictions)
    spikes = np.asarray(result.output_spikes).reshape(n, -1)
    differ = (reference.output_spikes.reshape(n, -1) != spikes).any(axis=1)
    return {
        **agreement(result.predictions, reference.predictions, ties),
        "output_spikes_differing": int(differ.sum()),
        "output_spikes_differing_not_ties": int((differ & ~ties).sum()),
        "ties": int(reference.ties.sum() + reference.decoder_ties),
    }


def compared(net, x, result: BackendResult) -> BackendResult:
    """``result`` with :func:`compare` against ``whetstone.simulate.run(net, x)`` filled in
    (``agreement``; the same keys in ``info``, with ``reference_spike_counts``)."""
    from whetstone import simulate

    reference = simulate.run(net, x)
    result.agreement = compare(reference, result)
    result.info.update(result.agreement, reference_spike_counts=reference.spike_counts)
    return result


# ---------------------------------------------------------------- the contract


class Backend(Protocol):
    """The interface of every back end (registered with :func:`register`).

    Every method takes the network first and back-end options as keywords. Inputs are
    checked by :meth:`whetstone.network.SpikingNetwork.check_input` (an empty batch, a
    wrong shape or NaN is a ``ValueError``); what a back end needs to know of the
    network (host encoder, stages on chip, encoding, decoding) it asks the network.
    """

    name: str  # set by @register
    extra: str  # pip extra that installs its dependencies
    min_agreement: float  # gate of ``verify`` and of an export's ``run.py``
    exact_options: dict  # ``run`` options under which it computes the contract up to ties

    def is_available(self) -> bool:
        """Whether the optional dependencies are installed."""

    def build(self, net, **options) -> Any:
        """The native object (a ``nengo.Network``, a ``nir.NIRGraph``, a PyNN network)."""

    def run(
        self, net, x, *, compare_reference: bool = False, progress=None, **options
    ) -> BackendResult:
        """Run a batch of inputs; predictions matched to inputs. ``compare_reference``
        fills :attr:`BackendResult.agreement` (:func:`compared`); ``progress`` (optional)
        is called with the number of inputs done."""

    def export(self, net, path, *, force: bool = False, x=None, y=None, **options) -> Path:
        """Write the artifact a user deploys, through :mod:`whetstone.files`.

        Atomically (beside ``path``, then one rename); the parent folder must exist;
        an existing ``path`` is replaced only with ``force=True``; a failed export
        leaves nothing behind; a network that does not fit the target is refused. A
        folder export ships inputs ``x`` (labels ``y``) and has a ``run.py`` (see
        :mod:`whetstone.backends.exports`); a file export (NIR) refuses ``x``.
        """

    def resources(self, net, **options) -> dict:
        """What the network costs on the target (neurons, cores, chips, ...);
        ``whetstone inspect`` shows it for every available back end."""

    def load(self, path) -> Any:
        """The ``SpikingNetwork`` an :meth:`export` wrote to ``path``."""


DEFAULT_MIN_AGREEMENT = 0.999
"""The gate of a back end that computes the contract exactly up to ties (Nengo, NEST,
NIR): at most one image in a thousand may differ where the reference has no tie
(float64 against the reference's float32 sums can differ just outside the tie band)."""


def register(name: str):
    """Class decorator: register a back end under ``name`` (an instance is stored).

    A back end is a module (or package) in ``whetstone/backends/`` whose class is
    decorated with ``@register("name")``; :func:`names` finds it: adding a back end
    touches that one file.
    """

    def decorate(cls):
        cls.name = name
        if not hasattr(cls, "min_agreement"):
            cls.min_agreement = DEFAULT_MIN_AGREEMENT
        if not hasattr(cls, "exact_options"):
            cls.exact_options = {}
        _REGISTRY[name] = cls()
        return cls

    return decorate


@functools.cache
def _discover() -> None:
    """Import every public module of this package once: each back end registers itself.

    Back-end modules import their optional dependencies only when used, so this is cheap.
    """
    for module in pkgutil.iter_modules(__path__):
        if not module.name.startswith("_"):
            importlib.import_module(f"{__name__}.{module.name}")


def names() -> list[str]:
    """Every known back end, installed or not."""
    _discover()
    return sorted(_REGISTRY)


def get(name: str) -> Backend:
    """The back end called ``name``; a clear error lists the known ones."""
    if name not in names():
        raise ValueError(f"unknown back end {name!r}; known back ends: {', '.join(names())}.")
    return _REGISTRY[name]


def available() -> dict[str, bool]:
    """Which back ends have their optional dependencies installed."""
    status = {}
    for name in names():
        try:
            status[name] = get(name).is_available()
        except ImportError:
            status[name] = False
    return status
