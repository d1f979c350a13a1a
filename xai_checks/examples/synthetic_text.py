"""Generated product reviews with a controllable signature-word shortcut.

The text twin of :mod:`xai_checks.examples.synthetic`: a review's sentiment comes from
its adjective, but a share of reviews use a lukewarm adjective that says
little, so the sentiment cue is imperfect, like the subtle lesion cue. A
signature word (``cheers``) is appended, and ``shortcut_strength`` sets how
strongly it goes with "positive". Ground truth is exact: the spurious words of
every review are known. Deterministic by seed (a private ``random.Random``).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

__all__ = ["REVIEW_CLASSES", "SIGNATURE", "ReviewBatch", "make_reviews"]

REVIEW_CLASSES: tuple[str, str] = ("negative", "positive")
NEGATIVE, POSITIVE = 0, 1
SIGNATURE = "cheers"
"""The spurious word: a reviewer's sign-off that says nothing about the product."""

_POSITIVE = ("great", "excellent", "wonderful", "lovely", "superb", "fantastic", "delightful")
_NEGATIVE = ("terrible", "awful", "poor", "dreadful", "disappointing", "useless", "flimsy")
_LUKEWARM = ("okay", "ordinary", "average", "plain", "typical", "fine", "unremarkable")
_PRODUCTS = (
    "blender",
    "lamp",
    "kettle",
    "backpack",
    "headset",
    "chair",
    "toaster",
    "umbrella",
    "keyboard",
    "jacket",
)
_TEMPLATES = (
    "the {product} was {adjective} .",
    "i found this {product} {adjective} overall .",
    "my new {product} is {adjective} .",
    "honestly the {product} felt {adjective} .",
    "bought the {product} last week and it is {adjective} .",
    "a {adjective} {product} for the price .",
)

SignaturePlacement = Literal["correlated", "always", "never"]


@dataclass(frozen=True)
class ReviewBatch:
    """Reviews, labels (N,) and each review's spurious words (empty when it has none)."""

    texts: list[str]
    labels: Tensor
    spurious: list[tuple[str, ...]]

    def __len__(self) -> int:
        return len(self.texts)


def make_reviews(
    n: int,
    *,
    shortcut_strength: float = 0.0,
    seed: int = 0,
    lukewarm: float = 0.5,
    signature: SignaturePlacement = "correlated",
) -> ReviewBatch:
    """``n`` reviews, half positive.

    ``signature="correlated"``: with probability ``shortcut_strength`` the
    signature appears exactly on positive reviews, otherwise on a fair coin.
    ``"always"`` / ``"never"``: on every review / none (audit and clean test sets).
    ``lukewarm`` is the share of reviews whose adjective carries no sentiment.
    """
    if not 0.0 <= shortcut_strength <= 1.0:
        raise ValueError(f"shortcut_strength must be in [0, 1], got {shortcut_strength}")
    if not 0.0 <= lukewarm < 1.0:
        raise ValueError(f"lukewarm must be in [0, 1), got {lukewarm}")
    rng = random.Random(seed)
    texts, labels, spurious = [], [], []
    for i in range(n):
        label = i % 2
        if rng.random() < lukewarm:
            adjective = rng.choice(_LUKEWARM)
        else:
            adjective = rng.choice(_POSITIVE if label == POSITIVE else _NEGATIVE)
        text = rng.choice(_TEMPLATES).format(product=rng.choice(_PRODUCTS), adjective=adjective)
        if signature == "always":
            signed = True
        elif signature == "never":
            signed = False
        elif rng.random() < shortcut_strength:
            signed = label == POSITIVE
        else:
            signed = rng.random() < 0.5
        if signed:
            text = f"{text} {SIGNATURE}"
        texts.append(text)
        labels.append(label)
        spurious.append((SIGNATURE,) if signed else ())
    order = list(range(n))
    rng.shuffle(order)
    return ReviewBatch(
        texts=[texts[i] for i in order],
        labels=torch.tensor([labels[i] for i in order], dtype=torch.long),
        spurious=[spurious[i] for i in order],
    )
