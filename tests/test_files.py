"""whetstone.files: the one way every file is written, and every back end's export."""

import errno
import os
import signal
import stat
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from _helpers import limit_file_size

import whetstone.backends as registry
from whetstone import files
from whetstone.network import KeyDecoder, SpikingNetwork, Stage


def _net() -> SpikingNetwork:
    rng = np.random.default_rng(0)
    stages = [
        Stage("a", "dense", (4,), (3,), rng.normal(size=(4, 3)).astype("f4")),
        Stage("b", "dense", (3,), (2,), rng.normal(size=(3, 2)).astype("f4")),
    ]
    return SpikingNetwork((4,), stages, KeyDecoder(np.eye(2)))


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


# ---------------------------------------------------------------- the helper


def test_created_files_and_folders_respect_the_umask(tmp_path, umask_022):
    assert _mode(files.write_bytes(tmp_path / "a.bin", b"1")) == 0o644
    with files.staged(tmp_path / "folder", folder=True) as staging:
        (staging / "x.txt").write_text("x")
    assert _mode(tmp_path / "folder") == 0o755
    _net().save(tmp_path / "net.h5")
    assert _mode(tmp_path / "net.h5") == 0o644


def test_overwrite_needs_force_and_the_target_is_never_renamed_away(tmp_path, monkeypatch):
    target = tmp_path / "a.bin"
    files.write_bytes(target, b"old")
    with pytest.raises(FileExistsError, match="--force"):
        files.write_bytes(target, b"new")
    assert target.read_bytes() == b"old"
    moves = []
    real_replace = os.replace
    monkeypatch.setattr(os, "replace", lambda a, b: (moves.append((a, b)), real_replace(a, b)))
    files.write_bytes(target, b"new", force=True)
    assert target.read_bytes() == b"new"
    assert len(moves) == 1 and moves[0][1] == target  # one rename, onto the target
    assert sorted(os.listdir(tmp_path)) == ["a.bin"]


def test_a_folder_replaces_a_folder_in_one_step(tmp_path):
    target = tmp_path / "out"
    target.mkdir()
    (target / "old.txt").write_text("old")
    with files.staged(target, force=True, folder=True) as staging:
        (staging / "new.txt").write_text("new")
    assert sorted(p.name for p in target.iterdir()) == ["new.txt"]
    assert sorted(os.listdir(tmp_path)) == ["out"]


@pytest.mark.parametrize("name", ["n" * 255, "é" * 125 + ".nir"])
def test_staging_names_fit_the_name_limit(tmp_path, name):
    target = tmp_path / name
    assert files.write_bytes(target, b"x").read_bytes() == b"x"
    with files.staged(target, force=True) as staging:
        assert len(os.fsencode(staging.name)) <= 255
        assert staging.name.endswith(".partial" + target.suffix)
        staging.write_bytes(b"y")
    assert os.listdir(tmp_path) == [name]


def test_too_long_a_name_is_refused_clearly(tmp_path):
    with pytest.raises(files.WriteError, match="1 to 255 bytes"):
        files.write_bytes(tmp_path / ("n" * 256), b"x")


def test_stale_leftovers_do_not_block_a_later_run(tmp_path):
    (tmp_path / ".out.partial").mkdir()  # the old fixed staging names
    (tmp_path / ".out.nir.partial.nir").write_text("stale")
    (tmp_path / ".out.nir.0123abcd.partial.nir").mkdir()
    assert files.write_bytes(tmp_path / "out.nir", b"x").read_bytes() == b"x"


def test_refuses_to_write_onto_its_own_input(tmp_path):
    source = files.write_bytes(tmp_path / "m.keras", b"model")
    with pytest.raises(files.WriteError, match="it is the input"):
        files.write_bytes(source, b"x", force=True, sources=[source])
    with pytest.raises(files.WriteError, match="it is the input"):  # a folder holding it
        files.check_target(tmp_path, force=True, sources=[source], folder=True)
    assert source.read_bytes() == b"model"


def test_refuses_to_replace_a_folder_with_a_file_and_the_reverse(tmp_path):
    (tmp_path / "dir").mkdir()
    (tmp_path / "dir" / "keep").write_text("keep")
    with pytest.raises(IsADirectoryError, match="folder"):
        files.write_bytes(tmp_path / "dir", b"x", force=True)
    assert (tmp_path / "dir" / "keep").exists()
    files.write_bytes(tmp_path / "file", b"x")
    with pytest.raises(NotADirectoryError, match="a folder does not replace a file"):
        files.check_target(tmp_path / "file", force=True, folder=True)


def test_a_missing_parent_folder_is_an_error_not_created(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist; create it first"):
        files.write_bytes(tmp_path / "no" / "such" / "a.bin", b"x")
    assert os.listdir(tmp_path) == []


def test_a_full_disk_is_a_clean_error_that_leaves_nothing(tmp_path, monkeypatch):
    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(files.os, "fsync", full)
    with pytest.raises(files.WriteError) as caught:
        files.write_bytes(tmp_path / "a.bin", b"x" * 1000)
    message = str(caught.value)
    assert "No space left on device" in message and str(tmp_path / "a.bin") in message
    assert "partial" not in message
    assert os.listdir(tmp_path) == []


def test_an_error_inside_the_block_leaves_nothing(tmp_path):
    with (
        pytest.raises(RuntimeError, match="boom"),
        files.staged(tmp_path / "out", folder=True) as staging,
    ):
        (staging / "half").write_text("half")
        raise RuntimeError("boom")
    assert os.listdir(tmp_path) == []


def test_sigterm_cleans_up_like_ctrl_c(tmp_path):
    script = textwrap.dedent(f"""
        import os, signal
        from whetstone import files
        with files.staged({str(tmp_path / "out")!r}, folder=True) as staging:
            (staging / "half").write_text("half")
            os.kill(os.getpid(), signal.SIGTERM)
            import time; time.sleep(10)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=60)
    assert done.returncode == 128 + signal.SIGTERM, done.stderr
    assert os.listdir(tmp_path) == []


# ---------------------------------------------------------------- every back end


def _export(name: str, path, **options):
    return registry.get(name).export(_net(), path, **options)


BACKENDS = registry.names()


@pytest.mark.parametrize("name", BACKENDS)
def test_every_export_follows_the_same_rules(tmp_path, name):
    target = tmp_path / "out"
    assert _export(name, target) == target
    before = sorted(os.listdir(tmp_path))
    with pytest.raises(FileExistsError, match="force=True"):
        _export(name, target)
    assert _export(name, target, force=True) == target
    assert sorted(os.listdir(tmp_path)) == before == ["out"]
    with pytest.raises(FileNotFoundError, match="does not exist"):
        _export(name, tmp_path / "missing" / "out")
    other = tmp_path / "other"
    if target.is_dir():  # a folder export
        other.write_text("a file")
        with pytest.raises(NotADirectoryError):
            _export(name, other, force=True)
    else:
        other.mkdir()
        with pytest.raises(IsADirectoryError):
            _export(name, other, force=True)
    assert sorted(os.listdir(tmp_path)) == ["other", "out"]


@pytest.mark.parametrize("name", BACKENDS)
def test_every_export_on_a_full_disk_leaves_nothing(tmp_path, monkeypatch, name):
    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(files.os, "fsync", full)
    with pytest.raises(files.WriteError, match="No space left") as caught:
        _export(name, tmp_path / "out")
    assert "partial" not in str(caught.value)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("name", ["save", *BACKENDS])
def test_a_real_write_error_is_clean_and_leaves_nothing(tmp_path, name):
    """A write the kernel refuses, deep inside h5py too (a full disk once crashed the NIR
    export there), is a WriteError naming the target; nothing is left behind."""
    rng = np.random.default_rng(0)
    wide = Stage("a", "dense", (400,), (300,), rng.normal(size=(400, 300)).astype("f4"))
    out = Stage("b", "dense", (300,), (2,), rng.normal(size=(300, 2)).astype("f4"))
    SpikingNetwork((400,), [wide, out]).save(tmp_path / "net.h5")  # 480 kB of weights
    out = tmp_path / "out"
    out.mkdir()
    script = textwrap.dedent(f"""
        from whetstone import backends, files
        from whetstone.network import SpikingNetwork
        net = SpikingNetwork.load({str(tmp_path / "net.h5")!r})
        target = {str(out / "target")!r}
        try:
            net.save(target) if {name!r} == "save" else backends.get({name!r}).export(net, target)
        except files.WriteError as error:
            print(error)
    """)
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, preexec_fn=limit_file_size
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith(f"cannot write {out / 'target'}"), done.stdout
    assert "File too large" in done.stdout and "partial" not in done.stdout
    assert os.listdir(out) == []
