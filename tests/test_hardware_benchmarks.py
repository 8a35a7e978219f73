"""The spike-budget and weight-sharpening sections of the benchmark report, built from
result files (no training): tables, the plot, and the figures they show."""

import json

from benchmarks import report
from benchmarks.spike_budget import reduction


def point(strength, accuracy, synops, energy_nj):
    return {
        "strength": strength, "epochs": 0 if strength is None else 2, "accuracy": accuracy,
        "synaptic_operations": synops, "on_chip_spikes": 1900.0, "energy_nj": energy_nj,
        "energy_parts_nj": {"synaptic_ops": synops * 0.0236, "spikes": 3.2,
                            "neuron_updates": 889.06},
        "accuracy_change_points": 0.0, "synaptic_operations_reduction": 0.0,
    }  # fmt: skip


def test_spike_budget_section_has_the_table_and_the_curve(tmp_path):
    points = [point(None, 0.985, 144590.8, 4304.6), point(0.0, 0.986, 144711.3, 4307.5),
              point(2.0, 0.985, 116032.3, 3630.2)]  # fmt: skip
    points[2]["synaptic_operations_reduction"] = round(reduction(144711.3, 116032.3), 4)
    result = {"command": "python -m benchmarks run spike_budget", "model": "conv_mnist",
              "seed": 0, "test_images": 10000, "points": points,
              "fine_tune": {"epochs": 2, "optimizer": "adam", "learning_rate": 1e-4,
                            "budget_layers": ["pool_1"]},
              "energy_costs": {"source": "Davies et al. 2018, Table 2"}}  # fmt: skip
    (tmp_path / "spike_budget.json").write_text(json.dumps(result))
    text = "\n".join(report.spike_budget_section(tmp_path))
    assert "| committed model | 0 | 98.50% |" in text
    assert "| 2 | 2 | 98.50% | +0.00 | 116,032 | -19.8% | 1,900 | 3.63 |" in text
    assert "Table 2" in text and "![spike budget](" in text
    assert (tmp_path / "spike_budget.png").stat().st_size > 1000


def test_weight_sharpening_section_lists_every_target(tmp_path):
    def run(target, differ):
        agree = {"agreement": 1 - differ / 1000, "differing": differ, "differing_not_ties": differ}
        return {"weight_target": target, "epochs": 2, "keras_accuracy": 0.985,
                "accuracy_change_points": -0.1, "loihi_sim": {**agree, "images": 1000},
                "spinnaker_fixed_point": agree,
                "rounded_after_training_accuracy": {"loihi": 0.985, "spinnaker": 0.985},
                "nest": {**agree, "images": 300}}  # fmt: skip

    result = {"command": "python -m benchmarks run weight_sharpening_conv", "model": "conv_mnist",
              "test_images": 10000, "method": "fine-tuned from the committed model",
              "runs": [run(None, 3), run("loihi", 0)]}  # fmt: skip
    (tmp_path / "weight_sharpening_conv_mnist.json").write_text(json.dumps(result))
    text = "\n".join(report.weight_sharpening_section(tmp_path))
    assert "fine-tuned from the committed model" in text
    assert "| conv_mnist | loihi | 2 | 98.50% | -0.10 |" in text
    assert "100.00% of 1,000 (0, 0 no tie)" in text and "99.70% of 300 (3, 3 no tie)" in text
