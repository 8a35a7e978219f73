"""The benchmark suites, smoke-run end to end so the benchmark code cannot rot.

``python -m benchmarks run ... --quick`` trains every model for one epoch on a few
hundred images, runs it on every back end on 100 test images and writes into a temp
folder; ``report`` then builds the tables and plots from those files.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from _helpers import benchmark_smoke, check_model_suite
from click.testing import CliRunner

from benchmarks.__main__ import main
from benchmarks.report import targets_table

ROOT = Path(__file__).resolve().parents[1]


def _bench(*args: str, data_dir: Path) -> subprocess.CompletedProcess:
    """``python -m benchmarks ARGS`` in a fresh process (quick mode changes globals)."""
    env = {**os.environ, "WHETSTONE_DATA": str(data_dir), "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return done


def test_list_names_every_suite():
    result = CliRunner().invoke(main, ["list"])
    assert result.exit_code == 0
    for name in ("mnist", "fashion", "cifar10", "peer", "overhead", "cli"):
        assert name in result.output


def test_quick_run_refuses_to_write_over_committed_results():
    result = CliRunner().invoke(main, ["run", "mnist", "--quick"])
    assert result.exit_code == 2
    assert "--quick needs --out" in result.output


def test_unknown_suite_is_refused_with_the_choices():
    result = CliRunner().invoke(main, ["run", "imagenet"])
    assert result.exit_code == 2
    assert "mnist" in result.output


def test_targets_table_says_met_or_not():
    rows = [
        {"model": "conv_mnist", "baseline_accuracy": 0.995, "keras_accuracy": 0.9935},
        {"model": "dense_mnist", "baseline_accuracy": 0.985, "keras_accuracy": 0.97},
        {"model": "vgg_cifar10", "baseline_accuracy": 0.80, "keras_accuracy": 0.75},
    ]
    lines = targets_table(rows).splitlines()
    assert "99.35% (target 99.30%): met" in lines[2]
    assert "+0.15 points (no target)" in lines[2]
    assert "97.00% (target 97.50%): not met" in lines[3]
    assert "+1.50 points (target at most 0.4): not met" in lines[3]
    assert "75.00% (no target)" in lines[4]  # CIFAR-10: only the gap to its ANN has one
    assert "+5.00 points (target at most 3.0): not met" in lines[4]


MODEL_SUITES = {"mnist": ["dense_mnist", "conv_mnist"], "fashion": ["conv_fashion"]}


@pytest.mark.slow
@pytest.mark.parametrize("suite", ["mnist", "fashion"])
def test_model_suite_smoke_runs_and_reports(suite, tmp_path, data_dir):
    out, text = benchmark_smoke(tmp_path, data_dir, suite)
    check_model_suite(out, text, suite, MODEL_SUITES[suite])


@pytest.mark.slow
def test_seeds_smoke_runs_and_reports(tmp_path, data_dir):
    out, text = benchmark_smoke(tmp_path, data_dir, "seeds")
    seeds = json.loads((out / "seeds.json").read_text())
    assert [run["seed"] for run in seeds["runs"]] == [0, 1]
    assert all(run["disagreements"] == 0 for run in seeds["runs"])
    assert "## Repeatability: dense_mnist over 2 seeds" in text


@pytest.mark.slow
@pytest.mark.parametrize("suite", ["overhead", "cli"])
def test_overhead_and_cli_smoke_run_and_report(suite, tmp_path, data_dir):
    out, _ = benchmark_smoke(tmp_path, data_dir, suite)
    if suite == "overhead":
        assert (out / "sharpener_overhead.json").exists()
    else:
        assert (out / "cli_inspect.txt").read_text().startswith("$ whetstone inspect")
