"""Model suites: train (cached), sharpen, convert and run each model on every back end.

A suite names models (``SUITES``); per model it records the never-sharpened baseline
and the sharpened Keras accuracy, training time per epoch with and without the
sharpener, the reference simulator (accuracy, agreement with Keras, timesteps,
synaptic operations vs ANN MACs, speed against Keras), Nengo, the Loihi emulator,
PyNN on NEST and the SpiNNaker fixed-point model, and the NIR round trip plus
snnTorch. The Loihi emulator (integer and float) and NEST run the whole test set when a
timed run of ``PROBE_IMAGES`` projects it within their budget (``BUDGET_SECONDS``), and
otherwise the largest multiple of 100 images that fits (:func:`sized` records which, and
why); snnTorch runs on the first images of the test set (``SUBSETS``).

Example:
    >>> from benchmarks.suite import SUITES
    >>> SUITES["mnist"]
    ('dense_mnist', 'conv_mnist')
"""

from __future__ import annotations

import time

from benchmarks import (
    backend_nengo,
    backend_nir,
    backend_spinnaker,
    simulator_throughput,
    subject,
    trained,
)

SUITES = {
    "mnist": ("dense_mnist", "conv_mnist"),
    "fashion": ("conv_fashion",),
    "cifar10": ("vgg_cifar10",),
    "cifar10_wide": ("vgg_cifar10_wide",),
    "cifar10_staggered": ("vgg_cifar10_staggered",),
    "cifar10_64": ("vgg_cifar10_64",),
    "resnet": ("resnet_mnist",),
}

# Test images on snnTorch (full runs); the dense model runs on more.
SUBSETS = {"snntorch": {"dense_mnist": 1000, "*": 300}}
QUICK_TEST_IMAGES = 100
BUDGET_SECONDS = {"loihi": 2700.0, "nest": 1800.0}
"""Wall seconds per model that a full run may take: Loihi (both emulator targets together,
about 1,600 s for the CIFAR-10 model on a quiet 2-core machine) and NEST (build and
simulation)."""
PROBE_IMAGES = 200
"""Images of the timed run that projects a back end's full run (a run of a quarter as many
first, so that the per-image rate leaves out each run's fixed costs)."""


def subset(backend: str, model: str, quick: bool) -> int:
    """How many test images ``backend`` (one of ``SUBSETS``) runs for ``model``."""
    if quick:
        return QUICK_TEST_IMAGES
    sizes = SUBSETS[backend]
    return sizes.get(model, sizes["*"])


def sized(backend: str, total: int, timed, quick: bool = False) -> dict:
    """How many of ``total`` test images ``backend`` runs, within ``BUDGET_SECONDS``.

    ``timed(n)`` runs the first ``n`` images and gives ``(build_seconds, run_seconds)``;
    the full run is projected as the build and the run's fixed costs plus ``total`` times
    the seconds per image beyond them (:func:`_marginal_seconds`).

    Example:
        >>> sized("nest", 10_000, lambda n: (20.0, n / 50))["images"]  # 220 s projected
        10000
        >>> sized("nest", 10_000, lambda n: (20.0, n / 4))["images"]  # 2,520 s projected
        7100
    """
    if quick:
        return {"images": min(QUICK_TEST_IMAGES, total), "of": total, "why": "quick run"}
    probe = min(PROBE_IMAGES, total)
    build, run = timed(probe)
    per_image = _marginal_seconds(timed, probe, run)
    fixed = build + max(0.0, run - probe * per_image)
    projected = fixed + total * per_image
    budget = BUDGET_SECONDS[backend]
    images = total
    why = f"all: {projected:,.0f} s projected, budget {budget:,.0f} s"
    if projected > budget:
        images = max(probe, int((budget - fixed) / per_image) // 100 * 100)
        why = (
            f"budget: all {total:,} would take {projected:,.0f} s > {budget:,.0f} s "
            f"({1 / per_image:,.1f} images/s on {probe}, build {build:,.0f} s)"
        )
    return {
        "images": images,
        "of": total,
        "why": why,
        "probe_images": probe,
        "probe_build_seconds": round(build, 2),
        "probe_images_per_second": round(1 / per_image, 2),
        "projected_seconds": round(projected, 1),
        "budget_seconds": budget,
    }


def _marginal_seconds(timed, probe: int, run: float) -> float:
    """Seconds per image beyond a run's fixed costs: from runs of ``probe`` and ``probe // 4``."""
    small = probe // 4
    if small < 1:
        return max(run, 1e-9) / probe
    extra = run - timed(small)[1]
    return extra / (probe - small) if extra > 0 else max(run, 1e-9) / probe


def _training(name: str, data_dir) -> dict:
    """Both training runs (sharpened and baseline), trained here if not cached."""
    trained.sharpened_model(name, data_dir)
    trained.baseline_model(name, data_dir)
    sharp, base = trained.report(name), trained.report(name, sharpen=False)

    def mean(seconds: list[float]) -> float:  # the first epoch also traces: left out
        kept = seconds[1:] or seconds
        return sum(kept) / len(kept)

    return {
        "recipe": sharp["recipe"],
        "baseline_accuracy": base["test_accuracy"],
        "sharpened_accuracy": sharp["test_accuracy"],
        "fully_sharpened": sharp["fully_sharpened"],
        "epochs_sharpened": len(sharp["epoch_seconds"]),
        "epochs_baseline": len(base["epoch_seconds"]),
        "epoch_seconds_sharpened": mean(sharp["epoch_seconds"]),
        "epoch_seconds_baseline": mean(base["epoch_seconds"]),
        # from a trained baseline (``Recipe.from_baseline``), its training counts too
        "train_seconds_sharpened": sharp["train_seconds"] + sharp.get("baseline_seconds", 0),
        "history_sharpened": sharp["history"],
        "history_baseline": base["history"],
    }


def evaluate(name: str, data_dir, quick: bool = False) -> dict:
    """Every figure of one model (``quick``: a few test images per back end)."""
    started = time.perf_counter()
    n_test = QUICK_TEST_IMAGES if quick else None
    figures = {"model": name, "dataset": trained.RECIPES[name].dataset}
    figures["training"] = _training(name, data_dir)
    print(name, "trained", flush=True)
    loaded = subject.load(name, data_dir, n_test)  # model, data and reference run: once
    figures["simulator"] = simulator_throughput.measure_subject(loaded, repeats=1 if quick else 3)
    print(name, "reference simulator done", flush=True)
    total = len(loaded.y)
    figures["sizes"] = {"loihi": sized("loihi", total, backend_nengo.timed(loaded), quick)}
    print(name, "Loihi emulator images", figures["sizes"]["loihi"], flush=True)
    figures["nengo"] = backend_nengo.bench_model(loaded, figures["sizes"]["loihi"]["images"])
    figures["sizes"]["nest"] = sized("nest", total, backend_spinnaker.timed(loaded), quick)
    print(name, "NEST images", figures["sizes"]["nest"], flush=True)
    figures["spinnaker"] = backend_spinnaker.evaluate(loaded, figures["sizes"]["nest"]["images"])
    print(name, "PyNN/NEST done", flush=True)
    figures["nir"] = backend_nir.measure(loaded, subset("snntorch", name, quick))
    figures["wall_seconds"] = round(time.perf_counter() - started, 1)
    return figures


def summary_row(figures: dict) -> dict:
    """The headline numbers of one model, flat (one CSV row / table row)."""
    training, sim, ng = figures["training"], figures["simulator"], figures["nengo"]
    nest, nir = figures["spinnaker"]["nest"], figures["nir"]
    loihi = ng.get("loihi_sim", {})
    snn = nir.get("snntorch", {})
    return {
        "model": figures["model"],
        "dataset": figures["dataset"],
        "baseline_accuracy": training["baseline_accuracy"],
        "keras_accuracy": sim["keras_accuracy"],
        "reference_accuracy": sim["simulator_accuracy"],
        "reference_disagreements": sim["disagreements"],
        "decoder": {"ReadoutDecoder": "readout", "KeyDecoder": "N-hot key"}.get(
            sim.get("decoder"), "N-hot key"
        ),
        "decoder_ties": sim["decoder_ties"],
        "test_images": sim["test_images"],
        "nengo_agreement": ng["nengo"]["agreement"],
        "nengo_images": ng["nengo"]["images"],
        "loihi_accuracy": loihi.get("accuracy"),
        "loihi_keras_accuracy_same_images": loihi.get("keras_accuracy_same_images"),
        "loihi_agreement": loihi.get("agreement"),
        "loihi_images": loihi.get("images"),
        "loihi_float_images": ng.get("loihi_simreal", {}).get("images"),
        "loihi_cores": ng.get("loihi_resources", {}).get("cores"),
        "loihi_chips": ng.get("loihi_resources", {}).get("chips"),
        "spinnaker_cores": figures["spinnaker"].get("virtual_board", {}).get("cores"),
        "spinnaker_chips": figures["spinnaker"].get("virtual_board", {}).get("chips"),
        "nest_agreement": nest["prediction_agreement"],
        "nest_images": figures["spinnaker"]["images"],
        "spinnaker_fixed_point_agreement": figures["spinnaker"]["spinnaker_fixed_point"][
            "prediction_agreement_with_reference"
        ],
        "nir_round_trip_agreement": nir["round_trip"]["agreement"],
        "snntorch_agreement": snn.get("agreement"),
        "snntorch_images": snn.get("images"),
        "timesteps": sim["latency_steps"],
        "spikes_per_inference": round(sum(sim["spikes_per_inference_per_stage"]), 1),
        "synops_per_inference": sim["synops_per_inference"],
        "ann_macs_per_inference": sim["ann_macs_per_inference"],
        "epoch_seconds_sharpened": round(training["epoch_seconds_sharpened"], 2),
        "epoch_seconds_baseline": round(training["epoch_seconds_baseline"], 2),
        "train_minutes_sharpened": round(training["train_seconds_sharpened"] / 60, 1)
        if "train_seconds_sharpened" in training  # suites run before it was recorded
        else None,
        "keras_images_per_s": sim["keras_images_per_s"],
        "reference_images_per_s": sim["simulator_images_per_s"],
        "nengo_images_per_s": round(ng["nengo"].get("images_per_second", 0), 1),
        "loihi_images_per_s": round(loihi.get("images_per_second", 0), 1),
        "loihi_processes": loihi.get("processes", 1),
        "loihi_float_images_per_s": round(
            ng.get("loihi_simreal", {}).get("images_per_second", 0), 1
        ),
        "nest_images_per_s": round(nest["images_per_second"], 1),
    }
