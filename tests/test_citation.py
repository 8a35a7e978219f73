"""CITATION.cff cites the method's paper and this version; the docs link to it."""

import re
from pathlib import Path

import whetstone

ROOT = Path(__file__).resolve().parents[1]


def test_citation_file_names_this_version_and_the_paper():
    text = (ROOT / "CITATION.cff").read_text()
    assert re.search(r"^cff-version: 1\.2\.0$", text, re.M)
    assert re.search(r"^version: (.+)$", text, re.M).group(1) == whetstone.__version__
    assert "doi: 10.1038/s42256-018-0015-y" in text
    assert "journal: Nature Machine Intelligence" in text


def test_citation_page_is_in_the_docs():
    assert "citation.md" in (ROOT / "mkdocs.yml").read_text()
    page = (ROOT / "docs" / "citation.md").read_text()
    assert "10.1038/s42256-018-0015-y" in page
    assert f"version = {{{whetstone.__version__}}}" in page
