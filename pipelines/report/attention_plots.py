"""Review figures of transformer attention: token maps, layer x head grids, one query's bars.

Like :mod:`pipelines.report.plots`, every function returns a ``Figure`` that the caller
closes (``plt.close(fig)``) after saving or logging it.
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from torch import Tensor

from pipelines.report.attention_html import check_attention, check_tokens, check_values
from pipelines.report.titles import fit_title
from xai_checks.errors import XAICheckError

__all__ = ["attention_grid", "attention_map", "query_bars", "saliency_bars"]

_CMAP = "viridis"  # perceptually uniform: equal steps of weight look like equal steps
_TOP = 3
_GRID_MAX_SIZE = (16.0, 10.0)  # inches; a 6 x 12 grid stays printable and loggable


def _font_size(count: int) -> float:
    """Tick label size that keeps ~40 tokens legible without overlapping."""
    return float(np.clip(320.0 / max(count, 1), 6.0, 10.0))


def _token_ticks(ax: Axes, axis: str, tokens: list[str], size: float) -> None:
    """Tokens as tick labels, verbatim: ``$`` in a token must not start mathtext."""
    positions = range(len(tokens))
    if axis == "x":
        ax.set_xticks(positions, tokens, rotation=90, fontsize=size, parse_math=False)
    else:
        ax.set_yticks(positions, tokens, fontsize=size, parse_math=False)


def _vmax(array: np.ndarray) -> float:
    top = float(array.max())
    return top if top > 0 else 1.0


def attention_map(tokens: Sequence[str], matrix: Tensor, *, title: str = "") -> Figure:
    """One layer and head as a token x token heatmap: rows are queries, columns keys."""
    tokens = check_tokens(tokens)
    array = check_values(matrix, "matrix")
    count = len(tokens)
    if array.shape != (count, count):
        raise XAICheckError(
            f"matrix must be ({count}, {count}) for {count} tokens, got {tuple(array.shape)}"
        )
    side = float(np.clip(2.5 + 0.2 * count, 4.0, 11.0))
    fig, ax = plt.subplots(figsize=(side + 1.2, side), layout="constrained")
    image = ax.imshow(array, cmap=_CMAP, vmin=0.0, vmax=_vmax(array), interpolation="nearest")
    size = _font_size(count)
    _token_ticks(ax, "x", tokens, size)
    _token_ticks(ax, "y", tokens, size)
    ax.set_xlabel("key")
    ax.set_ylabel("query")
    fig.colorbar(image, ax=ax, shrink=0.8, label="attention")
    if title:
        ax.set_title(fit_title(title), fontsize=10)
    return fig


def attention_grid(
    tokens: Sequence[str],
    weights: Tensor,
    *,
    layer_labels: Sequence[int] | None = None,
    head_labels: Sequence[int] | None = None,
    title: str = "",
) -> Figure:
    """Every layer (rows) and head (columns) as a small map on one shared color scale.

    The shared scale makes heads comparable at a glance; tokens are left off the
    small maps (use :func:`attention_map` for one head in detail).
    """
    _, array, layers, heads = check_attention(
        tokens, weights, layer_labels=layer_labels, head_labels=head_labels
    )
    rows, columns = array.shape[:2]
    width = min(1.3 * columns + 1.2, _GRID_MAX_SIZE[0])
    height = min(1.3 * rows + (0.6 if title else 0.3), _GRID_MAX_SIZE[1])
    fig, axes = plt.subplots(
        rows, columns, figsize=(width, height), squeeze=False, layout="constrained"
    )
    vmax = _vmax(array)
    image = None
    for i, layer in enumerate(layers):
        for j, head in enumerate(heads):
            ax = axes[i, j]
            image = ax.imshow(array[i, j], cmap=_CMAP, vmin=0.0, vmax=vmax, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(f"H{head}", fontsize=8)
            if j == 0:
                ax.set_ylabel(f"L{layer}", fontsize=8)
    fig.colorbar(image, ax=axes, shrink=0.6, label="attention")
    if title:
        fig.suptitle(fit_title(title), fontsize=10)
    return fig


def query_bars(
    tokens: Sequence[str], weights_row: Tensor, *, query: str, title: str = ""
) -> Figure:
    """One query's attention over the keys (from CLS, from a pronoun), top 3 highlighted."""
    tokens = check_tokens(tokens)
    array = check_values(weights_row, "weights_row")
    count = len(tokens)
    if array.shape != (count,):
        raise XAICheckError(
            f"weights_row must be ({count},) for {count} tokens, got {tuple(array.shape)}"
        )
    top = set(np.argsort(-array, kind="stable")[: min(_TOP, count)].tolist())
    colors = ["tab:orange" if k in top else "tab:gray" for k in range(count)]
    width = float(np.clip(2.0 + 0.25 * count, 5.0, 12.0))
    fig, ax = plt.subplots(figsize=(width, 3.6), layout="constrained")
    ax.bar(range(count), array, color=colors)
    _token_ticks(ax, "x", tokens, _font_size(count))
    ax.set_ylim(0.0, _vmax(array) * 1.1)
    ax.set_ylabel("attention")
    ax.set_xlabel("key")
    heading = f"attention from {query!r} (top {len(top)} highlighted)"
    ax.set_title(
        f"{fit_title(title)}\n{heading}" if title else heading, fontsize=10, parse_math=False
    )
    return fig


def saliency_bars(
    tokens: Sequence[str], scores: Tensor, spurious: Sequence[bool], *, title: str = ""
) -> Figure:
    """Gradient x input saliency per token, the known spurious tokens in red.

    The reader sees at once whether the tokens the model depends on most are
    the ones it should not depend on at all.
    """
    tokens = check_tokens(tokens)
    array = check_values(scores, "scores")
    count = len(tokens)
    if array.shape != (count,) or len(spurious) != count:
        raise XAICheckError(
            f"scores and spurious must hold one value per token ({count}), got "
            f"{tuple(array.shape)} and {len(spurious)}"
        )
    colors = ["tab:red" if flag else "tab:gray" for flag in spurious]
    width = float(np.clip(2.0 + 0.25 * count, 5.0, 12.0))
    fig, ax = plt.subplots(figsize=(width, 3.6), layout="constrained")
    ax.bar(range(count), array, color=colors)
    _token_ticks(ax, "x", tokens, _font_size(count))
    ax.set_ylim(0.0, _vmax(array) * 1.1)
    ax.set_ylabel("|gradient x embedding|")
    heading = "token saliency (red: known spurious tokens)"
    ax.set_title(
        f"{fit_title(title)}\n{heading}" if title else heading, fontsize=10, parse_math=False
    )
    return fig
