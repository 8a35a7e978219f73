"""The Fashion-MNIST suite, smoke-run end to end (``run fashion --quick``, then ``report``).

In a file of its own so that pytest-xdist (``--dist loadfile``) can run it beside the
other suites' smoke runs (``test_benchmarks*.py``).
"""

import pytest
from _helpers import benchmark_smoke, check_model_suite


@pytest.mark.slow
def test_fashion_suite_smoke_runs_and_reports(tmp_path, data_dir):
    out, text = benchmark_smoke(tmp_path, data_dir, "fashion")
    check_model_suite(out, text, "fashion", ["conv_fashion"])
