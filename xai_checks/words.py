"""Word pieces grouped into the words a reviewer reads.

Tokenizers split words into pieces ("unbelievably" -> "un", "##bel", ...), so
token-level attention and saliency are hard to read and say little per word.
These helpers recover each word's span in the text and turn (T, T) token
attention into (U, U) attention between units: words, plus each special token
on its own.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Protocol

import torch
from torch import Tensor

from xai_checks.errors import XAICheckError

__all__ = [
    "TokenMaps",
    "to_words",
    "units_of_tokens",
    "word_level",
    "word_spans",
    "word_units",
]


class TokenMaps(Protocol):
    """What :func:`word_level` reads: ``xai_checks.attention.AttentionMaps`` is one.

    Structural, so this module needs nothing from the extraction module that uses it.
    """

    tokens: list[list[str]]
    word_ids: list[list[int | None]]
    words: list[list[str]]
    weights: Tensor
    """(N, L, H, T, T) attention of every text, padded to the longest."""

    def __len__(self) -> int: ...


def word_spans(
    word_ids: Sequence[int | None], offsets: Iterable[Sequence[int]]
) -> dict[int, tuple[int, int]]:
    """Each word id's character span, from the start of its first piece to the end of its last.

    ``offsets`` are the tokenizer's (start, end) per token (lists or a tensor);
    special tokens (word id None) have no word. Words are in order of first
    appearance.
    """
    spans: dict[int, tuple[int, int]] = {}
    for word_id, offset in zip(word_ids, offsets, strict=True):
        if word_id is None:
            continue
        start, end = (int(value) for value in offset)
        low, high = spans.get(word_id, (start, end))
        spans[word_id] = (min(low, start), max(high, end))
    return spans


def units_of_tokens(
    tokens: Sequence[str], word_ids: Sequence[int | None], words: Sequence[str]
) -> tuple[list[str], list[int]]:
    """Unit labels and, per token, the index of its unit (a special token is its own unit)."""
    if len(tokens) != len(word_ids):
        raise XAICheckError(f"{len(tokens)} tokens but {len(word_ids)} word ids")
    labels: list[str] = []
    unit_of: list[int] = []
    word_unit: dict[int, int] = {}
    for token, word_id in zip(tokens, word_ids, strict=True):
        if word_id is None:
            labels.append(token)
            unit_of.append(len(labels) - 1)
            continue
        if not 0 <= word_id < len(words):
            raise XAICheckError(f"word id {word_id} is out of range for {len(words)} words")
        if word_id not in word_unit:
            word_unit[word_id] = len(labels)
            labels.append(words[word_id])
        unit_of.append(word_unit[word_id])
    return labels, unit_of


def word_units(
    tokens: Sequence[str], word_ids: Sequence[int | None], words: Sequence[str]
) -> tuple[list[str], Tensor]:
    """Units = each special token on its own (labelled by its token, e.g. '[CLS]') plus each word.

    Returns the unit labels (U), in order of first appearance, and a (U, T)
    float32 0/1 matrix assigning each of the T tokens to exactly one unit.
    Special tokens stay separate because they are attention sinks ([CLS],
    [SEP] take much of the mass) and merging them into words would hide that.
    """
    labels, unit_of = units_of_tokens(tokens, word_ids, words)
    assignment = torch.zeros(len(labels), len(tokens))
    assignment[torch.tensor(unit_of), torch.arange(len(tokens))] = 1.0
    return labels, assignment


def to_words(weights: Tensor, assignment: Tensor) -> Tensor:
    """(..., T, T) token attention -> (..., U, U) unit attention.

    Keys are summed over a unit's pieces: each row is a distribution over keys,
    so the attention a word receives is the total its pieces receive. Queries
    are averaged over a unit's pieces: each piece's row is itself a
    distribution, and their mean keeps every row summing to 1 (a sum would
    weigh long words more). ``assignment`` is (U, T), 0/1, every unit non-empty.
    """
    if (
        assignment.ndim != 2
        or weights.ndim < 2
        or weights.shape[-2:]
        != (
            assignment.shape[1],
            assignment.shape[1],
        )
    ):
        raise XAICheckError(
            f"weights {tuple(weights.shape)} must end in (T, T) with T matching the "
            f"assignment (U, T) {tuple(assignment.shape)}"
        )
    assignment = assignment.to(device=weights.device, dtype=weights.dtype)
    sizes = assignment.sum(dim=1, keepdim=True)
    if (sizes == 0).any():
        raise XAICheckError("every unit of the assignment needs at least one token")
    return (assignment / sizes) @ weights @ assignment.T


def word_level(maps: TokenMaps, index: int) -> tuple[list[str], Tensor]:
    """For text ``index``: unit labels and its (L, H, U, U) word-level weights, padding dropped."""
    if not -len(maps) <= index < len(maps):
        raise XAICheckError(f"text index {index} is out of range for {len(maps)} texts")
    length = len(maps.tokens[index])
    labels, assignment = word_units(maps.tokens[index], maps.word_ids[index], maps.words[index])
    return labels, to_words(maps.weights[index, :, :, :length, :length], assignment)
