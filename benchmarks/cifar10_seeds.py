"""vgg_cifar10_wide over seeds: is "3 points below the ANN" a property of the method or of
one run? Per seed, the whole pipeline of the recipe: the vgg_cifar10 ANN (22 epochs),
``dense_1`` widened into 4 copies, sharpened and honed; and the ANN of the widened shape
trained from scratch (recipe ``vgg_cifar10_1024``), the other "same architecture's ANN".

Training (``train``) runs on any Keras back end, so it can run where an accelerator is
(on JAX in the committed run); ``--zip`` reads the training images from a zip of the
``train/<class>/`` folders with Pillow where TensorFlow's image loader is not installed
(Pillow decodes with libjpeg's accurate integer DCT, TensorFlow with the fast one: on
the first 200 CIFAR-10 training images the pixels differ by at most 4 of 255 levels).
It writes each seed's weights. ``evaluate`` then measures them on the CIFAR-10 JPEG test
set with the TensorFlow back end: the ANN, the widened ANN, the sharpened network (Keras
and the reference simulator) and the ANN trained from scratch, with mean and spread, in
``results/cifar10_wide_seeds.json``:

    KERAS_BACKEND=jax python -m benchmarks.cifar10_seeds train runs/ --seeds 0,1,2
    python -m benchmarks.cifar10_seeds evaluate runs/

Example:
    >>> _weights({"a_1": 1, "a_0": 0, "b_0": 2}, "a")
    [0, 1]
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import time
import zipfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import click
import numpy as np

from benchmarks.common import RESULTS, write_result
from benchmarks.seeds import mean_std

NAME = "cifar10_wide_seeds"
WIDEN = ("dense_1", 4)


def _weights(arrays, prefix: str) -> list:
    """The arrays ``prefix_0, prefix_1, ...`` of an npz in index order."""
    keys = [k for k in arrays if k.startswith(f"{prefix}_")]
    return [arrays[k] for k in sorted(keys, key=lambda k: int(k.rsplit("_", 1)[1]))]


def _decode(job: tuple[str, list[str]]) -> np.ndarray:
    from PIL import Image

    path, names = job
    with zipfile.ZipFile(path) as archive:
        return np.stack(
            [np.asarray(Image.open(io.BytesIO(archive.read(n))).convert("RGB")) for n in names]
        )


def train_images_from_zip(path: str) -> tuple[np.ndarray, np.ndarray]:
    """``<class>/<image>.jpg`` training images of a zip, in the order of
    :func:`whetstone.datasets.load_image_folder` (class, then file name, then
    :func:`~whetstone.datasets.image_order`), as float32 in [0, 1], decoded by Pillow."""
    from whetstone.datasets import image_order

    with zipfile.ZipFile(path) as archive:
        names = [n for n in archive.namelist() if n.endswith(".jpg")]
    classes = sorted({n.split("/")[0] for n in names})
    names.sort(key=lambda n: (classes.index(n.split("/")[0]), n))
    parts = [names[i : i + 2000] for i in range(0, len(names), 2000)]
    with ProcessPoolExecutor(min(16, os.cpu_count() or 1)) as pool:
        x = np.concatenate(list(pool.map(_decode, [(path, p) for p in parts])))
    y = np.array([classes.index(n.split("/")[0]) for n in names], np.int64)
    order = image_order(len(x))
    return x[order].astype("float32") / 255.0, y[order]


@click.group()
def main() -> None:
    """vgg_cifar10_wide's pipeline over seeds: train (any back end), then evaluate."""


@main.command()
@click.argument("out", type=click.Path(file_okay=False))
@click.option("--seeds", default="0,1,2", show_default=True, help="Comma-separated seeds.")
@click.option("--data", "data_dir", default="../shared/data", show_default=True)
@click.option("--zip", "zip_path", default=None, help="Training images from this zip (Pillow).")
@click.option("--quick", is_flag=True, help="Smoke run: 1 image in 100, one epoch each.")
def train(out: str, seeds: str, data_dir: str, zip_path: str | None, quick: bool) -> None:
    """Train each seed's pipeline; write OUT/seedN.npz (ANN, sharpened) and
    OUT/scratch_seedN.npz (from-scratch ANN), and OUT/training.json."""
    import keras

    import whetstone as ws
    from benchmarks import trained

    started, folder = time.time(), Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    data = None  # the recipes' own dataset
    if zip_path:
        x, y = train_images_from_zip(zip_path)
        x, y = (x[::100], y[::100]) if quick else (x, y)
        held = (x[-2000:], y[-2000:])  # logged each epoch only: training images, not the test set
        data = ((x, y), held)
    log = {"backend": keras.backend.backend(), "devices": _devices(), "runs": []}

    def recipe(name: str, seed: int):
        r = dataclasses.replace(trained.RECIPES[name], seed=seed)
        return trained.quick_recipe(r) if quick else r

    def ann(name: str, seed: int):
        r = recipe(name, seed)
        model, report = trained.train(r, data_dir, sharpen=False, epochs=r.from_baseline[0],
                                      lower_rate_at=r.from_baseline[1], data=data)  # fmt: skip
        log["runs"].append({"kind": name, "seed": seed, **_brief(report)})
        return model

    for seed in [int(s) for s in seeds.split(",")]:
        base = ann("vgg_cifar10", seed)
        start = ws.widen.widen(base, *WIDEN)
        sharp, report = trained.train(recipe("vgg_cifar10_wide", seed), data_dir, start=start,
                                      data=data)  # fmt: skip
        log["runs"].append({"kind": "vgg_cifar10_wide", "seed": seed, **_brief(report)})
        np.savez(folder / f"seed{seed}.npz", **_named("ann", base), **_named("wide", sharp))
        scratch = ann("vgg_cifar10_1024", seed)
        np.savez(folder / f"scratch_seed{seed}.npz", **_named("scratch", scratch))
        log["wall_seconds"] = time.time() - started
        (folder / "training.json").write_text(json.dumps(log, indent=1))
        print(f"seed {seed} trained ({log['wall_seconds']:.0f} s)", flush=True)


def _devices() -> list[str]:
    try:
        import jax

        return [str(d) for d in jax.devices()]
    except ImportError:
        return []


def _named(prefix: str, model) -> dict:
    return {f"{prefix}_{i}": w for i, w in enumerate(model.get_weights())}


def _brief(report: dict) -> dict:
    keep = ("fully_sharpened", "n_train", "train_seconds", "epoch_seconds")
    return {k: report[k] for k in keep}


@main.command()
@click.argument("folder", type=click.Path(exists=True, file_okay=False))
@click.option("--data", "data_dir", default="../shared/data", show_default=True)
@click.option("--out", default=str(RESULTS), show_default=True, help="Results folder.")
def evaluate(folder: str, data_dir: str, out: str) -> None:
    """Measure FOLDER's weights on the test set; write results/cifar10_wide_seeds.json."""
    result = measure(Path(folder), data_dir)
    print(json.dumps(result["summary"], indent=1))
    write_result(NAME, result, Path(out))


def measure(folder: Path, data_dir) -> dict:
    """Each seed's accuracies (see the module's docstring), then mean and spread."""
    import whetstone as ws
    from benchmarks import trained
    from benchmarks.common import accuracy
    from whetstone import backends

    _, (x, y) = ws.datasets.load("cifar10", data_dir)
    runs = []
    for path in sorted(folder.glob("seed*.npz"), key=lambda p: int(p.stem[4:])):
        seed, arrays = int(path.stem[4:]), np.load(path)
        base = trained.RECIPES["vgg_cifar10"].build_model()
        base.set_weights(_weights(arrays, "ann"))
        sharp = ws.widen.widen(base, *WIDEN)
        widened = accuracy(sharp, x, y)  # the widened ANN, before it takes the sharp weights
        sharp.set_weights(_weights(arrays, "wide"))
        scratch = trained.RECIPES["vgg_cifar10_1024"].build_model()
        scratch.set_weights(_weights(np.load(folder / f"scratch_seed{seed}.npz"), "scratch"))
        keras_pred = sharp.predict(x, verbose=0, batch_size=500).argmax(axis=1)
        sim = ws.simulate.run(ws.convert.to_spiking(sharp), x)
        agree = backends.agreement(sim.predictions, keras_pred, sim.tie_mask)
        run = {
            "seed": seed,
            "ann": accuracy(base, x, y),
            "widened_ann": widened,
            "scratch_ann": accuracy(scratch, x, y),
            "fully_sharpened": ws.sharpness.is_fully_sharpened(sharp),
            "sharpened": float((keras_pred == y).mean()),
            "reference": float((sim.predictions == y).mean()),
            "disagreements": agree["differing"],
            "disagreements_without_tie": agree["differing_not_ties"],
        }
        run["lost_to_widened"] = run["widened_ann"] - run["sharpened"]
        run["lost_to_scratch"] = run["scratch_ann"] - run["sharpened"]
        runs.append(run)
        print(run, flush=True)
    keys = ("ann", "widened_ann", "scratch_ann", "sharpened", "lost_to_widened",
            "lost_to_scratch")  # fmt: skip
    training = json.loads((folder / "training.json").read_text())
    return {
        "model": "vgg_cifar10_wide",
        "test_images": len(x),
        "training": {
            k: training[k] for k in ("backend", "devices", "runs", "calls") if k in training
        },
        "runs": runs,
        "summary": {k: mean_std([r[k] for r in runs]) for k in keys},
    }


if __name__ == "__main__":
    main()
