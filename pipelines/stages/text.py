"""The text shortcut audit: saliency, attention and rollout on the spurious words.

Per text, with ``S`` the spurious words and word scores summed over their
subword pieces (special tokens left out, they are attention sinks):

* ``spurious_mass``: gradient x input saliency share on ``S``, which gates;
* ``attention_mass``: share of the classification token's last-layer,
  head-averaged attention on ``S`` (evidence only: attention can be trained
  to look away while the reliance stays, Pruthi et al. 2020);
* ``rollout_mass``: the same for the attention rollout over all layers;
* ``precision_at_k``: of the k most salient words, k = the number of spurious
  word occurrences, the share that are spurious.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import Tensor, nn

from pipelines.audit_sets.images import line_of
from pipelines.audit_sets.texts import SPURIOUS, phrase_spans
from pipelines.evidence.columns import TEXT_SCORE_COLUMNS
from pipelines.policy.schema import HeatmapChecks
from pipelines.stages._progress import batches
from xai_checks.attention import AttentionMaps, attention_maps, text_rollout
from xai_checks.errors import NonFiniteError, XAICheckError
from xai_checks.labels import class_label
from xai_checks.metrics import Estimate, bootstrap_ci
from xai_checks.saliency import token_saliency, word_scores

__all__ = ["TextAuditResult", "TextExample", "audit_texts"]


@dataclass(frozen=True)
class TextExample:
    """One audited text with everything its review artifacts show."""

    text_id: str
    query: int
    """Position of the token whose attention row the classifier reads ([CLS], or the last)."""
    tokens: list[str]
    attention: Tensor
    """(L, H, T, T) attention of its real tokens."""
    saliency: Tensor
    """(T,) token saliency."""
    spurious_tokens: Tensor
    """(T,) bool: the tokens that belong to a spurious word."""
    row: dict[str, Any]


@dataclass(frozen=True)
class TextAuditResult:
    scores: pd.DataFrame
    """One row per text, ``TEXT_SCORE_COLUMNS``."""
    estimates: dict[str, Estimate]
    summary: dict[str, float | int | str] = field(default_factory=dict)
    worst: list[TextExample] = field(default_factory=list)
    """The texts with the highest saliency mass, worst first."""

    def metrics(self) -> dict[str, float]:
        out = {"accuracy": float(self.summary["accuracy"])}
        for name, estimate in self.estimates.items():
            out |= estimate.as_dict(name)
        out["saliency.flagged_fraction"] = float(self.summary["flagged_fraction"])
        out["saliency.chance_mass"] = float(self.summary["chance_mass"])
        return out


def audit_texts(
    model: nn.Module,
    tokenizer,
    texts: Sequence[str],
    labels: Tensor | Sequence[int],
    spurious: Sequence[Sequence[str]],
    *,
    text_ids: Sequence[str] | None = None,
    class_names: Sequence[str] | None = None,
    flag_mass: float | None = None,
    batch_size: int = 16,
    keep_worst: int = 4,
    progress: bool | None = None,
    manifest: str | Path | None = None,
    lines: Sequence[int] | None = None,
) -> TextAuditResult:
    """Score each text's reliance on its spurious words, for the predicted class.

    Streams batches; keeps full attention tensors only for the ``keep_worst``
    texts with the highest saliency mass, for the review artifacts.

    Texts longer than the model's token limit are truncated; a spurious word
    with any occurrence cut off by that is an error, since its saliency would
    silently be missing from the score. ``manifest`` is the audit-set CSV the
    texts were loaded from, in its row order (``TextAuditSet.manifest``):
    errors then name its file and line (``lines``: the line each text starts on).
    """
    flag_mass = HeatmapChecks().flag_mass if flag_mass is None else flag_mass
    texts = list(texts)
    labels = torch.as_tensor(labels, dtype=torch.long)
    n = len(texts)
    if labels.shape != (n,) or len(spurious) != n:
        raise ValueError(
            f"need one label and one spurious-word list per text ({n}), "
            f"got {tuple(labels.shape)} labels and {len(spurious)} lists"
        )
    ids = list(text_ids) if text_ids is not None else [str(i) for i in range(n)]
    rows: list[dict[str, Any]] = []
    keep: list[tuple[float, TextExample]] = []
    chance: list[float] = []
    predictions = torch.zeros(n, dtype=torch.long)
    starts = range(0, n, batch_size)
    for start in batches(starts, desc="text audit", progress=progress):
        batch = texts[start : start + batch_size]
        maps = attention_maps(model, tokenizer, batch, batch_size=batch_size)
        try:
            saliency = token_saliency(model, tokenizer, batch, batch_size=batch_size)
        except NonFiniteError as exc:
            if exc.index is None:
                raise
            i = start + exc.index
            raise NonFiniteError(
                f"{_where(manifest, i, lines)}text {ids[i]!r}: the model's outputs contain NaN "
                "or Inf, so its prediction and scores mean nothing",
                index=i,
            ) from None
        rolled = text_rollout(maps)
        last_layer = maps.weights[:, -1].mean(dim=1)  # (B, T, T), heads averaged
        for row_in_batch, i in enumerate(range(start, start + len(batch))):
            if maps.tokens[row_in_batch] != saliency.tokens[row_in_batch]:
                raise XAICheckError(
                    f"text {ids[i]!r}: attention and saliency saw different tokens; the "
                    "tokenizer is not deterministic"
                )
            words = saliency.words[row_in_batch]
            word_ids = saliency.word_ids[row_in_batch]
            phrases = phrase_spans(texts[i], spurious[i])
            is_spurious = torch.tensor(
                [
                    any(start < end_p and start_p < end for start_p, end_p in phrases)
                    for start, end in saliency.word_spans[row_in_batch]
                ],
                dtype=torch.bool,
            )
            token_spurious = torch.tensor(
                [w is not None and bool(is_spurious[w]) for w in word_ids], dtype=torch.bool
            )
            length = len(word_ids)
            query = _query_index(maps, row_in_batch, tokenizer)
            scores = word_scores(saliency.scores[row_in_batch, :length], word_ids)
            cut = _cut_off(texts[i], spurious[i], saliency.word_spans[row_in_batch])
            if cut:  # the CSV check found them in the text: truncation cut them off
                raise XAICheckError(
                    f"{_where(manifest, i, lines)}text {ids[i]!r} column {SPURIOUS!r}: spurious "
                    f"word(s) {cut} lie beyond the model's token limit ({len(word_ids)} tokens "
                    "kept), so they cannot be scored; shorten the text or put them earlier"
                )
            k = int(is_spurious.sum())
            if k == 0:  # only reachable without the CSV check: nothing to score against
                raise XAICheckError(
                    f"text {ids[i]!r}: none of its spurious words {list(spurious[i])} occur in "
                    "it as whole words, so its reliance on them cannot be scored"
                )
            top = scores.topk(min(k, len(scores))).indices
            prediction = int(saliency.predictions[row_in_batch])
            predictions[i] = prediction
            row = {
                "text_id": ids[i],
                "label": class_label(int(labels[i]), class_names),
                "prediction": class_label(prediction, class_names),
                "spurious_mass": _share(scores, is_spurious),
                "attention_mass": _word_share(
                    last_layer[row_in_batch, query, :length], word_ids, is_spurious
                ),
                "rollout_mass": _word_share(
                    rolled[row_in_batch, query, :length], word_ids, is_spurious
                ),
                "precision_at_k": float(is_spurious[top].float().mean()),
            }
            row["flagged"] = bool(row["spurious_mass"] > flag_mass)
            rows.append(row)
            chance.append(float(is_spurious.float().mean()) if len(words) else float("nan"))
            example = TextExample(
                text_id=ids[i],
                query=query,
                tokens=maps.tokens[row_in_batch],
                attention=maps.weights[row_in_batch, :, :, :length, :length].clone(),
                saliency=saliency.scores[row_in_batch, :length].clone(),
                spurious_tokens=token_spurious,
                row=row,
            )
            keep = sorted([*keep, (row["spurious_mass"], example)], key=lambda p: -_finite(p[0]))
            keep = keep[:keep_worst]

    scores = pd.DataFrame(rows, columns=list(TEXT_SCORE_COLUMNS))
    estimates = {
        "saliency.spurious_mass": bootstrap_ci(torch.tensor(scores["spurious_mass"].to_numpy())),
        "saliency.precision_at_k": bootstrap_ci(torch.tensor(scores["precision_at_k"].to_numpy())),
        "attention.cls_mass": bootstrap_ci(torch.tensor(scores["attention_mass"].to_numpy())),
        "attention.rollout_mass": bootstrap_ci(torch.tensor(scores["rollout_mass"].to_numpy())),
    }
    summary: dict[str, float | int | str] = {
        "n_texts": n,
        "n_inputs": n,  # the key every summary shares: inputs audited
        "accuracy": float((predictions == labels).float().mean()),
        "method": "saliency",
        "spurious_mass": estimates["saliency.spurious_mass"].mean,
        "enrichment": estimates["saliency.spurious_mass"].mean / max(_mean(chance), 1e-12),
        "flagged_fraction": float(scores["flagged"].mean()),
        "chance_mass": _mean(chance),
        "target_layer": "input embeddings",
    }
    return TextAuditResult(scores, estimates, summary, [example for _, example in keep])


def _where(manifest: str | Path | None, index: int, lines: Sequence[int] | None = None) -> str:
    """``'file.csv:LINE '`` of the text at ``index`` when its manifest is known, else ``''``."""
    return f"{Path(manifest).name}:{line_of(lines, index)} " if manifest is not None else ""


def _query_index(maps: AttentionMaps, row: int, tokenizer) -> int:
    """The token whose attention row the classifier reads: CLS for encoders, else the last."""
    tokens = maps.tokens[row]
    cls = getattr(tokenizer, "cls_token", None)
    return 0 if cls is not None and tokens and tokens[0] == cls else len(tokens) - 1


def _word_share(row: Tensor, word_ids: Sequence[int | None], is_spurious: Tensor) -> float:
    """Share of a token row's mass on spurious words, among word tokens (specials left out)."""
    return _share(word_scores(row, word_ids), is_spurious)


def _share(scores: Tensor, inside: Tensor) -> float:
    total = float(scores.clamp_min(0).sum())
    if total <= 0 or not inside.any():
        return float("nan")
    return float(scores.clamp_min(0)[inside].sum()) / total


def _cut_off(text: str, phrases: Sequence[str], kept: Sequence[tuple[int, int]]) -> list[str]:
    """The spurious entries with an occurrence (or part of one) past the last kept word.

    ``kept`` are the character spans of the words that survived truncation;
    only non-space characters past their end count, so a phrase is not cut
    off by the whitespace or end of text after it.
    """
    kept_end = max((end for _, end in kept), default=0)
    return [
        phrase
        for phrase in phrases
        if any(
            re.search(r"\S", text[max(start, kept_end) : end])
            for start, end in phrase_spans(text, [phrase])
        )
    ]


def _mean(values: list[float]) -> float:
    finite = [v for v in values if v == v]
    return sum(finite) / len(finite) if finite else float("nan")


def _finite(value: float) -> float:
    return value if value == value else -1.0
