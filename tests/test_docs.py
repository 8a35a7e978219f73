"""Every code example in docs/ runs as written, and the docs' build hooks work.

Each page's ```python blocks run in order in one namespace, in a fresh working
directory. An HTML comment on the line before a fence marks the block:

* ``<!-- docs-test: slow -->``: skipped in the fast run (later blocks of the page must
  not need it); a second, slow test runs the whole page.
* ``<!-- docs-test: requires=MODULE -->``: the page's test is skipped when MODULE is
  missing (marks combine: ``slow requires=spynnaker``).
* ``<!-- docs-test: run -->`` on a ```console block: its ``$ whetstone ...`` commands
  run through click's CliRunner after the page's Python blocks, and must exit with 0.

The site itself is built with ``mkdocs build --strict`` in CI (``.ci/run``).
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
FENCE = re.compile(
    r"^(?:<!--\s*docs-test:\s*(?P<marks>[^>]*?)\s*-->\n)?"
    r"```(?P<lang>[\w-]*)[^\n]*\n(?P<code>.*?)^```[ \t]*$",
    re.M | re.S,
)


@dataclass
class Block:
    lang: str
    code: str
    line: int
    marks: list[str] = field(default_factory=list)

    @property
    def slow(self) -> bool:
        return "slow" in self.marks

    @property
    def requires(self) -> list[str]:
        return [m.removeprefix("requires=") for m in self.marks if m.startswith("requires=")]


def blocks(page: Path) -> list[Block]:
    """The fenced blocks of a page (fences at the start of a line), in order."""
    text = page.read_text()
    found = []
    for match in FENCE.finditer(text):
        line = text.count("\n", 0, match.start("code")) + 1
        marks = (match["marks"] or "").replace(",", " ").split()
        found.append(Block(match["lang"], match["code"], line, marks))
    return found


def pages() -> list[Path]:
    return sorted(DOCS.rglob("*.md"))


def example_params():
    for page in pages():
        runnable = [b for b in blocks(page) if b.lang == "python" or "run" in b.marks]
        if not runnable:
            continue
        name = page.relative_to(DOCS).as_posix()
        yield pytest.param(page, False, id=name)
        if any(b.slow for b in runnable):
            yield pytest.param(page, True, id=f"{name}-all", marks=pytest.mark.slow)


def run_console(block: Block, where: str) -> None:
    """Run the ``$ whetstone ...`` commands of a console block with CliRunner."""
    from click.testing import CliRunner

    from whetstone.cli import main

    commands = re.findall(r"^\$ (.*(?:\\\n.*)*)", block.code, re.M)
    assert commands, f"{where}: a console block marked 'run' without '$ whetstone' commands"
    for command in commands:
        args = shlex.split(command.replace("\\\n", " "))
        assert args[0] == "whetstone", f"{where}: only whetstone commands run, not {args[0]!r}"
        result = CliRunner().invoke(main, args[1:], catch_exceptions=False)
        assert result.exit_code == 0, f"{where}: {command}\n{result.output}"


def _missing(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is None
    except ImportError:  # its parent package is missing
        return True


@pytest.mark.parametrize(("page", "include_slow"), list(example_params()))
def test_page_examples_run(page: Path, include_slow: bool, tmp_path, monkeypatch):
    page_blocks = [b for b in blocks(page) if include_slow or not b.slow]
    for module in sorted({m for b in page_blocks for m in b.requires}):
        if _missing(module):
            pytest.skip(f"{page.name} needs {module}")
    if os.environ.get("WHETSTONE_DATA"):  # the working directory changes
        monkeypatch.setenv("WHETSTONE_DATA", str(Path(os.environ["WHETSTONE_DATA"]).resolve()))
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "__docs__"}
    for block in page_blocks:
        if block.lang != "python":
            continue
        # pad with newlines so tracebacks point at the line in the Markdown file
        code = compile("\n" * (block.line - 1) + block.code, str(page), "exec")
        exec(code, namespace)
    for block in page_blocks:
        if block.lang in ("console", "bash") and "run" in block.marks:
            run_console(block, f"{page.name}:{block.line}")


def test_every_example_is_found():
    """Python examples sit in fences at the start of a line, where the test finds them."""
    for page in pages():
        text = page.read_text()
        fences = len(re.findall(r"^\s*```python", text, re.M))
        assert fences == sum(b.lang == "python" for b in blocks(page)), page
        assert "```pycon" not in text and "\n>>> " not in text, f"{page}: use ```python"
        for block in blocks(page):
            unknown = [m for m in block.marks if m not in ("slow", "run")]
            assert all(m.startswith("requires=") for m in unknown), f"{page}:{block.line}"


# ---------------------------------------------------------------- build hooks


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"docs_{name}", DOCS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_benchmarks_page_without_results(tmp_path):
    text, files = _load("hooks").include_benchmarks(tmp_path / "README.md")
    assert "have not been generated" in text and files == []


def test_benchmarks_page_includes_the_readme(tmp_path):
    bench = tmp_path / "benchmarks"
    (bench / "results").mkdir(parents=True)
    (bench / "results" / "plot.png").write_bytes(b"png")
    (bench / "results" / "run.json").write_text("{}")
    (bench / "README.md").write_text(
        "# Results\n\n![accuracy](results/plot.png)\n"
        '<img src="results/plot.png" width="50%">\n'
        "[raw](results/run.json), [recipe](../README.md), [gone](results/gone.png), "
        "[paper](https://example.org/x.pdf), [section](#results)\n"
    )
    text, files = _load("hooks").include_benchmarks(bench / "README.md")
    assert "![accuracy](benchmarks/results/plot.png)" in text
    assert 'src="benchmarks/results/plot.png"' in text
    assert "[raw](benchmarks/results/run.json)" in text
    assert "recipe, gone, [paper](https://example.org/x.pdf), [section](#results)" in text
    assert [f.name for f in files] == ["plot.png", "run.json"]


def test_figures_are_drawn(tmp_path):
    figures = _load("figures")
    record = {
        "model": "m",
        "recipe": {"dataset": "demo", "start_epoch": 1, "steps": 1},
        "history": {"accuracy": [0.5, 0.7, 0.8], "sharpness_a": [0.0, 1.0, 1.0],
                    "sharpness_b": [0.0, 0.0, 1.0]},
    }  # fmt: skip
    (tmp_path / "m.json").write_text(json.dumps(record))
    figures.activation_figure(tmp_path / "a.png")
    figures.sharpness_figure(tmp_path / "s.png", tmp_path / "m.json")
    assert all((tmp_path / n).read_bytes().startswith(b"\x89PNG") for n in ("a.png", "s.png"))
    (tmp_path / "bad.json").write_text(json.dumps({"history": {"loss": [1.0]}}))
    with pytest.raises(ValueError, match="lacks"):
        figures.sharpness_figure(tmp_path / "x.png", tmp_path / "bad.json")


@pytest.mark.slow
def test_sharpness_figure_without_committed_history_trains_on_demo_data(tmp_path):
    record = _load("figures").training_record(tmp_path / "missing.json")
    assert record["history"]["sharpness_spiking_3"][-1] == 1.0
