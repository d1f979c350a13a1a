"""Figure titles from data (a sentence, a model name): one line, bounded.

Why: ``savefig(bbox_inches="tight")`` grows the canvas to fit the title, so a
long sentence as a title made a 616-megapixel PNG.
"""

from __future__ import annotations

__all__ = ["MAX_TITLE", "fit_title"]

MAX_TITLE = 100
"""Characters a figure title keeps; longer ones end in an ellipsis."""


def fit_title(text: str, limit: int = MAX_TITLE) -> str:
    """``text`` on one line, cut to ``limit`` characters with an ellipsis when longer."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 1].rstrip() + "…"
