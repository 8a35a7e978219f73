"""whetstone.plot and `whetstone plot`: each picture is written as a real, non-empty PNG."""

from __future__ import annotations

import csv
import json
import struct
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

pytest.importorskip("matplotlib")

from whetstone import datasets, plot
from whetstone.cli import main
from whetstone.network import KeyDecoder, SpikingNetwork, Stage


def png_size(path: Path) -> tuple[int, int]:
    """(width, height) of a PNG, checking that it is one and not blank."""
    import matplotlib.image

    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    assert len(data) > 5_000, f"{path} is only {len(data)} bytes"
    pixels = matplotlib.image.imread(path)
    assert pixels[..., :3].std() > 0.05, f"{path} is (nearly) blank"
    return struct.unpack(">II", data[16:24])


@pytest.fixture(scope="module")
def demo_images() -> np.ndarray:
    return datasets.load("demo")[1][0][:200]


@pytest.fixture(scope="module")
def net() -> SpikingNetwork:
    """784-40-20 with random weights: a tiny network that fires on the demo digits."""
    rng = np.random.default_rng(0)
    w1 = rng.normal(0, 0.08, (784, 40)).astype("float32")
    w2 = rng.normal(0, 0.4, (40, 20)).astype("float32")
    stages = [Stage("hidden", "dense", (784,), (40,), w1), Stage("out", "dense", (40,), (20,), w2)]
    keys = np.eye(10, 20, dtype=int) + np.eye(10, 20, 10, dtype=int)
    return SpikingNetwork((28, 28), stages, KeyDecoder(keys))


def training_log() -> dict[str, list[float]]:
    return {
        "accuracy": [0.6, 0.8, 0.85, 0.84, 0.86, 0.87],
        "loss": [1.2, 0.7, 0.5, 0.6, 0.5, 0.45],
        "sharpness": [0.0, 0.0, 0.5, 1.0, 1.0, 1.0],
        "sharpness_spiking_1": [0.0, 0.0, 1.0, 1.0, 1.0, 1.0],
        "sharpness_spiking_2": [0.0, 0.0, 0.0, 1.0, 1.0, 1.0],
        "honing": [0.0, 0.0, 0.0, 0.0, 1.0, 1.0],
    }


def test_raster(net, demo_images, tmp_path):
    fig = plot.raster(net, demo_images, index=3, path=tmp_path / "raster.png")
    width, height = png_size(tmp_path / "raster.png")
    assert width > 400 and height > 150
    labels = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert labels[0].startswith("hidden: ") and labels[1].startswith("out: ")


def test_raster_refuses_a_bad_index(net, demo_images):
    with pytest.raises(ValueError, match="index 500 is outside the batch of 200"):
        plot.raster(net, demo_images, index=500)


def test_firing_rates(net, demo_images, tmp_path):
    plot.firing_rates(net, demo_images, batch_size=64, path=tmp_path / "rates.png")
    width, height = png_size(tmp_path / "rates.png")
    assert width > 300 and height > 300


def test_sharpening_from_history_and_csv(tmp_path):
    log = training_log()
    plot.sharpening(log, tmp_path / "history.png")
    path = tmp_path / "log.csv"  # the layout of keras.callbacks.CSVLogger
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["epoch", *log])
        writer.writerows([epoch, *row] for epoch, row in enumerate(zip(*log.values(), strict=True)))
    fig = plot.sharpening(str(path), tmp_path / "csv.png")
    assert [len(line.get_xdata()) for line in fig.axes[0].get_lines()] == [6, 6]
    for name in ("history.png", "csv.png"):
        width, height = png_size(tmp_path / name)
        assert width > 500 and height > 500


def test_sharpening_needs_sharpness_columns():
    with pytest.raises(ValueError, match="no sharpness_<layer> columns"):
        plot.sharpening({"loss": [1.0, 0.5]})


def test_accuracy_vs_timesteps(tmp_path):
    results = {
        "rate code": {"timesteps": [1, 4, 16, 64, 128], "accuracy": [0.1, 0.5, 0.9, 0.97, 0.98]},
        "whetstone": {"timesteps": 3, "accuracy": 0.96},
    }
    plot.accuracy_vs_timesteps(results, reference=0.98, path=tmp_path / "acc.png")
    assert png_size(tmp_path / "acc.png")[0] > 400
    with pytest.raises(ValueError, match="2 timesteps and 3 accuracies"):
        plot.accuracy_vs_timesteps({"x": {"timesteps": [1, 2], "accuracy": [0.1, 0.2, 0.3]}})


def test_resources_spinnaker_report(tmp_path):
    report = {  # the shape of get("spinnaker").resources(net)
        "cores": 5,
        "populations": {
            "input": {"cores": 1, "neurons_per_core": 40},
            "hidden": {"cores": 2, "neurons_per_core": 256, "longest_row": 200},
            "out": {"cores": 2, "neurons_per_core": 128, "longest_row": 256},
        },
        "row_limit": 256,
    }
    plot.resources(report, tmp_path / "spinnaker.png")
    assert png_size(tmp_path / "spinnaker.png")[1] > 300


def test_resources_loihi(net, tmp_path):
    from whetstone.backends import get

    loihi = get("loihi")
    if not loihi.is_available():
        pytest.skip("needs the loihi extra")
    fig = plot.resources(loihi.resources(net), tmp_path / "loihi.png")
    assert fig.axes[0].get_title().startswith("Loihi: ")
    assert png_size(tmp_path / "loihi.png")[0] > 400


def test_resources_refuses_another_dict():
    with pytest.raises(ValueError, match="expected a report"):
        plot.resources({"cores": 3})


def test_an_existing_png_is_kept_without_force(tmp_path):
    path = tmp_path / "a.png"
    path.write_bytes(b"keep")
    with pytest.raises(FileExistsError):
        plot.sharpening(training_log(), path)
    assert path.read_bytes() == b"keep"
    plot.sharpening(training_log(), path, force=True)
    png_size(path)


# ---------------------------------------------------------------- command line


def test_cli_plots(net, tmp_path):
    model = tmp_path / "net.h5"
    net.save(model)
    log = tmp_path / "log.json"
    log.write_text(json.dumps(training_log()))
    sweep = tmp_path / "sweep.json"
    sweep.write_text(json.dumps({"whetstone": {"timesteps": 2, "accuracy": 0.9}}))
    runner = CliRunner()
    for kind, source, extra in [
        ("raster", model, ["--index", "2"]),
        ("rates", model, ["-n", "100"]),
        ("sharpening", log, []),
        ("accuracy", sweep, []),
    ]:
        out = tmp_path / f"{kind}.png"
        result = runner.invoke(main, ["plot", kind, str(source), "-o", str(out), *extra])
        assert result.exit_code == 0, result.output
        assert result.stdout.strip() == str(out)
        png_size(out)


def test_cli_plot_refuses_to_overwrite(tmp_path):
    log = tmp_path / "log.json"
    log.write_text(json.dumps(training_log()))
    out = tmp_path / "s.png"
    out.write_bytes(b"x")
    result = CliRunner().invoke(main, ["plot", "sharpening", str(log), "-o", str(out)])
    assert result.exit_code == 2
    assert out.read_bytes() == b"x"
