"""The whetstone command line."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

import whetstone
from whetstone.cli import main


def invoke(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_version_and_help():
    assert invoke("--version").output.strip() == f"whetstone, version {whetstone.__version__}"
    assert "demo" in invoke("--help").output


def test_demo_trains_sharpens_and_simulates_exactly():
    result = invoke("--json", "-q", "demo", "--epochs", "5", "--plain-epochs", "2")
    report = json.loads(result.output)
    rows = {row["stage"]: row for row in report["results"]}
    assert report["fully_sharpened"] is True
    assert report["test_images"] == 1000
    sharpened = rows["Keras, sharpened"]["accuracy"]
    assert sharpened > 0.5  # 3 sharpening epochs on 6,000 images
    assert rows["reference simulator"]["accuracy"] == sharpened
    assert rows["reference simulator"]["timesteps"] == 3


def test_demo_refuses_epochs_without_room_for_sharpening():
    result = CliRunner().invoke(main, ["demo", "--epochs", "3", "--plain-epochs", "3"])
    assert result.exit_code == 2
    assert "--epochs (3) must exceed --plain-epochs (3)" in result.output


def test_console_script_runs():
    script = shutil.which("whetstone", path=str(Path(sys.executable).parent))
    assert script, "the whetstone console script is not installed"
    done = subprocess.run([script, "--version"], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == f"whetstone, version {whetstone.__version__}"
