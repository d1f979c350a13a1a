"""A self-contained HTML page to browse a text's attention, per layer and head.

Reviewers open the page from MLflow's artifact view, often offline: so no CDN, no
external URL, only inline CSS and a small vanilla script. Tokens come from user
data and may hold markup: they travel as JSON that cannot close its script tag,
and the script inserts them with ``textContent`` only.
"""

from __future__ import annotations

import html
import json
from collections.abc import Sequence

import numpy as np
from torch import Tensor

from xai_checks.errors import NonFiniteError, XAICheckError

__all__ = [
    "DATA_ELEMENT_ID",
    "attention_html",
    "attention_html_multi",
    "check_attention",
    "check_tokens",
]

DATA_ELEMENT_ID = "attention-data"
"""The ``id`` of the ``<script type="application/json">`` that holds the page's data."""

_DECIMALS = 4
"""Rounding of the embedded weights: 4 decimals keep a 6x12x40x40 page under 1 MB."""

_JSON_ESCAPES = {ord("<"): "\\u003c", ord(">"): "\\u003e", ord("&"): "\\u0026"}


def check_tokens(tokens: Sequence[str]) -> list[str]:
    """The tokens as a list, or an error if they are not a non-empty sequence of strings."""
    if isinstance(tokens, str):
        raise XAICheckError("tokens must be a sequence of strings, not one string")
    tokens = list(tokens)
    if not tokens:
        raise XAICheckError("tokens is empty: there is no attention to show")
    bad = [i for i, token in enumerate(tokens) if not isinstance(token, str)]
    if bad:
        raise XAICheckError(f"tokens must be strings; token {bad[0]} is {tokens[bad[0]]!r}")
    return tokens


def check_values(values: Tensor, name: str) -> np.ndarray:
    """Attention weights as a float64 array, refusing NaN, Inf and negative weights.

    Negative values cannot come out of a softmax: they mean the caller passed
    something else (logits, a difference of maps) that these views would misdraw.
    """
    if not isinstance(values, Tensor):
        raise XAICheckError(f"{name} must be a torch.Tensor, got {type(values).__name__}")
    array = values.detach().cpu().double().numpy()
    if not np.isfinite(array).all():
        raise NonFiniteError(f"{name} holds {int((~np.isfinite(array)).sum())} NaN/Inf values")
    if (array < 0).any():
        raise XAICheckError(f"{name} holds negative weights (min {array.min():.4g}): not attention")
    return array


def _labels(labels: Sequence[int] | None, count: int, name: str) -> list[int]:
    if labels is None:
        return list(range(count))
    labels = list(labels)
    if len(labels) != count:
        raise XAICheckError(f"{len(labels)} {name} labels for {count} {name}s in the weights")
    if not all(isinstance(x, int) and not isinstance(x, bool) for x in labels):
        raise XAICheckError(f"{name} labels must be ints, got {labels!r}")
    if len(set(labels)) != count:
        raise XAICheckError(f"{name} labels repeat: {labels!r}")
    return labels


def check_attention(
    tokens: Sequence[str],
    weights: Tensor,
    *,
    layer_labels: Sequence[int] | None = None,
    head_labels: Sequence[int] | None = None,
) -> tuple[list[str], np.ndarray, list[int], list[int]]:
    """Tokens, ``(L, H, T, T)`` weights as float64, and layer and head labels, all checked."""
    tokens = check_tokens(tokens)
    array = check_values(weights, "weights")
    count = len(tokens)
    if array.ndim != 4 or array.shape[2:] != (count, count):
        raise XAICheckError(
            f"weights must have shape (layers, heads, {count}, {count}) for {count} tokens, "
            f"got {tuple(array.shape)}"
        )
    if 0 in array.shape[:2]:
        raise XAICheckError(f"weights have no layer or no head: shape {tuple(array.shape)}")
    layers = _labels(layer_labels, array.shape[0], "layer")
    heads = _labels(head_labels, array.shape[1], "head")
    return tokens, array, layers, heads


def _json_for_script(data: object) -> str:
    """JSON that is safe between ``<script>`` tags: no ``<``, ``>`` or ``&`` left raw."""
    text = json.dumps(data, ensure_ascii=True, allow_nan=False, separators=(",", ":"))
    return text.translate(_JSON_ESCAPES)


def attention_html(
    tokens: Sequence[str],
    weights: Tensor,
    *,
    layer_labels: Sequence[int] | None = None,
    head_labels: Sequence[int] | None = None,
    title: str = "Attention",
) -> str:
    """One page for one text: pick layer and head, point at a query, see whom it attends."""
    return attention_html_multi(
        [("text", tokens, weights)],
        layer_labels=layer_labels,
        head_labels=head_labels,
        title=title,
    )


def attention_html_multi(
    texts: Sequence[tuple[str, Sequence[str], Tensor]],
    *,
    layer_labels: Sequence[int] | None = None,
    head_labels: Sequence[int] | None = None,
    title: str = "Attention",
) -> str:
    """One page for several texts of one model, ``(label, tokens, weights)`` each.

    The texts must share the number of layers and heads (one model); their token
    counts may differ. A text selector appears when there is more than one text.
    """
    texts = list(texts)
    if not texts:
        raise XAICheckError("no texts to show")
    entries = []
    shape: tuple[int, int] | None = None
    layers: list[int] = []
    heads: list[int] = []
    for index, item in enumerate(texts):
        if not (isinstance(item, tuple | list) and len(item) == 3):
            raise XAICheckError(f"text {index} must be (label, tokens, weights), got {item!r:.80}")
        label, text_tokens, text_weights = item
        try:
            checked, array, layers, heads = check_attention(
                text_tokens, text_weights, layer_labels=layer_labels, head_labels=head_labels
            )
        except XAICheckError as error:
            raise type(error)(f"text {index} ({label!r}): {error}") from error
        if shape is not None and array.shape[:2] != shape:
            raise XAICheckError(
                f"text {index} ({label!r}) has {array.shape[:2]} layers x heads, "
                f"text 0 has {shape}: the texts must come from one model"
            )
        shape = array.shape[:2]
        entries.append(
            {
                "label": str(label),
                "tokens": checked,
                "weights": np.round(array, _DECIMALS).tolist(),
            }
        )
    data = {"layers": layers, "heads": heads, "texts": entries}
    return _page(title, data)


def _options(values: Sequence[tuple[int, str]]) -> str:
    return "".join(
        f'<option value="{value}">{html.escape(text)}</option>' for value, text in values
    )


def _page(title: str, data: dict) -> str:
    texts = data["texts"]
    text_select = ""
    if len(texts) > 1:
        choices = _options([(i, entry["label"]) for i, entry in enumerate(texts)])
        text_select = f'<label>text <select id="text-select">{choices}</select></label>'
    layer_choices = _options([(i, f"L{label}") for i, label in enumerate(data["layers"])])
    head_choices = _options(
        [(-1, "average of heads")] + [(i, f"H{label}") for i, label in enumerate(data["heads"])]
    )
    return _TEMPLATE.format(
        title=html.escape(title),
        text_select=text_select,
        layer_choices=layer_choices,
        head_choices=head_choices,
        data_id=DATA_ELEMENT_ID,
        data=_json_for_script(data),
        script=_SCRIPT,
    )


_SCRIPT = """
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("__DATA_ID__").textContent);
  var textSelect = document.getElementById("text-select");
  var layerSelect = document.getElementById("layer-select");
  var headSelect = document.getElementById("head-select");
  var box = document.getElementById("tokens");
  var info = document.getElementById("info");
  var spans = [];
  var query = 0;
  var pinned = false;

  function current() {
    return data.texts[textSelect ? Number(textSelect.value) : 0];
  }

  // The query's attention over the keys; head -1 averages the layer's heads.
  function row(text, layer, head, q) {
    var heads = text.weights[layer];
    if (head >= 0) {
      return heads[head][q];
    }
    var out = new Array(text.tokens.length).fill(0);
    for (var h = 0; h < heads.length; h++) {
      for (var k = 0; k < out.length; k++) {
        out[k] += heads[h][q][k] / heads.length;
      }
    }
    return out;
  }

  function paint() {
    var text = current();
    var layer = Number(layerSelect.value);
    var head = Number(headSelect.value);
    var weights = row(text, layer, head, query);
    var top = Math.max.apply(null, weights);
    for (var k = 0; k < spans.length; k++) {
      var alpha = top > 0 ? weights[k] / top : 0;
      spans[k].style.backgroundColor = "rgba(255, 140, 0, " + alpha.toFixed(3) + ")";
      spans[k].title = "weight " + weights[k].toFixed(4);
      spans[k].className = k === query ? "tok query" : "tok";
    }
    info.textContent = "query #" + query + " " + JSON.stringify(text.tokens[query]) +
      " | layer L" + data.layers[layer] +
      (head >= 0 ? ", head H" + data.heads[head] : ", average of heads") +
      " | max weight " + top.toFixed(4) + (pinned ? " | pinned (click to release)" : "");
  }

  function choose(k, pin) {
    return function () {
      if (pin) {
        pinned = !(pinned && query === k);
      } else if (pinned) {
        return;
      }
      query = k;
      paint();
    };
  }

  function build() {
    var text = current();
    spans = text.tokens.map(function (token, k) {
      var span = document.createElement("span");
      span.className = "tok";
      span.textContent = token;
      span.addEventListener("mouseover", choose(k, false));
      span.addEventListener("click", choose(k, true));
      return span;
    });
    box.replaceChildren.apply(box, spans);
    query = 0;
    pinned = false;
    paint();
  }

  if (textSelect) {
    textSelect.addEventListener("change", build);
  }
  layerSelect.addEventListener("change", paint);
  headSelect.addEventListener("change", paint);
  build();
})();
""".replace("__DATA_ID__", DATA_ELEMENT_ID)

_TEMPLATE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }}
.controls label {{ margin-right: 1em; }}
#tokens {{ margin: 1em 0; line-height: 2.2; font-family: ui-monospace, monospace; }}
.tok {{ padding: 0.15em 0.3em; margin: 0 0.1em; border: 1px solid #ddd; border-radius: 3px;
  white-space: pre; cursor: pointer; display: inline-block; min-width: 0.6em; }}
.tok.query {{ outline: 2px solid #1f4e9c; }}
#info {{ color: #555; font-size: 0.9em; }}
</style>
</head>
<body>
<h1>{title}</h1>
<p>Point at a token to make it the query (click to pin it): every token is shaded by the
attention it receives from the query, relative to the largest weight of that row.</p>
<div class="controls">
{text_select}
<label>layer <select id="layer-select">{layer_choices}</select></label>
<label>head <select id="head-select">{head_choices}</select></label>
</div>
<div id="tokens"></div>
<div id="info"></div>
<script type="application/json" id="{data_id}">{data}</script>
<script>{script}</script>
</body>
</html>
"""
