"""Attention figures: right axes, tokens as ticks, the data drawn as given, clear errors."""

from __future__ import annotations

import io

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch

from pipelines.report.attention_plots import attention_grid, attention_map, query_bars
from xai_checks.errors import NonFiniteError, XAICheckError

TOKENS = ["[CLS]", "the", "$5", "trophy", "didn", "'t", "fit", "in", "it", ".", "[SEP]", "x"]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _attention(*shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(0)).softmax(-1)


@pytest.fixture
def figures():
    opened = []
    yield opened.append
    for fig in opened:
        plt.close(fig)


def _png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=40)
    return buffer.getvalue()


def _labels(ticks) -> list[str]:
    return [label.get_text() for label in ticks]


def test_attention_map_draws_the_matrix_with_tokens_as_ticks(figures):
    matrix = _attention(12, 12)
    fig = attention_map(TOKENS, matrix, title="L3 H7")
    figures(fig)
    ax = fig.axes[0]
    assert len(fig.axes) == 2  # the map and its colorbar
    assert len(ax.images) == 1
    np.testing.assert_allclose(np.asarray(ax.images[0].get_array()), matrix.numpy(), rtol=1e-6)
    assert _labels(ax.get_xticklabels()) == TOKENS
    assert _labels(ax.get_yticklabels()) == TOKENS
    assert ax.images[0].get_cmap().name == "viridis"
    assert _png(fig).startswith(PNG_MAGIC)


def test_attention_map_font_shrinks_for_long_texts(figures):
    short = attention_map(TOKENS, _attention(12, 12))
    tokens = [f"tok{i}" for i in range(40)]
    long = attention_map(tokens, _attention(40, 40))
    figures(short)
    figures(long)
    size = lambda fig: fig.axes[0].get_xticklabels()[0].get_fontsize()  # noqa: E731
    assert size(long) < size(short)
    assert _png(long).startswith(PNG_MAGIC)


@pytest.mark.parametrize(
    ("tokens", "matrix", "message"),
    [
        (TOKENS[:5], _attention(12, 12), r"\(5, 5\) for 5 tokens"),
        (TOKENS, _attention(12, 11), r"got \(12, 11\)"),
        (TOKENS, _attention(1, 12, 12), r"got \(1, 12, 12\)"),
        ([], torch.zeros(0, 0), "empty"),
        ("the text", _attention(8, 8), "not one string"),
        ([*TOKENS[:11], 7], _attention(12, 12), "token 11"),
        (TOKENS, -_attention(12, 12), "negative"),
        (TOKENS, np.ones((12, 12)), "torch.Tensor"),
    ],
)
def test_attention_map_refuses_bad_input(tokens, matrix, message):
    with pytest.raises(XAICheckError, match=message):
        attention_map(tokens, matrix)


def test_attention_map_refuses_nan():
    matrix = _attention(12, 12)
    matrix[3, 4] = float("nan")
    with pytest.raises(NonFiniteError, match="1 NaN/Inf"):
        attention_map(TOKENS, matrix)


def test_attention_grid_has_one_map_per_layer_and_head(figures):
    weights = _attention(2, 3, 12, 12)
    fig = attention_grid(TOKENS, weights, layer_labels=[4, 5], head_labels=[0, 2, 9], title="g")
    figures(fig)
    maps = [ax for ax in fig.axes if ax.images]
    assert len(maps) == 6
    assert len(fig.axes) == 7  # plus one shared colorbar
    np.testing.assert_allclose(np.asarray(maps[0].images[0].get_array()), weights[0, 0].numpy())
    np.testing.assert_allclose(np.asarray(maps[5].images[0].get_array()), weights[1, 2].numpy())
    assert [ax.get_title() for ax in maps[:3]] == ["H0", "H2", "H9"]
    assert [maps[0].get_ylabel(), maps[3].get_ylabel()] == ["L4", "L5"]
    assert all(not ax.get_xticks().size and not ax.get_yticks().size for ax in maps)
    limits = {ax.images[0].get_clim() for ax in maps}
    assert limits == {(0.0, float(weights.max()))}  # one color scale for the whole figure
    assert _png(fig).startswith(PNG_MAGIC)


def test_attention_grid_stays_bounded_for_6_by_12(figures):
    fig = attention_grid([f"t{i}" for i in range(20)], _attention(6, 12, 20, 20))
    figures(fig)
    width, height = fig.get_size_inches()
    assert width <= 16 and height <= 10
    assert [ax.get_ylabel() for ax in fig.axes[:72:12]] == [f"L{i}" for i in range(6)]


@pytest.mark.parametrize(
    ("weights", "labels", "message"),
    [
        (_attention(2, 3, 12, 11), {}, r"\(layers, heads, 12, 12\)"),
        (_attention(3, 12, 12), {}, r"got \(3, 12, 12\)"),
        (_attention(0, 3, 12, 12), {}, "no layer or no head"),
        (_attention(2, 3, 12, 12), {"layer_labels": [0, 1, 2]}, "3 layer labels for 2 layers"),
        (_attention(2, 3, 12, 12), {"head_labels": [0, 1]}, "2 head labels for 3 heads"),
        (_attention(2, 3, 12, 12), {"head_labels": [0, 0, 1]}, "repeat"),
        (_attention(2, 3, 12, 12), {"layer_labels": ["a", "b"]}, "must be ints"),
    ],
)
def test_attention_grid_refuses_bad_input(weights, labels, message):
    with pytest.raises(XAICheckError, match=message):
        attention_grid(TOKENS, weights, **labels)


def test_query_bars_highlights_the_top_three(figures):
    row = _attention(12)
    fig = query_bars(TOKENS, row, query="[CLS]", title="from CLS")
    figures(fig)
    ax = fig.axes[0]
    assert len(fig.axes) == 1
    bars = ax.patches
    np.testing.assert_allclose([bar.get_height() for bar in bars], row.numpy(), rtol=1e-6)
    assert _labels(ax.get_xticklabels()) == TOKENS
    colors = [bar.get_facecolor() for bar in bars]
    top = set(torch.topk(row, 3).indices.tolist())
    assert {i for i, c in enumerate(colors) if c != colors[min(set(range(12)) - top)]} == top
    assert "'[CLS]'" in ax.get_title()
    assert _png(fig).startswith(PNG_MAGIC)


def test_query_bars_refuses_a_row_of_the_wrong_length():
    with pytest.raises(XAICheckError, match=r"\(12,\) for 12 tokens, got \(12, 12\)"):
        query_bars(TOKENS, _attention(12, 12), query="it")
    with pytest.raises(NonFiniteError):
        query_bars(TOKENS, torch.full((12,), float("inf")), query="it")
