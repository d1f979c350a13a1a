"""The pronoun probe: which earlier word does a pronoun attend to, per layer and head?

A Winograd-style sentence ("The ball didn't fit in the box because it was too
big") has one right antecedent; heads whose attention from the pronoun picks
it show where a model resolves reference. Word-level attention, so a
candidate split into pieces counts as one word.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pandas as pd
import torch
from torch import Tensor, nn

from xai_checks.attention import attention_maps
from xai_checks.errors import XAICheckError
from xai_checks.words import units_of_tokens, word_level

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

__all__ = ["PronounProbe", "pronoun_probe"]


@dataclass(frozen=True)
class PronounProbe:
    """How much a pronoun attends to each candidate antecedent, per layer and head.

    ``weights`` is (L, H, C) word-level attention (mean over the pronoun's
    pieces, sum over each candidate's pieces) from the pronoun to each of the C
    ``candidates``, for every layer and head of the model.
    """

    sentence: str
    pronoun: str
    candidates: tuple[str, ...]
    weights: Tensor

    @property
    def head_average(self) -> Tensor:
        """(L, C): attention to each candidate averaged over heads."""
        return self.weights.mean(dim=1)

    def resolved(self) -> pd.DataFrame:
        """One row per (layer, head): the argmax candidate, its weight and its margin.

        ``margin`` is best minus second-best weight; NaN with a single candidate.
        """
        n_layers, n_heads, n_candidates = self.weights.shape
        top = self.weights.topk(min(2, n_candidates), dim=-1)
        best = top.values[..., 0]
        margin = best - top.values[..., 1] if n_candidates > 1 else torch.full_like(best, torch.nan)
        layer, head = torch.meshgrid(torch.arange(n_layers), torch.arange(n_heads), indexing="ij")
        return pd.DataFrame(
            {
                "layer": layer.flatten().tolist(),
                "head": head.flatten().tolist(),
                "candidate": [self.candidates[i] for i in top.indices[..., 0].flatten().tolist()],
                "weight": best.flatten().tolist(),
                "margin": margin.flatten().tolist(),
            }
        )

    def table(self) -> pd.DataFrame:
        """Long format, one row per (layer, head, candidate): layer, head, candidate, weight."""
        n_layers, n_heads, n_candidates = self.weights.shape
        layer, head, candidate = torch.meshgrid(
            torch.arange(n_layers), torch.arange(n_heads), torch.arange(n_candidates), indexing="ij"
        )
        return pd.DataFrame(
            {
                "layer": layer.flatten().tolist(),
                "head": head.flatten().tolist(),
                "candidate": [self.candidates[i] for i in candidate.flatten().tolist()],
                "weight": self.weights.flatten().tolist(),
            }
        )

    def winner_by_layer(self) -> list[str]:
        """The head-averaged argmax candidate of each layer."""
        return [self.candidates[i] for i in self.head_average.argmax(dim=-1).tolist()]


def pronoun_probe(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    sentence: str,
    pronoun: str,
    candidates: Sequence[str],
) -> PronounProbe:
    """Word-level attention from ``pronoun`` to each candidate antecedent, all layers and heads.

    Words match case-insensitively, ignoring surrounding punctuation, against the
    tokenizer's words (BERT splits "didn't" into "didn", "'", "t"). The pronoun's
    first occurrence is the query; each candidate's last occurrence before it is
    the key, since that is the mention the pronoun would refer back to. One
    candidate is allowed (then ``resolved().margin`` is NaN).
    """
    if isinstance(candidates, str):
        raise TypeError("candidates must be a sequence of words, not one string")
    if not candidates:
        raise XAICheckError("pronoun_probe needs at least one candidate")
    keys = [_normalise(word) for word in candidates]
    if len(set(keys)) != len(keys):
        raise XAICheckError(f"candidates repeat a word: {list(candidates)}")
    maps = attention_maps(model, tokenizer, [sentence])
    labels, unit_of = units_of_tokens(maps.tokens[0], maps.word_ids[0], maps.words[0])
    # Per unit, its normalised word; None for special tokens so '[CLS]' never matches 'cls'.
    unit_words: list[str | None] = [None] * len(labels)
    for unit, word_id in zip(unit_of, maps.word_ids[0], strict=True):
        if word_id is not None:
            unit_words[unit] = _normalise(maps.words[0][word_id])
    sentence_words = [w for w in unit_words if w]

    def missing(word: str, where: str) -> XAICheckError:
        return XAICheckError(
            f"{word!r} is not {where} of {sentence!r}; its words: {sentence_words}"
        )

    target = _normalise(pronoun)
    if not target or target not in unit_words:
        raise missing(pronoun, "a word")
    query = unit_words.index(target)
    key_units: list[int] = []
    for word, key in zip(candidates, keys, strict=True):
        before = [u for u in range(query) if key and unit_words[u] == key]
        if not before:
            raise missing(word, f"a word before the pronoun {pronoun!r}")
        key_units.append(before[-1])
    _, word_weights = word_level(maps, 0)
    return PronounProbe(
        sentence=sentence,
        pronoun=pronoun,
        candidates=tuple(candidates),
        weights=word_weights[:, :, query, key_units],
    )


_EDGE_PUNCTUATION = re.compile(r"^[\W_]+|[\W_]+$")


def _normalise(word: str) -> str:
    return _EDGE_PUNCTUATION.sub("", word).casefold()
