"""Griffe extension (loaded by mkdocstrings, see ``mkdocs.yml``): ``Example:`` sections.

whetstone's docstrings head their doctests ``Example:``; griffe's Google parser knows
only ``Examples:`` as a section (it reads ``Example:`` as an admonition and renders the
doctest as Markdown). This renames the heading before the docstring is parsed, so the
doctests render as code.
"""

from __future__ import annotations

import re

import griffe

HEADING = re.compile(r"^(\s*)Example:\s*$", re.M)


class ExampleSections(griffe.Extension):
    """Rename ``Example:`` section headings to ``Examples:`` in every docstring."""

    def on_instance(self, *, obj: griffe.Object, **kwargs) -> None:
        if obj.docstring is not None:
            obj.docstring.value = HEADING.sub(r"\1Examples:", obj.docstring.value)
