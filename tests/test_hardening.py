"""Empty batches, and nothing written where it should not be (HOME, shared temp paths)."""

import os
import stat
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import whetstone.backends as registry
from whetstone import simulate
from whetstone.backends import spinnaker as sp
from whetstone.network import KeyDecoder, SpikingNetwork, Stage


def _net() -> SpikingNetwork:
    rng = np.random.default_rng(0)
    stages = [
        Stage("a", "dense", (4,), (3,), rng.normal(size=(4, 3)).astype("f4")),
        Stage("b", "dense", (3,), (2,), rng.normal(size=(3, 2)).astype("f4")),
    ]
    return SpikingNetwork((4,), stages, KeyDecoder(np.eye(2)))


RUNNERS = {
    "simulator": lambda net, x: simulate.run(net, x),
    "simulator-timestep": lambda net, x: simulate.run(net, x, mode="timestep"),
    "nengo": lambda net, x: registry.get("nengo").run(net, x),
    "loihi": lambda net, x: registry.get("loihi").run(net, x),
    "nir": lambda net, x: registry.get("nir").run(net, x),
    "spinnaker": lambda net, x: registry.get("spinnaker").run(net, x),
}


@pytest.mark.parametrize("shape", [(0, 4), (0,)])
@pytest.mark.parametrize("runner", sorted(RUNNERS))
def test_an_empty_batch_is_a_clear_error_everywhere(runner, shape):
    with pytest.raises(ValueError, match=r"x is an empty batch .*pass at least one input"):
        RUNNERS[runner](_net(), np.zeros(shape, "float32"))


def test_spinnaker_config_is_a_fresh_private_folder_per_run():
    home = os.environ.get("HOME")
    with sp.spinnaker_config() as first, sp.spinnaker_config() as second:
        assert first != second
        for root in (first, second):
            info = os.stat(root)
            assert stat.S_IMODE(info.st_mode) == 0o700 and info.st_uid == os.getuid()
            assert sorted(p.name for p in root.iterdir()) == ["config", "home"]
        assert os.environ["HOME"] == str(second / "home")
    assert os.environ.get("HOME") == home  # restored (documented in docs/backends/spinnaker.md)


def test_nengo_writes_no_cache_into_home(tmp_path):
    script = textwrap.dedent("""
        import numpy as np
        import whetstone.backends as registry
        from whetstone.network import Stage, SpikingNetwork

        stage = Stage("a", "dense", (4,), (3,), np.ones((4, 3), "float32"))
        registry.get("nengo").run(SpikingNetwork((4,), [stage]), np.ones((2, 4), "float32"))
        print("ran")
    """)
    env = {**os.environ, "HOME": str(tmp_path)}
    env.pop("XDG_CACHE_HOME", None)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    assert not (tmp_path / ".cache" / "nengo").exists()


@pytest.mark.parametrize(
    "imports",
    ["import whetstone; import keras", "import whetstone; import tensorflow; import keras"],
)
def test_layers_are_found_whatever_is_imported_first(tmp_path, imports):
    import keras

    from whetstone.layers import SpikingBRelu

    path = tmp_path / "m.keras"
    keras.Sequential([keras.Input((3,)), SpikingBRelu(sharpness=1.0)]).save(path)
    script = f"{imports}; print(keras.models.load_model({str(path)!r}).layers[0])"
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "SpikingBRelu" in done.stdout


def test_whetstone_alone_imports_no_keras():
    script = "import sys, whetstone.network, whetstone.simulate, whetstone.backends; "
    script += "print(sorted(m for m in sys.modules if m.split('.')[0] in ('keras', 'tensorflow')))"
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.stdout.strip() == "[]", done.stderr[-2000:]
