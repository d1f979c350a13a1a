"""Counterfactual evidence for text: delete the spurious words, or add them elsewhere.

The text twin of :mod:`xai_checks.counterfactual`, with the same result types.
Removal deletes every occurrence of each spurious word (whole words, any
case), so the sentence reads as if the reviewer had not signed it. Insertion
appends class A's spurious words to texts of other classes (after deleting
their own), where sign-offs, signatures and boilerplate sit.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import replace

import torch
from torch import Tensor, nn

from xai_checks.counterfactual import InsertionResult, RemovalResult
from xai_checks.errors import XAICheckError
from xai_checks.predict import predict_text_proba

__all__ = [
    "insert_words",
    "predict_text_proba",  # re-exported from xai_checks.predict, where it lives
    "remove_words",
    "text_insertion_test",
    "text_removal_test",
]


def remove_words(text: str, words: Sequence[str]) -> str:
    """``text`` without any whole-word occurrence of ``words`` (case-insensitive)."""
    for word in words:
        text = re.sub(rf"(?<!\w){re.escape(word)}(?!\w)", " ", text, flags=re.IGNORECASE)
    return re.sub(r"\s+", " ", text).strip()


def insert_words(text: str, words: Sequence[str]) -> str:
    """``text`` with ``words`` appended."""
    return " ".join([text.rstrip(), *words]) if words else text


def text_removal_test(
    model: nn.Module,
    tokenizer,
    texts: Sequence[str],
    labels: Tensor,
    spurious: Sequence[Sequence[str]],
    *,
    batch_size: int = 64,
) -> RemovalResult:
    """Delete each text's spurious words and compare the predictions."""
    texts, labels = _check(texts, labels, spurious)
    has = torch.tensor([bool(words) for words in spurious])
    if not has.any():
        raise XAICheckError("no text has spurious words: there is nothing to remove")
    edited = [remove_words(text, words) for text, words in zip(texts, spurious, strict=True)]
    before = predict_text_proba(model, tokenizer, texts, batch_size=batch_size)
    after = predict_text_proba(model, tokenizer, edited, batch_size=batch_size)
    return RemovalResult(
        labels=labels,
        has_artifact=has,
        predictions=before.argmax(dim=1),
        predictions_without=after.argmax(dim=1),
        probabilities=before,
        probabilities_without=after,
        edited=edited,
    )


def text_insertion_test(
    model: nn.Module,
    tokenizer,
    texts: Sequence[str],
    labels: Tensor,
    spurious: Sequence[Sequence[str]],
    artifact_class: int | None = None,
    *,
    batch_size: int = 64,
) -> InsertionResult:
    """Append class-A spurious words to the other classes' texts and read P(A).

    Donors are the class-A texts with spurious words, cycled in order; with
    ``artifact_class=None`` every class with donors is tried and the highest
    spurious score is returned, as for images.
    """
    texts, labels = _check(texts, labels, spurious)
    has = [bool(words) for words in spurious]
    classes = sorted({int(labels[i]) for i in range(len(texts)) if has[i]})
    if artifact_class is not None:
        if artifact_class not in classes:
            raise XAICheckError(f"no text of class {artifact_class} has spurious words to insert")
        classes = [artifact_class]
    candidates = [c for c in classes if (labels != c).any()]
    if not candidates:
        raise XAICheckError(
            "insertion needs texts with spurious words in one class and texts of another class"
        )
    cleaned_all = [remove_words(text, words) for text, words in zip(texts, spurious, strict=True)]
    results = []
    for cls in candidates:
        donors = [i for i in range(len(texts)) if has[i] and int(labels[i]) == cls]
        targets = (labels != cls).nonzero().flatten()
        sources = torch.tensor([donors[k % len(donors)] for k in range(len(targets))])
        cleaned = [cleaned_all[i] for i in targets.tolist()]
        pasted = [
            insert_words(text, spurious[j])
            for text, j in zip(cleaned, sources.tolist(), strict=True)
        ]
        before = predict_text_proba(model, tokenizer, cleaned, batch_size=batch_size)
        after = predict_text_proba(model, tokenizer, pasted, batch_size=batch_size)
        results.append(
            InsertionResult(
                artifact_class=cls,
                target_index=targets,
                source_index=sources,
                baseline=before[:, cls],
                probability=after[:, cls],
                predictions_before=before.argmax(dim=1),
                predictions_after=after.argmax(dim=1),
                cleaned=cleaned,
                pasted=pasted,
                scores_by_class={},
            )
        )
    worst = max(results, key=lambda r: r.lift)  # the class the paste moves most
    scores = {r.artifact_class: r.spurious_score for r in results}
    return replace(worst, scores_by_class=scores)


def _check(
    texts: Sequence[str], labels: Tensor, spurious: Sequence[Sequence[str]]
) -> tuple[list[str], Tensor]:
    texts = list(texts)
    if not texts or not all(isinstance(t, str) for t in texts):
        raise XAICheckError("texts must be a non-empty sequence of strings")
    labels = torch.as_tensor(labels).cpu()
    if labels.shape != (len(texts),) or labels.is_floating_point():
        raise XAICheckError(f"labels must be {len(texts)} integer class indices")
    if len(spurious) != len(texts):
        raise XAICheckError(
            f"spurious must hold one word list per text ({len(texts)}), got {len(spurious)}"
        )
    return texts, labels.long()
