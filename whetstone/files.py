"""One way to write files: every write of the library and the CLI goes through here.

A file or folder is written beside its target under a hidden staging name and moved
onto the target with one rename, so the target is never missing and never
half-written. The rules, the same for every caller:

- an existing target is replaced only with ``force=True`` (the CLI's ``--force``);
- a target is never one of the inputs it is written from (``sources``);
- a folder is never replaced by a file, nor a file by a folder;
- the parent folder must exist (it is not created);
- created files and folders get the usual modes (``0644``/``0755`` under umask 022);
- staging names fit the 255-byte name limit and are unique per write, so a stale
  leftover never blocks a later run;
- on any error, Ctrl-C or SIGTERM the staging copy is removed; an ``OSError``
  (full disk, read-only folder) becomes a :class:`WriteError` naming the target.

Example:
    >>> import os, tempfile
    >>> from whetstone import files
    >>> target = os.path.join(tempfile.mkdtemp(), "notes.txt")
    >>> files.write_bytes(target, b"hello").read_bytes()
    b'hello'
    >>> with files.staged(target, force=True) as staging:
    ...     _ = staging.write_text("again")
    >>> open(target).read()
    'again'
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import os
import secrets
import shutil
import signal
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path

__all__ = [
    "TargetExistsError",
    "WriteError",
    "check_target",
    "replace",
    "sigterm_as_exit",
    "staged",
    "write_bytes",
]

NAME_MAX = 255  # bytes in one file name on the common file systems


class WriteError(OSError):
    """A file could not be written; the message names the target, never a staging path."""

    def __str__(self) -> str:
        return self.strerror or super().__str__()


class TargetExistsError(WriteError, FileExistsError):
    """The target exists and ``force`` was not given."""


_BUILTIN = {
    errno.ENOENT: FileNotFoundError,
    errno.EISDIR: IsADirectoryError,
    errno.ENOTDIR: NotADirectoryError,
    errno.EACCES: PermissionError,
    errno.EPERM: PermissionError,
}


@functools.cache
def _kind(base: type[OSError]) -> type[WriteError]:
    """A WriteError that is also the matching built-in error (e.g. FileNotFoundError)."""
    return type(f"Write{base.__name__}", (WriteError, base), {"__module__": __name__})


def _error(code: int, message: str) -> WriteError:
    return _kind(_BUILTIN[code])(code, message) if code in _BUILTIN else WriteError(code, message)


def check_target(
    target: str | os.PathLike,
    force: bool = False,
    sources: Iterable[str | os.PathLike] = (),
    folder: bool | None = False,
) -> Path:
    """``target`` as a Path, or an error saying why it must not be written.

    ``folder``: whether a folder (True) or a file (False) will be written; None: either.

    Example:
        >>> import tempfile
        >>> check_target(Path(tempfile.mkdtemp()) / "model.nir").name
        'model.nir'
    """
    target = Path(target)
    if not target.name or len(os.fsencode(target.name)) > NAME_MAX:
        raise _error(
            errno.ENAMETOOLONG,
            f"cannot write {target}: the name must have 1 to {NAME_MAX} bytes; "
            "choose a shorter name.",
        )
    for source in sources:
        if _same_file(Path(source), target) or _inside(Path(source), target):
            raise _error(
                errno.EINVAL,
                f"cannot write {target}: it is the input {source}; choose another output.",
            )
    if not target.parent.is_dir():
        raise _error(
            errno.ENOENT,
            f"cannot write {target}: the folder {target.parent} does not exist; create it first.",
        )
    if target.is_dir() and folder is False:
        raise _error(
            errno.EISDIR,
            f"cannot write {target}: it is a folder, and a file does not replace a folder; "
            "choose a file name.",
        )
    if target.exists() and folder is True and not target.is_dir():
        raise _error(
            errno.ENOTDIR,
            f"cannot write {target}: it is a file, and a folder does not replace a file; "
            "choose a folder name.",
        )
    if (target.exists() or target.is_symlink()) and not force:
        raise TargetExistsError(
            errno.EEXIST, f"{target} exists; pass --force (force=True) to overwrite it."
        )
    return target


@contextlib.contextmanager
def staged(
    target: str | os.PathLike,
    force: bool = False,
    sources: Iterable[str | os.PathLike] = (),
    folder: bool = False,
) -> Iterator[Path]:
    """A staging path beside ``target``, moved onto it when the block ends without error.

    ``folder=True`` yields an empty, created folder; otherwise a file path that does
    not exist yet (the writer creates it). See the module docstring for the rules.

    Example:
        >>> import tempfile
        >>> target = Path(tempfile.mkdtemp()) / "out"
        >>> with staged(target, folder=True) as staging:
        ...     _ = (staging / "a.txt").write_text("a")
        >>> sorted(p.name for p in target.iterdir())
        ['a.txt']
    """
    target = check_target(target, force, sources, folder)
    staging = _staging_name(target)
    try:
        with sigterm_as_exit(), _as_write_error(target, staging):
            if folder:
                os.mkdir(staging)  # mode 0777 & ~umask
            yield staging
            if not os.path.lexists(staging):
                raise _error(errno.ENOENT, f"cannot write {target}: nothing was written.")
            check_target(target, force, sources, folder)  # it may have appeared meanwhile
            _move(staging, target)
    finally:
        _remove(staging)


def write_bytes(
    target: str | os.PathLike,
    data: bytes,
    force: bool = False,
    sources: Iterable[str | os.PathLike] = (),
) -> Path:
    """Write ``data`` to the file ``target`` atomically; returns the target.

    Example:
        >>> import tempfile
        >>> write_bytes(Path(tempfile.mkdtemp()) / "a.bin", b"1").stat().st_size
        1
    """
    with staged(target, force, sources) as staging, open(staging, "xb") as f:  # 0666 & ~umask
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    return Path(target)


def replace(
    written: str | os.PathLike,
    target: str | os.PathLike,
    force: bool = False,
    sources: Iterable[str | os.PathLike] = (),
) -> Path:
    """Move a finished file or folder ``written`` (beside ``target``) onto ``target``.

    For writers that must choose their own file name (e.g. Keras's ``model.save``);
    the same rules as :func:`staged`. Returns the target.
    """
    written = Path(written)
    target = check_target(target, force, sources, folder=written.is_dir())
    with _as_write_error(target, written):
        _move(written, target)
    _remove(written)  # the old folder, after an atomic exchange
    return target


# ---------------------------------------------------------------- helpers


def _same_file(source: Path, target: Path) -> bool:
    try:
        return os.path.samefile(source, target)
    except OSError:
        return source.resolve() == target.resolve()


def _inside(source: Path, folder: Path) -> bool:
    return folder.is_dir() and folder.resolve() in source.resolve().parents


def _staging_name(target: Path) -> Path:
    """``.NAME.TOKEN.partial.SUFFIX`` beside target, NAME clipped to fit NAME_MAX bytes."""
    token = secrets.token_hex(4)
    suffix = target.suffix if len(os.fsencode(target.suffix)) <= 32 else ""
    tail = os.fsencode(f".{token}.partial{suffix}")
    stem = os.fsencode(target.name)[: NAME_MAX - 1 - len(tail)]
    name = os.fsdecode(b"." + stem.decode("utf-8", "ignore").encode() + tail)
    return target.with_name(name)


@contextlib.contextmanager
def _as_write_error(target: Path, staging: Path) -> Iterator[None]:
    """Turn an OSError about the staging copy into a WriteError that names the target."""
    try:
        yield
    except WriteError as error:  # from a write inside a staged folder: name the target
        if str(staging) not in str(error):
            raise
        message = str(error).replace(str(staging), str(target))
        raise _error(error.errno, message) from error
    except OSError as error:
        reason = error.strerror or str(error).replace(str(staging), str(target))
        hint = {
            errno.ENOSPC: " Free some space or choose another folder.",
            errno.EDQUOT: " Free some space or choose another folder.",
            errno.EROFS: " Choose a writable folder.",
            errno.EACCES: " Choose a folder you can write to.",
            errno.EPERM: " Choose a folder you can write to.",
        }.get(error.errno, "")
        raise _error(error.errno, f"cannot write {target}: {reason}.{hint}") from error


def _move(staging: Path, target: Path) -> None:
    """One rename onto target; a folder replacing a folder is swapped atomically."""
    if staging.is_dir() and target.is_dir():
        if _exchange(staging, target):
            return  # staging now holds the old folder; the caller removes it
        old = _staging_name(target)  # no atomic exchange here: a short window
        os.replace(target, old)
        try:
            os.replace(staging, target)
        finally:
            _remove(old)
        return
    os.replace(staging, target)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths with Linux's renameat2(RENAME_EXCHANGE); False where unsupported."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    done = renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange)
    return done == 0


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


class _Terminated(SystemExit):
    """SIGTERM, raised so that cleanup runs as it does for Ctrl-C."""


@contextlib.contextmanager
def sigterm_as_exit() -> Iterator[None]:
    """Within the block, SIGTERM (if at its default action) unwinds like Ctrl-C.

    ``finally`` blocks and context managers clean up, then the process exits with
    status 143 (128 + SIGTERM). Outside the main thread it does nothing.

    Example:
        >>> with sigterm_as_exit():
        ...     pass
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGTERM)
    if previous is not signal.SIG_DFL:
        yield
        return

    def terminate(signum, _frame):
        raise _Terminated(128 + signum)

    signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
