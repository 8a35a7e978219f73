"""Repeatability: a reference model trained with several seeds, sharpened and not.

Per seed: the sharpened (and honed) model's Keras and reference-simulator accuracy on
the whole test set, their disagreements, and the never-sharpened baseline of the same
seed; then mean and standard deviation over the seeds. Seed 0 is the committed model.

    python -m benchmarks run seeds          # dense_mnist, seeds 0 1 2

Example:
    >>> mean_std([0.97, 0.98])
    {'mean': 0.975, 'std': 0.005}
"""

from __future__ import annotations

import numpy as np

from benchmarks import trained

MODEL, SEEDS = "dense_mnist", (0, 1, 2)


def mean_std(values: list[float]) -> dict:
    """Mean and population standard deviation, rounded to 6 digits."""
    return {"mean": round(float(np.mean(values)), 6), "std": round(float(np.std(values)), 6)}


def measure(data_dir, name: str = MODEL, seeds=SEEDS, n_test: int | None = None) -> dict:
    """Accuracy per seed and its spread, sharpened vs never sharpened."""
    import whetstone as ws

    _, (x_test, y_test) = ws.datasets.load(trained.RECIPES[name].dataset, data_dir)
    x_test, y_test = x_test[:n_test], y_test[:n_test]
    runs = []
    for seed in seeds:
        model = trained.sharpened_model(name, data_dir, seed=seed)
        baseline = trained.baseline_model(name, data_dir, seed=seed)
        keras_pred = model.predict(x_test, verbose=0, batch_size=1000).argmax(axis=1)
        result = ws.simulate.run(ws.convert.to_spiking(model), x_test)
        base_pred = baseline.predict(x_test, verbose=0, batch_size=1000).argmax(axis=1)
        runs.append(
            {
                "seed": seed,
                "epochs": len(trained.report(name, True, seed)["epoch_seconds"]),
                "sharpened_accuracy": float((keras_pred == y_test).mean()),
                "reference_accuracy": float((result.predictions == y_test).mean()),
                "disagreements": int((result.predictions != keras_pred).sum()),
                "decoder_ties": result.decoder_ties,
                "baseline_accuracy": float((base_pred == y_test).mean()),
            }
        )
        print(runs[-1], flush=True)
    summary = {
        key: mean_std([r[key] for r in runs]) for key in ("sharpened_accuracy", "baseline_accuracy")
    }
    summary["lost"] = mean_std([r["baseline_accuracy"] - r["sharpened_accuracy"] for r in runs])
    return {"model": name, "test_images": len(x_test), "runs": runs, "summary": summary}
