"""The test modules stand alone: they never import each other, and only the tests of the
benchmarks themselves import the ``benchmarks`` package (shared code is in ``_helpers``)."""

import ast
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
MODULES = sorted(TESTS.glob("test_*.py"))
BENCHMARK_TESTS = {"test_hardware_benchmarks.py", "test_peer_nengodl.py"}


def imported(path: Path) -> set[str]:
    """Top-level names of every module ``path`` imports, at any depth of the code.

    >>> sorted(imported(Path(__file__)))
    ['ast', 'pathlib', 'pytest']
    """
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_imported_finds_nested_imports(tmp_path):
    code = "import os.path\ndef f():\n    from benchmarks.suite import sized\n    import test_x\n"
    (tmp_path / "m.py").write_text(code)
    assert imported(tmp_path / "m.py") == {"os", "benchmarks", "test_x"}


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_a_test_module_imports_no_other_test_module(path):
    assert not {name for name in imported(path) if name.startswith("test_")}


@pytest.mark.parametrize(
    "path",
    [
        p
        for p in MODULES
        if not p.name.startswith("test_benchmarks") and p.name not in BENCHMARK_TESTS
    ],
    ids=lambda p: p.name,
)
def test_only_the_benchmarks_tests_import_the_benchmarks_package(path):
    assert "benchmarks" not in imported(path)
