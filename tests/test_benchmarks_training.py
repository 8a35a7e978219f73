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


def test_widening_staggers_copies_of_the_last_hidden_layer():
    """``benchmarks.widened.widen``: each hidden unit becomes ``copies`` units with its
    weights, BatchNorm offsets spread by 1/copies around its own, and the readout's weight
    shared among them; once sharp, the copies fire at staggered thresholds."""
    import dataclasses

    import numpy as np

    from benchmarks import widened
    from whetstone import models

    ann = models.conv_mnist(filters=(4,), hidden=(8,), head="readout")
    options = (("filters", (4,)), ("hidden", (24,)))
    recipe = dataclasses.replace(widened.widened_recipe(3), build="conv_mnist", options=options)
    wide = widened.widen(ann, recipe, 3)
    kernel, bias = ann.get_layer("dense_1").get_weights()
    wide_kernel, wide_bias = wide.get_layer("dense_1").get_weights()
    np.testing.assert_array_equal(wide_kernel, np.tile(kernel, (1, 3)))
    np.testing.assert_array_equal(wide_bias, np.tile(bias, 3))
    beta = ann.get_layer("norm_dense_1").beta.numpy()
    wide_beta = wide.get_layer("norm_dense_1").beta.numpy().reshape(3, 8)
    np.testing.assert_allclose(wide_beta - beta, [[-1 / 3] * 8, [0] * 8, [1 / 3] * 8], atol=1e-6)
    readout = ann.get_layer("readout").get_weights()[0]
    wide_readout = wide.get_layer("readout").get_weights()[0].reshape(3, 8, 10)
    np.testing.assert_allclose(wide_readout.sum(axis=0), readout, rtol=1e-6)
    np.testing.assert_array_equal(wide.get_layer("conv_1").get_weights()[0],
                                  ann.get_layer("conv_1").get_weights()[0])  # fmt: skip
