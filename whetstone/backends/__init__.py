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

import importlib
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

__all__ = [
    "Backend",
    "BackendResult",
    "MissingDependencyError",
    "available",
    "get",
    "names",
    "register",
]

_MODULES = {
    "nengo": "whetstone.backends.nengo",
    "loihi": "whetstone.backends.loihi",
    "spinnaker": "whetstone.backends.spinnaker",
    "nir": "whetstone.backends.nir",
}
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
    """What ``Backend.run`` returns: comparable with ``whetstone.simulate.run``'s result."""

    predictions: np.ndarray  # (n,) class per input
    output_spikes: np.ndarray  # (n, width) spikes of the last stage, matched to inputs
    spike_counts: np.ndarray  # (num_stages,) total spikes per stage over the run
    info: dict[str, Any] = field(default_factory=dict)  # back-end specific figures


class Backend(Protocol):
    """The interface of every back end."""

    name: str
    extra: str  # pip extra that installs its dependencies

    def build(self, net, **options) -> Any:
        """The native object (e.g. a ``nengo.Network``) for a ``SpikingNetwork``."""

    def run(self, net, x: np.ndarray, **options) -> BackendResult:
        """Run a batch of inputs; predictions matched to inputs."""

    def export(self, net, path, force: bool = False, **options) -> Any:
        """Write the artifact a user deploys, through :mod:`whetstone.files`.

        Atomically (beside ``path``, then one rename); the parent folder must exist;
        an existing ``path`` is replaced only with ``force=True``; a failed export
        leaves nothing behind; a network that does not fit the target is refused. A
        folder export takes inputs ``x`` (labels ``y``) to ship and has a ``run.py``
        (see :mod:`whetstone.backends.exports`).
        """

    # Optional: ``resources(net) -> dict``, what the network costs on the target
    # (cores, chips, ...); ``whetstone inspect`` shows it for every back end that has it.
    # Optional: ``min_agreement``, the default gate of ``verify`` and of an export's
    # ``run.py`` where the back end differs from the reference by more than ties (see
    # ``whetstone.backends.exports``; default 0.999).


def register(name: str):
    """Class decorator: register a back end under ``name`` (an instance is stored)."""

    def decorate(cls):
        cls.name = name
        _REGISTRY[name] = cls()
        return cls

    return decorate


def names() -> list[str]:
    """Every known back end, installed or not."""
    return sorted(_MODULES)


def get(name: str) -> Backend:
    """The back end called ``name``; a clear error lists the known ones."""
    if name not in _MODULES:
        raise ValueError(f"unknown back end {name!r}; known back ends: {', '.join(names())}.")
    if name not in _REGISTRY:
        importlib.import_module(_MODULES[name])
    return _REGISTRY[name]


def available() -> dict[str, bool]:
    """Which back ends have their optional dependencies installed."""
    status = {}
    for name in names():
        try:
            backend = get(name)
            status[name] = getattr(backend, "is_available", lambda: True)()
        except ImportError:
            status[name] = False
    return status
