"""The README's Python example runs as written."""

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_has_an_example():
    assert len(python_blocks()) == 1


@pytest.mark.slow
def test_readme_example_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(python_blocks()[0], str(README), "exec"), namespace)
    assert namespace["result"].latency == 2  # two spiking layers; the readout is on the host
    assert (tmp_path / "model.nir").exists()
    keras_predictions = namespace["model"].predict(namespace["x_test"], verbose=0).argmax(1)
    assert (namespace["result"].predictions == keras_predictions).all()
