"""Is the audit evidence about anything? A model that cannot tell the inputs apart is no evidence.

Why: every check scores *why* a model predicts what it predicts. When its
predictions carry no information about the labels (accuracy at chance, one
class for everything), or the inputs carry none (blank images, e.g. a
decoding that turned every pixel white), heatmaps and counterfactuals
measure noise, and "nothing was flagged" means nothing. Such a pass must not
be silent: the policy's ``checks.uninformative`` says whether it blocks, is
inconclusive (the default: no promotion) or passes with a warning.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
from scipy.stats import binomtest

__all__ = [
    "NEAR_CONSTANT_STD",
    "ONE_PREDICTION_SHARE",
    "SIGNIFICANCE",
    "class_count",
    "uninformative_reasons",
]

SIGNIFICANCE = 0.05
"""Accuracy counts as above chance when a one-sided binomial test rejects chance at this level."""
ONE_PREDICTION_SHARE = 0.95
"""A model giving one class to this share of inputs whose labels are mixed predicts 'one thing'."""
NEAR_CONSTANT_STD = 1.0 / 255.0
"""An image whose pixel standard deviation is below one 8-bit level is blank."""
MAX_NEAR_CONSTANT_SHARE = 0.05
"""More blank images than this share make the audit set uninformative."""


def uninformative_reasons(
    labels: Sequence[object],
    predictions: Sequence[object],
    *,
    n_classes: int,
    pixel_spread: Sequence[float] | None = None,
    ids: Sequence[str] | None = None,
) -> list[str]:
    """Why the predictions (or the inputs) carry no evidence; empty when they do.

    Chance is the share of the most common label when labels are mixed (what
    predicting it for everything scores), else ``1 / n_classes``.
    """
    labels_s, predictions_s = pd.Series(list(labels)), pd.Series(list(predictions))
    n = len(labels_s)
    if n == 0:
        return ["the audit set is empty"]
    reasons = []
    label_shares = labels_s.value_counts(normalize=True)
    mixed = len(label_shares) > 1
    chance = float(label_shares.iloc[0]) if mixed else 1.0 / max(n_classes, 1)
    correct = int((labels_s.astype(str) == predictions_s.astype(str)).sum())
    p_value = binomtest(correct, n, min(chance, 1.0), alternative="greater").pvalue
    if p_value >= SIGNIFICANCE:
        reasons.append(
            f"accuracy {correct / n:.2f} on {n} inputs is not above chance ({chance:.2f}, "
            f"binomial p = {p_value:.2g})"
        )
    top = predictions_s.value_counts(normalize=True)
    if mixed and float(top.iloc[0]) >= ONE_PREDICTION_SHARE:
        reasons.append(
            f"the model predicts {top.index[0]!r} for {float(top.iloc[0]):.0%} of inputs "
            "whose labels are mixed"
        )
    if pixel_spread is not None:
        blank = [i for i, spread in enumerate(pixel_spread) if spread < NEAR_CONSTANT_STD]
        if len(blank) > MAX_NEAR_CONSTANT_SHARE * n:
            named = ", ".join(str(ids[i]) if ids is not None else str(i) for i in blank[:3])
            reasons.append(
                f"{len(blank)} of {n} images are (near) constant (pixel std < 1/255), "
                f"e.g. {named}: check how they decode"
            )
    return reasons


def class_count(class_names: Sequence[str] | None, table: pd.DataFrame) -> int:
    """The model's number of classes: its names, else the largest index seen (at least 2)."""
    if class_names is not None:
        return len(class_names)
    indices = pd.to_numeric(pd.concat([table["label"], table["prediction"]]), errors="coerce")
    return max(2, int(indices.max()) + 1) if indices.notna().any() else 2
