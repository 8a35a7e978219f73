"""The benchmarks' command line, and the MNIST suite smoke-run end to end.

``python -m benchmarks run ... --quick`` trains every model for one epoch on a few
hundred images, runs it on every back end on 100 test images and writes into a temp
folder; ``report`` then builds the tables and plots from those files. The other suites'
smoke runs are in ``test_benchmarks_fashion.py`` and ``test_benchmarks_suites.py``:
one file each, so that pytest-xdist (``--dist loadfile``) spreads them over its workers.
"""

import io
import json

import pytest
from _helpers import benchmark_smoke, check_model_suite
from click.testing import CliRunner

from benchmarks.__main__ import main
from benchmarks.report import other_anns, targets_table, throughput_section
from benchmarks.suite import BUDGET_SECONDS, PROBE_IMAGES, sized


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
        {"model": "vgg_cifar10_wide", "baseline_accuracy": 0.7998, "keras_accuracy": 0.7698},
        {"model": "conv_fashion", "baseline_accuracy": 0.9251, "keras_accuracy": 0.91},
    ]
    for row in rows:
        row["test_images"] = 10_000
    lines = targets_table(rows).splitlines()
    assert "99.35% (target 99.30%): met" in lines[2]
    assert "+0.15 points (no target)" in lines[2]
    assert "97.00% (target 97.50%): not met" in lines[3]
    assert "+1.50 points (target at most 0.4): not met" in lines[3]
    assert "75.00% (no target)" in lines[4]  # CIFAR-10: only the gap to its ANN has one
    assert "+5.00 points (target at most 3.0): not met" in lines[4]
    # counted in images: 300 of 10,000 is 3 points, although 0.7998 - 0.7698 > 0.03
    assert "+3.00 points (target at most 3.0): met" in lines[5]
    assert "91.00% (target 91.00%): met" in lines[6]
    assert "+1.51 points (target at most 1.5): not met" in lines[6]


def test_targets_table_judges_the_gap_against_the_better_ann(tmp_path):
    row = {"model": "vgg_cifar10_wide", "baseline_accuracy": 0.7998, "keras_accuracy": 0.7698,
           "test_images": 10_000}  # fmt: skip
    (tmp_path / "models").mkdir()
    assert other_anns(tmp_path) == {"vgg_cifar10_wide": [], "vgg_cifar10_staggered": []}
    (tmp_path / "models" / "vgg_cifar10_1024_baseline.json").write_text('{"test_accuracy": 0.79}')
    worse = targets_table([row], other_anns(tmp_path)).splitlines()[-1]
    assert "+2.02 to the ANN vgg_cifar10_1024 (79.00%)" in worse
    assert worse.endswith("(target at most 3.0): met |")  # the widened ANN is the better one
    better = targets_table([row], {"vgg_cifar10_wide": [("vgg_cifar10_1024", 0.8001)]})
    assert better.splitlines()[-1].endswith(
        "+3.03 to the ANN vgg_cifar10_1024 (80.01%) (target at most 3.0): not met |"
    )
    both = [("vgg_cifar10_1024", 0.79), ("vgg_cifar10_64", 0.795)]
    judged = targets_table([row], {"vgg_cifar10_wide": both}).splitlines()[-1]
    assert "(79.00%); +2.52 to the ANN vgg_cifar10_64 (79.50%)" in judged
    assert judged.endswith("(target at most 3.0): met |")  # 3.00 to the widened ANN
    worst = targets_table([row], {"vgg_cifar10_wide": [*both, ("third", 0.8)]}).splitlines()
    assert worst[-1].endswith("(target at most 3.0): not met |")  # 3.02 to the third


def test_sharpening_seeds_table_and_spread(tmp_path):
    """Each seed's row, the mean and spread of what was lost, and the worst run."""
    from benchmarks.report import sharpening_seeds_section
    from benchmarks.sharpening_seeds import lost_to

    runs = [{"seed": s, "keras_accuracy": a, "reference_accuracy": a, "disagreements": 1,
             "disagreements_without_tie": 0, "decoder_ties": 0}
            for s, a in ((0, 0.7921), (1, 0.7875))]  # fmt: skip
    lost = lost_to(0.8205, runs)
    assert lost == {"mean": 0.03070, "std": 0.0023}
    found = {"model": "vgg_cifar10_64", "command": "c", "test_images": 10_000,
             "ann_accuracy": 0.8205, "runs": runs,
             "summary": {"keras_accuracy": {"mean": 0.7898, "std": 0.0023}, "lost": lost,
                         "worst_lost": 0.033}}  # fmt: skip
    (tmp_path / "sharpening_seeds_vgg_cifar10_64.json").write_text(json.dumps(found))
    section = sharpening_seeds_section(tmp_path)
    assert section[0] == "## Repeatability of sharpening: vgg_cifar10_64 over 2 seeds"
    assert "Most lost: 3.30 points." in section[2]
    rows = section[4].splitlines()
    assert rows[3] == "| 1 | 78.75% | 78.75% | 1 (0 without a tie) | 0 | +3.30 pt |"
    assert rows[4] == "| mean ± std | 78.98% ± 0.23 |  |  |  | +3.07 ± 0.23 pt |"


def test_sharpening_seeds_needs_a_trained_ann():
    import click

    from benchmarks.sharpening_seeds import sharpen_again

    with pytest.raises(click.UsageError, match="not sharpened from a trained ANN"):
        sharpen_again("dense_mnist", 1, None)


@pytest.mark.slow
def test_mnist_suite_smoke_runs_and_reports(tmp_path, data_dir):
    """The suites' smoke runs are spread over files (test_benchmarks_*.py), so that
    pytest-xdist (``--dist loadfile``) runs them on both workers."""
    out, text = benchmark_smoke(tmp_path, data_dir, "mnist")
    check_model_suite(out, text, "mnist", ["dense_mnist", "conv_mnist"])


def test_sized_runs_everything_that_fits_the_budget_and_says_why():
    budget = BUDGET_SECONDS["nest"]
    calls = []

    def timed(seconds_per_image, build=10.0, warm_up=0.0):
        def run(n):
            calls.append(n)
            return build, warm_up + n * seconds_per_image

        return run

    fits = sized("nest", 10_000, timed((budget - 10.0) / 10_000))
    quarter = PROBE_IMAGES // 4
    assert (fits["images"], fits["of"], calls) == (10_000, 10_000, [PROBE_IMAGES, quarter])
    # a run's fixed cost (warm-up) counts once, not once per image
    warm = sized("nest", 10_000, timed((budget - 110.0) / 10_000, warm_up=90.0))
    assert warm["images"] == 10_000 and warm["projected_seconds"] == pytest.approx(budget - 10.0)
    assert fits["why"].startswith("all:") and fits["projected_seconds"] <= budget
    # too slow: the largest multiple of 100 whose projection fits
    slow = sized("nest", 10_000, timed(1.0))
    assert slow["images"] == int(budget - 10.0) // 100 * 100
    assert slow["why"].startswith("budget:") and "10,000" in slow["why"]
    assert 10.0 + slow["images"] * 1.0 <= budget < 10.0 + (slow["images"] + 100) * 1.0
    # never fewer than the probe, which has run anyway
    assert sized("nest", 10_000, timed(budget))["images"] == PROBE_IMAGES
    assert sized("nest", 50, timed(0.1))["images"] == 50
    calls.clear()
    assert sized("loihi", 10_000, timed(1.0), quick=True)["images"] == 100 and not calls


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


def test_throughput_section_says_which_targets_are_met(tmp_path):
    """Met only where both the best runs' ratio and the per-repeat median reach it."""

    def model(name, ratio):
        return {"model": name, "test_images": 100, "keras_images_per_s": 1000.0,
                "simulator_images_per_s": 1000.0 * ratio, "simulator_over_keras": ratio,
                "batch_images_per_s": 500.0, "simulator_threads": 2, "fast_equals_batch": True,
                "keras_batch_size": 1000}  # fmt: skip

    runs = [model("dense_mnist", 4.2), model("vgg_cifar10", 1.2), model("mine", 9.0),
            model("conv_mnist", 1.6)]  # fmt: skip
    runs[0]["ratio_per_repeat"] = {"min": 3.61, "median": 3.9, "max": 4.2}
    runs[3]["ratio_per_repeat"] = {"min": 1.4, "median": 1.55, "max": 1.7}
    figures = {"command": "c", "models": runs}
    (tmp_path / "simulator_throughput.json").write_text(json.dumps(figures))
    text = "\n".join(throughput_section(tmp_path))
    spread = "3.61-4.20x (median 3.90x)"
    assert f"| dense_mnist | 100 | 1,000 | 4,200 | 4.20x | {spread} | 4x: not met |" in text
    assert "| 1.60x | 1.40-1.70x (median 1.55x) | 1.5x: met |" in text
    assert "| vgg_cifar10 | 100 | 1,000 | 1,200 | 1.20x | - | 1.5x: not met |" in text
    assert "| mine | 100 | 1,000 | 9,000 | 9.00x | - | - |" in text


def test_cifar10_seeds_reads_a_zip_in_the_loaders_order(tmp_path):
    """Pillow's reading of a train-only zip (for machines without TensorFlow's loader)
    gives the images and labels of whetstone's loader, in its order."""
    import zipfile

    import numpy as np
    from PIL import Image

    from benchmarks.cifar10_seeds import train_images_from_zip
    from whetstone.datasets import load_image_folder

    rng = np.random.default_rng(0)
    both, train_only = tmp_path / "both.zip", tmp_path / "train.zip"
    with zipfile.ZipFile(both, "w") as a, zipfile.ZipFile(train_only, "w") as b:
        for label in ("cat", "ant", "bee"):
            for i in range(4):
                image = Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8))
                data = io.BytesIO()
                image.save(data, "JPEG", quality=95)
                a.writestr(f"train/{label}/{i:04d}.jpg", data.getvalue())
                a.writestr(f"test/{label}/{i:04d}.jpg", data.getvalue())
                b.writestr(f"{label}/{i:04d}.jpg", data.getvalue())
    (x, y), _ = load_image_folder(both)
    x_zip, y_zip = train_images_from_zip(str(train_only))
    assert y_zip.tolist() == y.tolist() and sorted(set(y.tolist())) == [0, 1, 2]
    # the same images up to the decoders' DCT (Pillow's accurate, TensorFlow's fast one)
    assert x_zip.shape == x.shape and np.abs(x_zip - x).max() <= 8 / 255 + 1e-6


def test_cifar10_seeds_section_shows_each_seed_and_the_spread(tmp_path):
    from benchmarks.report import cifar10_seeds_section
    from benchmarks.seeds import mean_std

    runs = [{"seed": s, "ann": a, "widened_ann": a, "scratch_ann": 0.80, "sharpened": a - 0.02,
             "disagreements_without_tie": 0, "lost_to_widened": 0.02,
             "lost_to_scratch": 0.82 - a} for s, a in ((0, 0.79), (1, 0.78))]  # fmt: skip
    keys = ("ann", "widened_ann", "scratch_ann", "sharpened", "lost_to_widened", "lost_to_scratch")
    result = {"model": "vgg_cifar10_wide", "test_images": 10_000, "command": "python -m x",
              "training": {"backend": "jax", "devices": ["cuda:0"]}, "runs": runs,
              "summary": {k: mean_std([r[k] for r in runs]) for k in keys}}  # fmt: skip
    (tmp_path / "cifar10_wide_seeds.json").write_text(json.dumps(result))
    text = "\n".join(cifar10_seeds_section(tmp_path))
    assert (
        "over 2 seeds" in text
        and "Trained by `python -m benchmarks.cifar10_seeds train` on Keras's jax back end "
        "(cuda:0)."
        in text
    )
    assert "| 1 | 78.00% | 78.00% | 76.00% | yes | +2.00 pt | 80.00% | +4.00 pt |" in text
    assert (
        "| mean ± std | 78.50% ± 0.50 | 78.50% ± 0.50 | 76.50% ± 0.50 |  | +2.00 ± 0.00 pt" in text
    )
