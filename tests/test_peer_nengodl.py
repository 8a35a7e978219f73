"""Smoke run of the NengoDL peer benchmark (tiny subset, one epoch) in its own env."""

from __future__ import annotations

import json
import math

import pytest

from benchmarks import peer_nengodl


@pytest.fixture(scope="module")
def peer_env():
    """The NengoDL env, created on first use; skipped when it cannot be created."""
    try:
        return peer_nengodl.ensure_env()
    except RuntimeError as error:  # e.g. no network and no package mirror
        pytest.skip(f"NengoDL peer env {peer_nengodl.ENV} cannot be created: {error}")


def _is_fraction(value) -> bool:
    return isinstance(value, float) and math.isfinite(value) and 0.0 <= value <= 1.0


@pytest.mark.slow
def test_quick_run_end_to_end(peer_env, data_dir, tmp_path):
    models = ["dense_mnist", "conv_fashion", "conv_mnist_avgpool"]  # every code path
    argv = ["--quick", "--data", str(data_dir), "--out", str(tmp_path), "--models", *models]
    assert peer_nengodl.main(argv) == 0
    result = json.loads((tmp_path / "peer_nengodl.json").read_text())

    assert result["benchmark"] == "peer_nengodl" and result["quick"] is True
    assert result["peer_env"]["nengo_dl"] == "3.6.0"
    assert result["peer_env"]["tensorflow"] == "2.12.1"
    steps, scales = result["config"]["timesteps"], result["config"]["scales"]
    assert set(result["models"]) == set(models)
    for name, model in result["models"].items():
        assert model["epochs"] == 1 and len(model["train_seconds_per_epoch"]) == 1, name
        assert model["test_images"] == peer_nengodl.QUICK["test"]
        assert model["timesteps"] == list(range(1, steps + 1))
        for key in ("ann_accuracy", "ann_accuracy_sweep_images", "converted_rate_accuracy"):
            assert _is_fraction(model[key]), (name, key)
        assert set(model["scales"]) == {str(s) for s in scales}
        for figures in model["scales"].values():
            assert len(figures["accuracy"]) == steps
            assert all(_is_fraction(a) for a in figures["accuracy"])
            assert figures["images_per_s"] > 0
            assert len(figures["spikes"]["spikes_per_image_by_t"]) == steps
            for key in ("within_1pt", "within_0_1pt"):
                assert figures[key] is None or 1 <= figures[key] <= steps
        best = model["best"]
        assert best["scale_best_at_T"] in {float(s) for s in scales}
        if best["within_1pt"] is not None:
            assert best["images_per_s_at_within_1pt"]["images_per_s"] > 0


def test_quick_refuses_to_overwrite_the_full_result():
    with pytest.raises(SystemExit):
        peer_nengodl.main(["--quick"])


def test_a_run_of_some_models_keeps_the_others_with_their_own_settings(tmp_path):
    previous = tmp_path / "peer_nengodl.json"
    old_config = {"timesteps": 128}
    previous.write_text(
        json.dumps(
            {
                "date": "2026-01-01T00:00:00Z",
                "command": "old",
                "config": old_config,
                "models": {"dense_mnist": {"ann_accuracy": 0.98}, "conv_mnist": {"x": 1}},
            }
        )
    )
    new = {"config": {"timesteps": 64}, "models": {"conv_mnist": {"x": 2}}}
    result = peer_nengodl.merged(new, previous)

    assert list(result["models"]) == ["dense_mnist", "conv_mnist"]
    assert result["models"]["conv_mnist"]["x"] == 2
    assert result["models"]["conv_mnist"]["run"]["config"] == {"timesteps": 64}
    kept = result["models"]["dense_mnist"]
    assert kept["ann_accuracy"] == 0.98
    assert kept["run"] == {"date": "2026-01-01T00:00:00Z", "command": "old", "config": old_config}
    assert peer_nengodl.merged(new, tmp_path / "absent.json")["models"].keys() == {"conv_mnist"}
