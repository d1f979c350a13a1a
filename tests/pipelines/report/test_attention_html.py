"""The attention page: self-contained, injection-safe, its data intact, its script working."""

from __future__ import annotations

import json
import re

import pytest
import torch

from pipelines.report.attention_html import DATA_ELEMENT_ID, attention_html, attention_html_multi
from xai_checks.errors import NonFiniteError, XAICheckError

EVIL = "<script>alert(1)</script>"
TOKENS = ["[CLS]", EVIL, '"quotes"', "&amp;", "naïve", "</script>", "[SEP]"]


def _attention(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)).mul(2).softmax(-1)


def _data_json(page: str) -> str:
    match = re.search(
        rf'<script type="application/json" id="{DATA_ELEMENT_ID}">(.*?)</script>', page, re.S
    )
    assert match, "no embedded data"
    return match.group(1)


def _inline_script(page: str) -> str:
    scripts = re.findall(r"<script>(.*?)</script>", page, re.S)
    assert len(scripts) == 1
    return scripts[0]


@pytest.fixture(scope="module")
def weights() -> torch.Tensor:
    return _attention(2, 3, len(TOKENS), len(TOKENS))


@pytest.fixture(scope="module")
def page(weights) -> str:
    return attention_html(TOKENS, weights, layer_labels=[6, 7], title="Attention <b>&</b>")


def test_page_is_self_contained(page):
    lowered = page.lower()
    for needle in ("http://", "https://", "src=", "<link", "@import", "url("):
        assert needle not in lowered
    assert page.startswith("<!DOCTYPE html>")
    assert page.count("<script") == 2  # the data and the inline script, nothing loaded


def test_tokens_and_title_appear_only_escaped(page):
    assert EVIL not in page
    assert "\\u003cscript\\u003ealert(1)\\u003c/script\\u003e" in page
    assert "\\u003c/script\\u003e" in page  # the token "</script>" cannot end the data block
    assert '"quotes"' not in page and '\\"quotes\\"' in page
    assert "&amp;" not in _data_json(page) and "\\u0026amp;" in page
    assert "<b>" not in page and "Attention &lt;b&gt;&amp;&lt;/b&gt;" in page
    assert "innerHTML" not in page and "textContent = token" in page


def test_embedded_json_parses_back_to_tokens_and_rounded_weights(page, weights):
    data = json.loads(_data_json(page))
    assert data["layers"] == [6, 7]
    assert data["heads"] == [0, 1, 2]
    [text] = data["texts"]
    assert text["tokens"] == TOKENS
    embedded = torch.tensor(text["weights"], dtype=torch.float64)
    assert embedded.shape == weights.shape
    assert torch.allclose(embedded, weights.double(), atol=5e-5 + 1e-12, rtol=0)
    assert all(v == round(v, 4) for v in embedded.flatten().tolist())


def test_layer_and_head_selectors(page):
    assert '<select id="layer-select"><option value="0">L6</option><option value="1">L7' in page
    assert '<option value="-1">average of heads</option>' in page
    assert all(f'<option value="{h}">H{h}</option>' in page for h in range(3))
    assert 'id="text-select"' not in page  # one text: no text selector


def test_a_bert_sized_page_stays_under_one_megabyte():
    tokens = [f"tok{i}" for i in range(40)]
    page = attention_html(tokens, torch.rand(6, 12, 40, 40))  # 4 significant decimals each
    assert len(page.encode("utf-8")) < 1_000_000


def test_multi_page_has_a_text_selector_and_every_text():
    texts = [
        ("sample <1>", ["a", "b", "c"], _attention(2, 2, 3, 3)),
        ("sample 2", ["d", "e"], _attention(2, 2, 2, 2, seed=1)),
    ]
    page = attention_html_multi(texts)
    assert '<option value="0">sample &lt;1&gt;</option>' in page
    data = json.loads(_data_json(page))
    assert [t["tokens"] for t in data["texts"]] == [["a", "b", "c"], ["d", "e"]]
    assert [t["label"] for t in data["texts"]] == ["sample <1>", "sample 2"]


@pytest.mark.parametrize(
    ("tokens", "weights", "message"),
    [
        (["a", "b"], _attention(1, 1, 3, 3), r"\(layers, heads, 2, 2\) for 2 tokens"),
        (["a", "b"], _attention(2, 2, 2), r"got \(2, 2, 2\)"),
        (["a", "b"], -_attention(1, 1, 2, 2), "negative"),
        ([], torch.zeros(1, 1, 0, 0), "empty"),
    ],
)
def test_bad_input_is_refused(tokens, weights, message):
    with pytest.raises(XAICheckError, match=message):
        attention_html(tokens, weights)


def test_nan_and_label_mismatch_are_refused():
    weights = _attention(1, 2, 2, 2)
    weights[0, 1, 0, 0] = float("nan")
    with pytest.raises(NonFiniteError, match="NaN"):
        attention_html(["a", "b"], weights)
    with pytest.raises(XAICheckError, match="3 head labels for 2 heads"):
        attention_html(["a", "b"], _attention(1, 2, 2, 2), head_labels=[0, 1, 2])


def test_multi_refuses_texts_of_different_models():
    texts = [("x", ["a"], _attention(2, 2, 1, 1)), ("y", ["b"], _attention(3, 2, 1, 1))]
    with pytest.raises(XAICheckError, match=r"text 1 \('y'\).*one model"):
        attention_html_multi(texts)
    with pytest.raises(XAICheckError, match=r"text 0 \('x'\): 1 head labels for 2 heads"):
        attention_html_multi(texts[:1], head_labels=[5])
    with pytest.raises(XAICheckError, match="no texts"):
        attention_html_multi([])


def _alphas(spans) -> list[float]:
    """Each token's shade as the browser computed it: rgb() when fully opaque, else rgba()."""
    alphas = []
    for span in spans:
        colour = span.evaluate("el => el.style.backgroundColor")
        channels = re.fullmatch(r"rgba?\((.*)\)", colour).group(1).split(",")
        alphas.append(float(channels[3]) if len(channels) == 4 else 1.0)
    return alphas


@pytest.mark.slow
def test_inline_script_shades_tokens_by_attention(page, weights, chromium):
    """The page in real headless Chromium: one span per token, shaded by weight / row max."""
    rounded = torch.tensor(json.loads(_data_json(page))["texts"][0]["weights"])
    tab = chromium.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda error: errors.append(str(error)))
    tab.set_content(page)
    spans = tab.query_selector_all("#tokens span")
    texts = [span.text_content() for span in spans]
    average = _alphas(spans)
    info_average = tab.text_content("#info")
    spans[2].click()
    tab.select_option("#layer-select", "1")
    tab.select_option("#head-select", "2")
    pinned = _alphas(spans)
    classes = [span.get_attribute("class") for span in spans]
    spans[0].hover()
    after_hover = _alphas(spans)
    info_pinned = tab.text_content("#info")
    escaped = tab.evaluate("document.querySelectorAll('#tokens script').length")

    def expected(row: torch.Tensor) -> list[float]:
        return (row / row.max()).tolist()

    # The script writes 3 decimals; Chromium keeps alpha in 8 bits and prints the shortest
    # decimal that maps to the same byte (0.703 -> byte 179 -> "0.7"): one byte apart at most.
    shade = 0.0005 + 1 / 255
    assert errors == []
    assert texts == TOKENS  # via textContent, unescaped, never parsed as markup
    assert escaped == 0
    assert average == pytest.approx(expected(rounded[0].mean(0)[0]), abs=shade)  # L6, mean, q0
    assert pinned == pytest.approx(expected(rounded[1, 2, 2]), abs=shade)
    assert classes[2] == "tok query"
    assert after_hover == pinned  # a click pins the query against hovering
    assert "average of heads" in info_average
    assert "layer L7, head H2" in info_pinned and "pinned" in info_pinned
