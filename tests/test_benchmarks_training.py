"""The benchmarks that train in their quick mode: weight sharpening and the ReLU rewrite.

Each runs in this process on the embedded demo subset for one or two epochs, so the
benchmark code cannot rot.
"""

import pytest
from click.testing import CliRunner


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_weight_sharpening_benchmark_smoke_runs():
    pytest.importorskip("nengo_loihi")
    from benchmarks import weight_sharpening

    refused = CliRunner().invoke(weight_sharpening.main, ["--quick"])
    assert refused.exit_code == 2 and "--quick needs --out" in refused.output
    result = weight_sharpening.measure(None, "demo", quick=True)
    assert [run["weight_target"] for run in result["runs"]] == [None, "loihi", "spinnaker"]
    _, loihi, spinnaker_run = result["runs"]
    assert loihi["weight_sharpness"] == 1.0 and loihi["loihi_sim"]["off_grid"] == []
    assert loihi["loihi_sim"]["differing_not_ties"] == 0
    assert spinnaker_run["spinnaker_fixed_point"]["off_grid"] == []
    assert spinnaker_run["spinnaker_fixed_point"]["differing_not_ties"] == 0


def test_from_relu_benchmark_quick_run(tmp_path):
    """``python -m benchmarks.from_relu --quick``: every step on the demo subset, 1-2 epochs."""
    from benchmarks import from_relu

    result = from_relu.main(["--quick", "--out", str(tmp_path)])
    assert (tmp_path / "from_relu.json").is_file()
    assert not list(tmp_path.rglob(".*partial*"))  # every file written through whetstone.files
    assert result["quick"] is True and result["sharpening"]["fully_sharpened"] is True
    assert result["spiking"]["disagreements_not_ties"] == 0
    assert result["cli"]["report"]["fully_sharpened"] is True
    assert result["cli"]["spiking"]["disagreements_not_ties"] == 0
    for name in ("from_relu_ann.keras", "from_relu.keras", "from_relu_cli.keras"):
        assert (tmp_path / "models" / name).is_file()


def test_a_recipe_from_its_baseline_sharpens_the_trained_baseline(tmp_path, data_dir, monkeypatch):
    """``Recipe.from_baseline``: the baseline trains first, and the sharpened run starts
    from its weights at the honing rate; its report counts the baseline's seconds too."""
    import dataclasses

    import keras
    import numpy as np

    from benchmarks import trained

    recipe = dataclasses.replace(trained.RECIPES["dense_mnist"], from_baseline=(3, 2))
    monkeypatch.setitem(trained.RECIPES, "dense_mnist", recipe)
    monkeypatch.setattr(trained, "CACHE", tmp_path)
    monkeypatch.setattr(trained, "QUICK", True)
    starts, train = [], trained.train

    def spy(recipe, data_dir, **options):
        starts.append(options.get("start"))
        return train(recipe, data_dir, **options)

    monkeypatch.setattr(trained, "train", spy)
    model = trained.sharpened_model("dense_mnist", data_dir)
    baseline = keras.models.load_model(tmp_path / "dense_mnist_baseline.keras")
    assert starts[0] is None and starts[1] is not None  # the baseline first, then from it
    for mine, theirs in zip(starts[1].get_weights(), baseline.get_weights(), strict=True):
        np.testing.assert_array_equal(mine, theirs)
    sharp, base = trained.report("dense_mnist"), trained.report("dense_mnist", sharpen=False)
    assert sharp["fully_sharpened"] and not base["sharpened"]
    assert sharp["baseline_seconds"] == base["train_seconds"] > 0
    assert float(model.optimizer.learning_rate) == np.float32(recipe.hone_learning_rate)


def test_continued_honing_with_frozen_norm_and_weight_average():
    """``benchmarks.continued``: ``frozen_norm`` keeps every BatchNorm's statistics, and
    ``ema`` leaves the averaged weights in the model, evaluated as the last entry."""
    import keras
    import numpy as np

    from benchmarks import continued, trained
    from whetstone import models

    rng = np.random.default_rng(0)
    x, y = rng.uniform(size=(64, 28, 28)).astype("float32"), rng.integers(0, 10, 64)
    data = ((x, y), (x[:16], y[:16]))
    recipe = trained.Recipe("mnist", "conv_mnist", "adam", 1e-3, 1, 0, 1, batch_size=32)

    model = models.conv_mnist(filters=(4,), head="readout")
    norm = model.get_layer("norm_1")
    before = [v.numpy().copy() for v in (norm.moving_mean, norm.moving_variance, norm.gamma)]
    run = continued.continue_training(model, recipe, data, 1e-2, 2, frozen_norm=True)
    after = [v.numpy() for v in (norm.moving_mean, norm.moving_variance, norm.gamma)]
    assert all(np.array_equal(a, b) for a, b in zip(before, after, strict=True))
    assert run["frozen_norm"] is True and len(run["test_accuracy"]) == 2

    model = models.conv_mnist(filters=(4,), head="readout")
    run = continued.continue_training(model, recipe, data, 1e-2, 2, ema=0.5)
    assert run["ema_momentum"] == 0.5 and run["last_is_average"] is True
    assert len(run["test_accuracy"]) == 3  # two epochs, then the averaged model
    assert len(run["seconds"]) == 2
    assert isinstance(model.optimizer, keras.optimizers.Adam) and model.optimizer.use_ema


def test_continued_honing_without_dropout():
    """``dropout=0`` trains with every Dropout layer passing its input through unchanged."""
    import numpy as np

    from benchmarks import continued, trained
    from whetstone import models

    rng = np.random.default_rng(0)
    x, y = rng.uniform(size=(64, 28, 28)).astype("float32"), rng.integers(0, 10, 64)
    recipe = trained.Recipe("mnist", "conv_mnist", "adam", 1e-3, 1, 0, 1, batch_size=32)
    model = models.conv_mnist(filters=(4,), head="readout")
    run = continued.continue_training(
        model, recipe, ((x, y), (x[:16], y[:16])), 1e-2, 1, dropout=0.0
    )
    assert run["dropout"] == 0.0 and len(run["test_accuracy"]) == 1
    dropout = model.get_layer("dropout_out")
    features = np.ones((8, 16), "float32")
    np.testing.assert_array_equal(dropout(features, training=True), features)


def test_a_widened_recipe_starts_from_the_widened_baseline(tmp_path, data_dir, monkeypatch):
    """``Recipe.widen``: the baseline is another recipe's baseline with a layer widened
    (its report says so and keeps that training's seconds), and the sharpened run trains
    the widened architecture from it."""
    import dataclasses

    import numpy as np

    from benchmarks import trained
    from whetstone import widen

    narrow = dataclasses.replace(trained.RECIPES["conv_mnist"], options=(("filters", (4,)),
                                 ("hidden", (8,))), from_baseline=(1, 1))  # fmt: skip
    monkeypatch.setitem(trained.RECIPES, "narrow", narrow)
    monkeypatch.setitem(trained.RECIPES, "wide", dataclasses.replace(
        narrow, widen=("narrow", "dense_1", 3)))  # fmt: skip
    monkeypatch.setattr(trained, "CACHE", tmp_path)
    monkeypatch.setattr(trained, "QUICK", True)
    model = trained.sharpened_model("wide", data_dir)
    narrow_base = trained.baseline_model("narrow", data_dir)
    wide_base = trained.baseline_model("wide", data_dir)
    assert wide_base.get_layer("dense_1").units == model.get_layer("dense_1").units == 24
    beta = np.tile(narrow_base.get_layer("norm_dense_1").beta.numpy(), 3)
    wide_beta = wide_base.get_layer("norm_dense_1").beta.numpy()
    np.testing.assert_allclose(wide_beta, beta + np.repeat(widen.offsets(3), 8), atol=1e-6)
    base, sharp = trained.report("wide", sharpen=False), trained.report("wide")
    assert base["widened_from"] == "narrow" and base["recipe"]["widen"] == ["narrow", "dense_1", 3]
    assert base["train_seconds"] == trained.report("narrow", sharpen=False)["train_seconds"]
    assert sharp["fully_sharpened"] and sharp["baseline_seconds"] == base["train_seconds"]
    # a fourth entry is the offsets' spread (a convolution reading the image wants less)
    monkeypatch.setitem(trained.RECIPES, "staggered", dataclasses.replace(
        narrow, widen=("narrow", "conv_1", 2, 0.5)))  # fmt: skip
    staggered = trained.baseline_model("staggered", data_dir)
    assert staggered.get_layer("conv_1").filters == 8
    beta = np.tile(narrow_base.get_layer("norm_1").beta.numpy(), 2)
    shift = np.repeat(widen.offsets(2, 0.5), 4)  # [-0.125] * 4 + [0.125] * 4
    np.testing.assert_allclose(staggered.get_layer("norm_1").beta.numpy(), beta + shift, atol=1e-6)
