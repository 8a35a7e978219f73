"""Run code around the first import of a module (Keras, TensorFlow) without importing it.

Used to register whetstone's Keras layers whenever Keras gets imported, and by the
CLI to keep TensorFlow's start-up log lines off the terminal.

Example:
    >>> import sys
    >>> _ = sys.modules.pop("wave", None)  # so that the next import is a first one
    >>> seen = []
    >>> around_import("wave", lambda load: (seen.append("before"), load()))
    >>> import wave
    >>> seen
    ['before']
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.util
import os
import sys
import tempfile
from collections.abc import Callable, Iterator

__all__ = ["around_import", "quiet_stderr"]


class _Loader(importlib.abc.Loader):
    """Delegates to the real loader; ``wrap(load)`` decides when ``load()`` runs."""

    def __init__(self, loader, finder: _Finder) -> None:
        self._loader, self._finder = loader, finder

    def __getattr__(self, name: str):
        return getattr(self._loader, name)

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module) -> None:
        module.__loader__ = module.__spec__.loader = self._loader  # invisible afterwards
        with contextlib.suppress(ValueError):
            sys.meta_path.remove(self._finder)  # once: only the first import is wrapped
        self._finder.wrap(lambda: self._loader.exec_module(module))


class _Finder(importlib.abc.MetaPathFinder):
    """Answers for one module name with the real spec, its loader wrapped.

    It stays on ``sys.meta_path`` until the module is executed: a look-up alone
    (``importlib.util.find_spec``, as TensorFlow does for Keras) does not use it up.
    """

    def __init__(self, name: str, wrap: Callable) -> None:
        self.name, self.wrap, self._busy = name, wrap, False

    def find_spec(self, fullname, path, target=None):
        if fullname != self.name or self._busy:
            return None
        self._busy = True  # let the real finders answer
        try:
            spec = importlib.util.find_spec(fullname)
        finally:
            self._busy = False
        if spec is not None and spec.loader is not None:
            spec.loader = _Loader(spec.loader, self)
        return spec


def around_import(name: str, wrap: Callable[[Callable[[], None]], object]) -> None:
    """Call ``wrap(load)`` instead of ``load()`` when module ``name`` is first imported.

    Does nothing when the module is already imported.
    """
    if name not in sys.modules:
        sys.meta_path.insert(0, _Finder(name, wrap))


@contextlib.contextmanager
def quiet_stderr() -> Iterator[None]:
    """Send file descriptor 2 (C libraries' logs too) to a temp file; replay it on error."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        except BaseException:
            _restore(saved)
            capture.seek(0)
            os.write(2, capture.read())
            raise
        _restore(saved)


def _restore(saved: int) -> None:
    with contextlib.suppress(ValueError, OSError):
        sys.stderr.flush()
    if saved >= 0:
        os.dup2(saved, 2)
        os.close(saved)
