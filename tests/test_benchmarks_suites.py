"""The seeds, sharpener-overhead and CLI-example suites, smoke-run end to end.

``run seeds overhead cli --quick``, then ``report`` on their results. In a file of its
own so that pytest-xdist (``--dist loadfile``) can run it beside the model suites' smoke
runs (``test_benchmarks*.py``). cifar10 is left out: decoding its 60,000 JPEGs alone
takes minutes on 2 cores.
"""

import json

import pytest
from _helpers import benchmark_smoke


@pytest.mark.slow
def test_seeds_overhead_and_cli_smoke_run_and_report(tmp_path, data_dir):
    out, text = benchmark_smoke(tmp_path, data_dir, "seeds", "overhead", "cli")
    seeds = json.loads((out / "seeds.json").read_text())
    assert [run["seed"] for run in seeds["runs"]] == [0, 1]
    assert all(run["disagreements"] == 0 for run in seeds["runs"])
    assert "## Repeatability: dense_mnist over 2 seeds" in text
    assert (out / "sharpener_overhead.json").exists()
    assert (out / "cli_inspect.txt").read_text().startswith("$ whetstone inspect")
