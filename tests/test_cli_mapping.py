"""CLI: --block-shape pins Loihi blocks on inspect/verify/export; one NEST build per verify."""

from __future__ import annotations

import json

import numpy as np
import pytest
from _helpers import dense_stage
from click.testing import CliRunner

from whetstone.backends import spinnaker as sp
from whetstone.cli import main
from whetstone.network import KeyDecoder, SpikingNetwork


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture(scope="module")
def network_file(tmp_path_factory):
    rng = np.random.default_rng(0)
    stages = [dense_stage(rng, "enc", 784, 64, 0.5), dense_stage(rng, "wide", 64, 1200, 0.5),
              dense_stage(rng, "out", 1200, 20, 0.5)]  # fmt: skip
    path = tmp_path_factory.mktemp("cli_mapping") / "net.h5"
    SpikingNetwork((28, 28), stages, KeyDecoder(np.repeat(np.eye(10), 2, axis=1))).save(path)
    return path


def test_inspect_reports_partition_and_takes_pins(network_file):
    auto = json.loads(invoke("inspect", network_file, "--json").stdout)["resources"]["loihi"]
    assert [(p["stage"], p["block_shape"]) for p in auto["partition"]] == [
        ("wide", [600]),
        ("out", [20]),
    ]
    result = invoke("inspect", network_file, "--json", "--block-shape", "wide=300")
    pinned = json.loads(result.stdout)["resources"]["loihi"]
    assert pinned["cores"] == 5 and pinned["partition"][0]["pinned"] is True


def test_block_shape_errors_exit_2(network_file, tmp_path):
    result = invoke("inspect", network_file, "--block-shape", "wide=big")
    assert result.exit_code == 2 and "STAGE=SHAPE" in result.output
    result = invoke("export", network_file, "--to", "nir", "-o", tmp_path / "x.nir",
                    "--block-shape", "wide=300")  # fmt: skip
    assert result.exit_code == 2 and "applies to --to loihi" in result.output


def test_export_loihi_with_pins(network_file, tmp_path):
    result = invoke("export", network_file, "--to", "loihi", "-o", tmp_path / "run",
                    "--block-shape", "wide=400")  # fmt: skip
    assert result.exit_code == 0, result.output
    saved = SpikingNetwork.load(tmp_path / "run" / "network.h5")
    assert json.loads(saved.metadata["loihi_block_shapes"]) == {"wide": [400]}


def test_verify_spinnaker_builds_nest_once(network_file, monkeypatch):
    pytest.importorskip("pyNN.nest")
    builds = []
    assemble = sp._assemble
    monkeypatch.setattr(sp, "_assemble", lambda *a: builds.append(1) or assemble(*a))
    result = invoke("verify", network_file, "--to", "spinnaker", "--data", "demo", "-n", "40",
                    "--min-agreement", "0", "--json")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert len(builds) == 1
    assert json.loads(result.stdout)["images"] == 40
