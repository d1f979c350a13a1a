"""Data as literal markdown: what a run, a file or a reviewer wrote can never become a link,
an image, a heading or raw HTML where it is shown (Prefect, MLflow descriptions)."""

from __future__ import annotations

import html
import re
from urllib.parse import quote

__all__ = ["code_span", "link_target", "markdown_text"]

# Backslash-escapable in CommonMark and meaningful anywhere in a line: emphasis, links
# and images, code, headings' closing ``#``, tables, strikethrough. ``<``, ``>`` and ``&``
# become entities instead (a backslash before ``&gt;`` would show the entity's text).
_MARKDOWN_SPECIAL = re.compile(r"([\\`*_\[\](){}#!|~])")
# Meaningful only where a line starts (a list item or thematic break); newlines are
# collapsed, so that is only the start of the text, and "sweep-model" stays as it is.
_LINE_START = re.compile(r"^(\s*)([-+]|\d+\.)")
_NEWLINES = re.compile(r"[\r\n]+")


def markdown_text(text: str) -> str:
    """``text`` as literal inline markdown: no link, image, emphasis, heading or raw HTML.

    Markdown control characters are backslash-escaped, ``<``, ``>`` and ``&``
    become HTML entities, and line breaks become spaces, so a data string
    (a file name, label, reviewer note) cannot start a new block either.
    """
    escaped = _MARKDOWN_SPECIAL.sub(r"\\\1", _NEWLINES.sub(" ", text))
    escaped = _LINE_START.sub(lambda m: f"{m[1]}{m[2][:-1]}\\{m[2][-1]}", escaped)
    return html.escape(escaped, quote=False)


def code_span(text: str) -> str:
    """``text`` as one inline code span, whatever backticks it holds.

    Nothing inside a code span is markdown or HTML, and backslashes there are
    literal, so the fence is made longer than any run of backticks in ``text``.
    """
    text = _NEWLINES.sub(" ", text)
    if not text:
        return "` `"
    fence = "`" * (max((len(run) for run in re.findall(r"`+", text)), default=0) + 1)
    pad = " " if text[0] in "` " or text[-1] in "` " else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def link_target(url: str) -> str:
    """A URL safe as a markdown link destination: parentheses, spaces, ``<>`` encoded."""
    return quote(url, safe=":/?#[]@!$&'*+,;=%-._~")
