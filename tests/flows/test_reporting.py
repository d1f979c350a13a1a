"""The verdict artifact's markdown: data strings stay text, the code's own links stay links."""

from __future__ import annotations

import html
import re

import pytest
from markdown_it import MarkdownIt

from flows.reporting import summary_markdown
from pipelines.report.markdown import code_span, markdown_text
from pipelines.verdict.decision import GateDecision, Verdict

HOSTILE = "x](http://evil) ![img](http://evil/x.png) <img src=x onerror=alert(1)>"


def _render(markdown: str) -> str:
    return MarkdownIt("commonmark").enable(["table", "strikethrough"]).render(markdown)


def _summary(**overrides) -> str:
    args = {
        "model": "m",
        "version": "3",
        "decision": GateDecision(Verdict.BLOCKED, [HOSTILE]),
        "run_id": "abc123",
        "promoted": False,
        "alias": "champion",
        "tracking": "http://mlflow:5000/",
        "experiment_id": "7",
    }
    return summary_markdown(**(args | overrides))


def test_markdown_text_escapes_links_images_html_and_control_characters():
    out = markdown_text(HOSTILE + " *a* _b_ `c` # h | t ~~s~~ \\ & a>b [x]")
    assert "<" not in out and ">" not in out
    assert "](" not in out and "![" not in out
    assert "&lt;img src=x onerror=alert\\(1\\)&gt;" in out
    assert "\\*a\\* \\_b\\_ \\`c\\` \\# h \\| t \\~\\~s\\~\\~ \\\\ &amp; a&gt;b \\[x\\]" in out
    assert re.search(r"(?<!\\)[\[\]()*_`#|~!]", out) is None  # every control char escaped


def test_markdown_text_keeps_data_on_one_line():
    one_line = markdown_text("note\n# heading\r\n- item")
    assert one_line == "note \\# heading - item"
    assert _render(f"- {one_line}") == "<ul>\n<li>note # heading - item</li>\n</ul>\n"
    assert markdown_text("12. item") == "12\\. item"
    assert markdown_text("v1.2 file.csv") == "v1.2 file.csv"
    assert markdown_text("- a") == "\\- a" and markdown_text("+ b") == "\\+ b"
    assert markdown_text("sweep-model a+b") == "sweep-model a+b"  # mid-line: plain text


@pytest.mark.parametrize(
    "text",
    [
        HOSTILE,
        "*a* _b_ `c` # h | ~~s~~ \\ & &lt; a>b",
        "plain file.csv",
        "1. [x]",
        "- item",
        "+ item",
        "---",
        "# h #",
        "sweep-model",
    ],
)
def test_markdown_text_renders_back_to_the_literal_text(text):
    rendered = _render(f"- {markdown_text(text)}")
    assert "<a " not in rendered and "<img" not in rendered and "<em>" not in rendered
    assert rendered == f"<ul>\n<li>{html.escape(text, quote=False)}</li>\n</ul>\n"


@pytest.mark.parametrize(
    ("text", "span"),
    [
        ("champion", "`champion`"),
        ("a`b", "``a`b``"),
        ("`x", "`` `x ``"),
        ("```", "```` ``` ````"),
        ("", "` `"),
        ("two\nlines", "`two lines`"),
    ],
)
def test_code_span_fences_past_any_backticks(text, span):
    assert code_span(text) == span


def test_code_span_renders_markup_as_text():
    rendered = _render(code_span("<img src=x> [a](b) `"))
    assert rendered == "<p><code>&lt;img src=x&gt; [a](b) `</code></p>\n"


def test_summary_escapes_a_hostile_reason_and_keeps_its_own_links():
    md = _summary(
        model="m ![x](http://evil/m.png)",
        alias="champ` <img src=x>",
        promoted=True,
        version="3 <b>",
    )
    assert "<b>" not in md and "<img" not in md.replace("``champ` <img src=x>``", "")
    assert "\\]\\(http://evil\\) \\!\\[img\\]\\(http://evil/x.png\\)" in md
    base = "http://mlflow:5000/#/experiments/7/runs/abc123"
    # the only "](" left are the three links the code builds itself
    assert md.count("](") == 3
    assert (
        f"[the MLflow run]({base}), [its report]({base}/artifacts/xai/report.html) and "
        f"[its artifacts]({base}/artifacts)"
    ) in md
    assert md.startswith("# m \\!\\[x\\]\\(http://evil/m.png\\) v3 &lt;b&gt;: **blocked**\n")
    assert "Alias: ``champ` <img src=x>`` now points to v3 &lt;b&gt;." in md
    rendered = _render(md)
    assert "<img" not in rendered and "<b>" not in rendered
    assert re.findall(r'<a href="([^"]*)"', rendered) == [
        base,
        f"{base}/artifacts/xai/report.html",
        f"{base}/artifacts",
    ]


def test_summary_without_an_http_server_has_no_links_at_all():
    md = _summary(tracking="file:///tmp/ml(runs)", experiment_id=None, run_id="r`1")
    assert "](" not in md and "<img" not in md
    assert "run ``r`1``" in md and "(tracking `file:///tmp/ml(runs)`)" in md
    assert "- all checks passed" in _summary(decision=GateDecision(Verdict.PASSED, []))


def test_a_tracking_uri_cannot_break_out_of_the_link():
    md = _summary(tracking="http://h/x) [evil](http://evil", run_id="r <x>")
    rendered = _render(md)
    assert re.findall(r'<a href="([^"]*)"', rendered) == [
        "http://h/x%29%20%5Bevil%5D%28http://evil/#/experiments/7/runs/r%20%3Cx%3E",
        "http://h/x%29%20%5Bevil%5D%28http://evil/#/experiments/7/runs/r%20%3Cx%3E/artifacts/xai/report.html",
        "http://h/x%29%20%5Bevil%5D%28http://evil/#/experiments/7/runs/r%20%3Cx%3E/artifacts",
    ]
    assert "(tracking <code>http://h/x) [evil](http://evil</code>)" in rendered  # as text
    assert "<x>" not in rendered
