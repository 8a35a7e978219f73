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


@pytest.mark.slow
def test_every_suite_smoke_runs_and_reports(tmp_path, data_dir):
    out = tmp_path / "results"
    # cifar10 is left out: decoding its 60,000 JPEGs alone takes minutes on 2 cores.
    suites = ("mnist", "fashion", "overhead", "cli", "seeds")
    _bench("run", *suites, "--quick", "--out", str(out), "--data", str(data_dir), data_dir=data_dir)

    for suite, models in (("mnist", ["dense_mnist", "conv_mnist"]), ("fashion", ["conv_fashion"])):
        result = json.loads((out / f"suite_{suite}.json").read_text())
        assert result["quick"] is True
        assert {"versions", "machine", "command", "date", "seed", "wall_seconds"} <= set(result)
        assert [row["model"] for row in result["summary"]] == models
        for row in result["summary"]:
            for key in ("baseline_accuracy", "keras_accuracy", "reference_accuracy"):
                assert 0 <= row[key] <= 1
            # Exact back ends agree with the reference, whatever the (tiny) model learnt.
            assert row["nengo_agreement"] == 1.0
            assert row["nir_round_trip_agreement"] == 1.0
            assert row["nest_agreement"] >= 0.98
            # One step per stage: dense 2 layers; conv 2 x (conv, OR-pool) + a 256-wide
            # spiking layer; readouts on the host.
            assert row["timesteps"] == (2 if row["model"] == "dense_mnist" else 5)
            assert row["decoder"] == "readout"
        header = (out / f"suite_{suite}.csv").read_text().splitlines()[0]
        assert header.startswith("model,dataset,baseline_accuracy,keras_accuracy")
    seeds = json.loads((out / "seeds.json").read_text())
    assert [run["seed"] for run in seeds["runs"]] == [0, 1]
    assert all(run["disagreements"] == 0 for run in seeds["runs"])
    assert (out / "sharpener_overhead.json").exists()
    assert (out / "cli_inspect.txt").read_text().startswith("$ whetstone inspect")

    _bench("report", "--results", str(out), "--no-readme", data_dir=data_dir)
    text = (tmp_path / "README.md").read_text()
    assert "| dense_mnist |" in text and "| conv_fashion |" in text
    assert "## Repeatability: dense_mnist over 2 seeds" in text
    for model in ("dense_mnist", "conv_mnist", "conv_fashion"):
        assert (out / f"sharpening_{model}.png").stat().st_size > 1000
        assert f"sharpening_{model}.png" in text


def test_scaling_growth_says_which_part_grows_faster_than_the_work():
    from benchmarks.scaling import growth, table

    rows = [{"path": "b", "width": 8, "depth": d, "synapses": 100 * d,
             "synops_per_image": 10 * d, "images_per_s": 1000 / d, "build_seconds": 0.01 * d**2}
            for d in (1, 2, 4)]  # fmt: skip
    fits = {(g["path"], g["part"]): g for g in growth(rows)}
    assert fits["b", "run"]["exponent"] == 1.0 and not fits["b", "run"]["faster_than_work"]
    assert fits["b", "build"]["exponent"] == 2.0 and fits["b", "build"]["faster_than_work"]
    text = table(rows, growth(rows))
    assert "| b | 8 | 4 | 400 | 40 | 250.0 | 0.16 |" in text
    assert "- b build: seconds ~ synapses^2.0 (grows faster than the work)" in text


def test_simulator_throughput_skips_a_model_that_is_not_trained(tmp_path, monkeypatch):
    from benchmarks import simulator_throughput, trained

    monkeypatch.setattr(trained, "CACHE", tmp_path)
    args = ["--models", "resnet_mnist", "--out", str(tmp_path)]
    result = CliRunner().invoke(simulator_throughput.main, args)
    assert "resnet_mnist: skipped, no trained model" in result.output
    assert json.loads((tmp_path / "simulator_throughput.json").read_text())["models"] == []
