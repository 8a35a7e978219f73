"""MkDocs hooks (declared in ``mkdocs.yml``): generated figures and the benchmarks page.

* ``on_files`` draws the figures (``docs/figures.py``) into ``build/docs/figures/``,
  outside the docs folder so ``mkdocs serve`` does not rebuild on its own output, and
  adds them to the site as ``figures/*.png``; it also adds the files that
  ``benchmarks/README.md`` links to (its plots) under ``benchmarks/``.
* ``on_page_markdown`` puts the content of ``benchmarks/README.md`` into the page
  that holds the ``<!-- include: benchmarks/README.md -->`` marker, or a note when the
  benchmarks have not been generated yet.
* ``on_config`` adds a Markdown preprocessor: the CLI reference keeps the example blocks
  of the click docstrings as code blocks instead of one paragraph.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT / "benchmarks"
GENERATED = ROOT / "build" / "docs"
MARKER = "<!-- include: benchmarks/README.md -->"
MISSING = (
    '!!! note "Not generated yet"\n'
    "    The benchmark results have not been generated yet: `benchmarks/README.md` is\n"
    "    missing. `python -m benchmarks report` writes it from `benchmarks/results/`.\n"
)
# [text](target "title") and ![alt](target), and src="target" in HTML
LINK = re.compile(
    r"(?P<bang>!?)\[(?P<text>[^\]]*)\]\((?P<target>[^)\s]+)(?P<title>\s+\"[^\"]*\")?\)"
)
SRC = re.compile(r"(?P<attr>\bsrc=)\"(?P<target>[^\"]+)\"")


def _external(target: str) -> bool:
    """A URL with a scheme, an anchor on the same page, or a site-absolute path."""
    return bool(re.match(r"^[a-z][a-z0-9+.-]*:|^#|^/", target, re.I))


def _local(target: str, base: Path) -> Path | None:
    """The file (not a page) under ``base`` that a relative link points to, or None."""
    path = (base / target.split("#")[0]).resolve()
    inside = path.is_relative_to(base.resolve())
    return path if inside and path.is_file() and path.suffix != ".md" else None


def include_benchmarks(readme: Path = BENCHMARKS / "README.md") -> tuple[str, list[Path]]:
    """The README's markdown for a page at the docs root, and the files it links to.

    Links to files under ``benchmarks/`` (its plots, result files) become links into
    the site's ``benchmarks/`` folder, where :func:`on_files` puts those files; other
    relative links (to pages outside the site) keep their text only. Without the
    README, a note saying the results have not been generated.
    """
    if not readme.is_file():
        return MISSING, []
    base = readme.parent
    files: list[Path] = []

    def site_path(target: str) -> str | None:
        path = _local(target, base)
        if path is None:
            return None
        files.append(path)
        anchor = target[len(target.split("#")[0]) :]
        return f"{base.name}/{path.relative_to(base.resolve()).as_posix()}{anchor}"

    def link(match: re.Match) -> str:
        target = match["target"]
        if _external(target):
            return match[0]
        new = site_path(target)
        if new is None:
            return match["text"]
        return f"{match['bang']}[{match['text']}]({new}{match['title'] or ''})"

    def src(match: re.Match) -> str:
        new = None if _external(match["target"]) else site_path(match["target"])
        return match[0] if new is None else f'{match["attr"]}"{new}"'

    text = SRC.sub(src, LINK.sub(link, readme.read_text()))
    return text, sorted(set(files))


def _figures_module():
    spec = importlib.util.spec_from_file_location(
        "whetstone_docs_figures", ROOT / "docs" / "figures.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def click_blocks(lines: list[str]) -> list[str]:
    """The indented ``whetstone ...`` lines after ``Example(s):`` as a fenced bash block.

    In the click docstrings they follow a ``\\b`` marker (which mkdocs-click drops);
    as plain Markdown they would run together into one paragraph.

    Example:
        >>> click_blocks(["Example:", "  whetstone demo", "    --epochs 3", "", "Text."])
        ['Example:', '', '```bash', 'whetstone demo', '  --epochs 3', '```', '', 'Text.']
    """
    out, block = [], None
    for line in [*lines, ""]:
        command = block == [] and line.lstrip().startswith("whetstone")
        if (command or block) and line.startswith("  ") and line.strip():
            block.append(line)
            continue
        if block:
            indent = min(len(b) - len(b.lstrip()) for b in block)
            out += ["", "```bash", *(b[indent:] for b in block), "```"] + ([""] if line else [])
        block = [] if re.fullmatch(r"Examples?:", line.strip()) else None
        out.append(line)
    return out[:-1]


def on_config(config):
    from markdown.extensions import Extension
    from markdown.preprocessors import Preprocessor

    class ClickBlocksProcessor(Preprocessor):
        def run(self, lines):
            return click_blocks(lines)

    class ClickBlocks(Extension):
        def extendMarkdown(self, md):  # noqa: N802 (Python-Markdown's name)
            md.preprocessors.register(ClickBlocksProcessor(md), "click_blocks", 140)  # after 141

    config.markdown_extensions.append(ClickBlocks())
    return config


def on_files(files, config):
    from mkdocs.structure.files import File

    for path in _figures_module().generate(GENERATED / "figures"):
        files.append(File.generated(config, f"figures/{path.name}", abs_src_path=str(path)))
    for path in include_benchmarks()[1]:
        uri = f"benchmarks/{path.relative_to(BENCHMARKS.resolve()).as_posix()}"
        files.append(File.generated(config, uri, abs_src_path=str(path)))
    return files


def on_page_markdown(markdown, page, config, files):
    if MARKER not in markdown:
        return markdown
    return markdown.replace(MARKER, include_benchmarks()[0])
