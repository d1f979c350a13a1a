"""The columns of every table the gate validates and logs, one row per input or strategy."""

from __future__ import annotations

__all__ = [
    "COUNTERFACTUAL_COLUMNS",
    "DISCOVERY_COLUMNS",
    "SANITY_COLUMNS",
    "SCORE_COLUMNS",
    "TEXT_SCORE_COLUMNS",
    "UNSCORED_COLUMNS",
]

SCORE_COLUMNS = (
    "image_id",
    "label",
    "prediction",
    "spurious_mass",
    "enrichment",
    "rank_accuracy",
    "pointing_hit",
    "flagged",
)
"""Heatmap scores of the gating CAM method, one row per audit image."""

UNSCORED_COLUMNS = ("image_id", "label", "prediction")
"""The score table of an audit set without spurious regions: nothing to score against."""

TEXT_SCORE_COLUMNS = (
    "text_id",
    "label",
    "prediction",
    "spurious_mass",
    "attention_mass",
    "rollout_mass",
    "precision_at_k",
    "flagged",
)
"""Text scores, one row per audit text; ``spurious_mass`` is the gradient x input saliency
share on the spurious words, so the same expectations gate images and texts."""

COUNTERFACTUAL_COLUMNS = (
    "prediction_without_artifact",
    "flipped_on_removal",
    "artifact_class_probability",
    "artifact_class_lift",
)
"""Counterfactual evidence per image; appended to the score table. Null where it does not
apply: no artifact to remove, or the image is of the artifact's own class. The lift is
P(artifact's class) after pasting minus before (with the image's own artifact filled in)."""

SANITY_COLUMNS = ("image_id", "spearman")
"""Rank correlation of each sanity image's map before and after full randomisation."""

DISCOVERY_COLUMNS = (
    "rank",
    "class",
    "size",
    "suspicion",
    "evidence",
    "clusters",
    "presence",
    "texture",
    "stereotypy",
    "offset",
    "separation",
    "elsewhere",
    "proposed_area",
    "flip_rate",
    "pull",
    "pull_ci_low",
    "pull_ci_high",
    "decided_share",
    "decided_ci_low",
    "decided_ci_high",
    "status",
)
"""One row per discovered strategy, most suspicious first. ``suspicion`` is the largest of
``clusters`` (SpRAy), ``presence``, ``texture`` and ``stereotypy`` (what its region holds);
``evidence`` names those above the bound. ``status`` is ``confirmed`` (suspicious, and filling its
proposed region flips predictions or pasting it pulls other classes to it: blocks),
``suspicious`` (a warning) or ``ok``; the tested columns are null where untested."""
