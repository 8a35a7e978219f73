"""The benchmarks' command line, and the MNIST suite smoke-run end to end.

``python -m benchmarks run ... --quick`` trains every model for one epoch on a few
hundred images, runs it on every back end on 100 test images and writes into a temp
folder; ``report`` then builds the tables and plots from those files. The other suites'
smoke runs are in ``test_benchmarks_fashion.py`` and ``test_benchmarks_suites.py``:
one file each, so that pytest-xdist (``--dist loadfile``) spreads them over its workers.
"""

import pytest
from _helpers import benchmark_smoke, check_model_suite
from click.testing import CliRunner

from benchmarks.__main__ import main
from benchmarks.report import targets_table


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
def test_mnist_suite_smoke_runs_and_reports(tmp_path, data_dir):
    """The suites' smoke runs are spread over files (test_benchmarks_*.py), so that
    pytest-xdist (``--dist loadfile``) runs them on both workers."""
    out, text = benchmark_smoke(tmp_path, data_dir, "mnist")
    check_model_suite(out, text, "mnist", ["dense_mnist", "conv_mnist"])
