"""One tokenisation for every text path, so attention, saliency and predictions line up.

Right padding always (the audit pairs token positions across paths), never
beyond the model's position embeddings (a longer text would crash the
model), and a fast tokenizer (word ids and character offsets come from it).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import nn

from xai_checks.errors import XAICheckError

__all__ = ["encode_texts", "token_limit"]


def token_limit(model: nn.Module | None, max_length: int) -> int:
    """``max_length``, capped at the model's ``max_position_embeddings`` when it has one."""
    config = getattr(model, "config", None)
    positions = getattr(config, "max_position_embeddings", None)
    return (
        min(max_length, positions) if isinstance(positions, int) and positions > 0 else max_length
    )


def encode_texts(
    tokenizer: Any,
    texts: Sequence[str],
    *,
    model: nn.Module | None = None,
    max_length: int = 256,
    offsets: bool = False,
) -> Any:
    """Right-padded, truncated ``BatchEncoding`` of ``texts`` as torch tensors."""
    if not getattr(tokenizer, "is_fast", False):
        raise XAICheckError(
            f"{type(tokenizer).__name__} is a slow tokenizer; word-level scores need a fast one "
            "(AutoTokenizer.from_pretrained(..., use_fast=True))"
        )
    if tokenizer.pad_token is None:
        raise XAICheckError(
            f"{type(tokenizer).__name__} has no pad token, so texts cannot be batched; set one, "
            "e.g. tokenizer.pad_token = tokenizer.eos_token"
        )
    return tokenizer(
        list(texts),
        padding=True,
        truncation=True,
        max_length=token_limit(model, max_length),
        padding_side="right",
        return_tensors="pt",
        return_offsets_mapping=offsets,
    )
