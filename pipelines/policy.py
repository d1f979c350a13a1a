"""Gate thresholds and the Great Expectations checks derived from them.

The thresholds live here and only here: the score-table expectations are
generated from them, so the GX suite and the verdict cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from pipelines.methods import AUDIT_METHODS
from pipelines.validation import Check

__all__ = [
    "COUNTERFACTUAL_COLUMNS",
    "DISCOVERY_COLUMNS",
    "SANITY_COLUMNS",
    "SCORE_COLUMNS",
    "TEXT_SCORE_COLUMNS",
    "UNSCORED_COLUMNS",
    "AuditPlan",
    "DiscoveryPlan",
    "Thresholds",
    "discovery_checks",
    "sanity_checks",
    "score_checks",
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
)
"""Counterfactual evidence per image; appended to the score table. Null where it does not
apply: no artifact to remove, or the image is of the artifact's own class."""

SANITY_COLUMNS = ("image_id", "spearman")
"""Rank correlation of each sanity image's map before and after full randomisation."""

DISCOVERY_COLUMNS = (
    "rank",
    "class",
    "size",
    "suspicion",
    "offset",
    "separation",
    "elsewhere",
    "proposed_area",
    "flip_rate",
    "status",
)
"""One row per discovered strategy, most suspicious first. ``status`` is ``confirmed``
(suspicious, and filling its proposed region flips predictions: blocks), ``suspicious``
(a warning) or ``ok``; ``proposed_area`` and ``flip_rate`` are null where untested."""


class Thresholds(BaseModel):
    """When a model counts as relying on the spurious region, or its explanations as void."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_spurious_mass: float = Field(
        0.30,
        ge=0.0,
        le=1.0,
        description="Upper bound on the mean spurious mass over the audit set.",
    )
    max_flagged_fraction: float = Field(
        0.10, ge=0.0, le=1.0, description="Upper bound on the share of flagged images."
    )
    flag_mass: float = Field(
        0.50,
        gt=0.0,
        le=1.0,
        description="An image is flagged when more than this share of its heatmap is spurious.",
    )
    max_flip_rate: float = Field(
        0.20,
        ge=0.0,
        le=1.0,
        description="Upper bound on the share of predictions that change when the artifact "
        "is filled in from its surroundings.",
    )
    max_spurious_score: float = Field(
        0.50,
        ge=0.0,
        le=1.0,
        description="Upper bound on the mean probability of the artifact's class after "
        "pasting the artifact onto images of other classes.",
    )
    max_sanity_correlation: float = Field(
        0.50,
        ge=-1.0,
        le=1.0,
        description="Upper bound on the mean Spearman correlation between heatmaps of the "
        "model and of its fully randomised copy; above it the explanations are not trusted "
        "and the verdict is inconclusive.",
    )
    max_discovery_suspicion: float = Field(
        0.50,
        ge=0.0,
        le=1.0,
        description="A discovered strategy above this Clever-Hans suspicion is a warning, "
        "and its proposed spurious region is tested.",
    )
    max_discovery_flip_rate: float = Field(
        0.50,
        ge=0.0,
        le=1.0,
        description="Filling a suspicious strategy's proposed region may flip at most this "
        "share of its predictions; above it the shortcut is confirmed and the gate blocks.",
    )


class DiscoveryPlan(BaseModel):
    """How heatmaps are clustered into strategies, and how many proposals are tested."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    resolution: int = Field(
        16, ge=2, le=16, description="Side the heatmaps are pooled to before clustering."
    )
    n_neighbors: int = Field(10, ge=1, description="Neighbours in the affinity graph.")
    max_clusters: int = Field(8, ge=1, description="Most strategies per class (eigengap).")
    min_cluster_size: int = Field(
        5, ge=1, description="Smaller clusters are listed but get no proposed region."
    )
    max_proposals: int = Field(
        3, ge=1, description="Most suspicious strategies whose proposed region is tested."
    )
    mask_threshold: float = Field(
        0.5,
        gt=0.0,
        lt=1.0,
        description="A proposal is where the mean heatmap exceeds this "
        "share of its maximum (minus where the other heatmaps do).",
    )


class AuditPlan(BaseModel):
    """Which checks run, and on how much of the audit set."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    cam_methods: tuple[str, ...] = Field(
        ("gradcam", "layercam"),
        min_length=1,
        description="Heatmap methods to run (CAMs, or 'rollout' for ViTs); the first one's "
        "scores gate, the others are evidence.",
    )
    target_layers: tuple[str, ...] = Field(
        (), description="Layers to explain, averaged; empty for the default layer."
    )
    counterfactual: bool = Field(True, description="Run artifact removal and insertion.")
    sanity: bool = Field(True, description="Run the model-randomisation sanity check.")
    sanity_images: int = Field(16, ge=2, description="Audit images used by the sanity check.")
    discovery: DiscoveryPlan | None = Field(
        None, description="Strategy discovery (SpRAy) settings; None: not run."
    )
    batch_size: int = Field(32, ge=1)

    @field_validator("cam_methods")
    @classmethod
    def _known_methods(cls, methods: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [m for m in methods if m not in AUDIT_METHODS]
        if unknown:
            raise ValueError(
                f"unknown CAM method(s) {unknown}; known: {', '.join(sorted(AUDIT_METHODS))}"
            )
        if len(set(methods)) != len(methods):
            raise ValueError(f"cam_methods lists a method twice: {list(methods)}")
        return methods

    @property
    def gating_method(self) -> str:
        return self.cam_methods[0]


def score_checks(
    thresholds: Thresholds,
    *,
    counterfactual: bool = True,
    required: Sequence[str] = SCORE_COLUMNS,
    regions: bool = True,
) -> list[Check]:
    """The expectations a score table must meet for the gate to pass.

    Counterfactual columns are null where a check does not apply; GX leaves
    nulls out of ``mostly`` and of the mean, so rates are over the rows that count.
    ``regions=False`` (no spurious masks): only the required columns are checked.
    """
    t = thresholds

    def mean_mass(gxe: Any) -> Any:
        return gxe.ExpectColumnMeanToBeBetween(
            column="spurious_mass", min_value=0.0, max_value=t.max_spurious_mass
        )

    def few_flagged(gxe: Any) -> Any:
        return gxe.ExpectColumnValuesToBeInSet(
            column="flagged", value_set=[False], mostly=1.0 - t.max_flagged_fraction
        )

    def few_flips(gxe: Any) -> Any:
        return gxe.ExpectColumnValuesToBeInSet(
            column="flipped_on_removal", value_set=[False], mostly=1.0 - t.max_flip_rate
        )

    def low_spurious_score(gxe: Any) -> Any:
        return gxe.ExpectColumnMeanToBeBetween(
            column="artifact_class_probability", min_value=0.0, max_value=t.max_spurious_score
        )

    checks = [
        Check(
            "spurious_mass mean",
            mean_mass,
            lambda r: (
                f"spurious_mass mean {_num(r.get('observed_value'))} exceeds "
                f"max_spurious_mass {t.max_spurious_mass:.3f}"
            ),
        ),
        Check(
            "flagged fraction",
            few_flagged,
            lambda r: (
                f"flagged fraction {_num(r.get('unexpected_percent', float('nan')) / 100)} exceeds "
                f"max_flagged_fraction {t.max_flagged_fraction:.3f} "
                f"(flag_mass {t.flag_mass:.2f})"
            ),
        ),
    ]
    if not regions:
        checks, counterfactual = [], False
    if counterfactual:
        checks += [
            Check(
                "removal flip rate",
                few_flips,
                lambda r: (
                    f"removal flip rate {_num(r.get('unexpected_percent', float('nan')) / 100)} "
                    f"exceeds max_flip_rate {t.max_flip_rate:.3f}: predictions change when the "
                    "artifact is removed"
                ),
            ),
            Check(
                "spurious score",
                low_spurious_score,
                lambda r: (
                    f"spurious score {_num(r.get('observed_value'))} exceeds max_spurious_score "
                    f"{t.max_spurious_score:.3f}: adding the artifact to other classes' inputs "
                    "moves predictions to its class"
                ),
            ),
        ]
    for column in required:
        if column in ("attention_mass", "rollout_mass", "precision_at_k"):
            continue  # evidence, may be undefined for a text (no word to rank)
        checks.append(
            Check(
                f"{column} not null",
                lambda gxe, c=column: gxe.ExpectColumnValuesToNotBeNull(column=c),
                lambda r, c=column: (
                    f"column {c!r} has {r.get('unexpected_count', '?')} null value(s) "
                    f"(rows {list(r.get('unexpected_index_list') or [])[:5]}): "
                    "a score could not be computed"
                ),
            )
        )
    return checks


def sanity_checks(thresholds: Thresholds, *, steps: int) -> list[Check]:
    """The expectation on the sanity table: maps must change when the weights are randomised."""
    t = thresholds

    def decorrelates(gxe: Any) -> Any:
        return gxe.ExpectColumnMeanToBeBetween(
            column="spearman", min_value=-1.0, max_value=t.max_sanity_correlation
        )

    return [
        Check(
            "sanity spearman mean",
            decorrelates,
            lambda r: (
                "sanity check undefined: no image has an original heatmap that is not constant"
                if r.get("observed_value") is None
                else f"sanity check failed: heatmaps barely change when the model's weights "
                f"are randomised (mean Spearman {_num(r.get('observed_value'))} after {steps} "
                f"layers exceeds max_sanity_correlation {t.max_sanity_correlation:.3f}), so "
                "they do not explain this model"
            ),
        ),
        Check(
            "sanity spearman not null",
            lambda gxe: gxe.ExpectColumnValuesToNotBeNull(column="spearman", mostly=0.5),
            lambda r: (
                f"sanity check undefined: {r.get('unexpected_count', '?')} original heatmap(s) "
                "are constant, so no correlation can be computed"
            ),
        ),
    ]


def discovery_checks(thresholds: Thresholds, table: Any) -> list[Check]:
    """The expectation on the discovery table (``DISCOVERY_COLUMNS``): no confirmed shortcut.

    The failure names each confirmed strategy: its rank, class, size, suspicion and flip rate.
    """
    t = thresholds

    def describe(result: dict[str, Any]) -> str:
        rows = list(result.get("unexpected_index_list") or [])
        found = [
            f"strategy #{table.at[i, 'rank']} of class {table.at[i, 'class']!r} "
            f"({table.at[i, 'size']} images, suspicion {_num(table.at[i, 'suspicion'])} > "
            f"{t.max_discovery_suspicion:.2f}): filling its proposed region flips "
            f"{_num(table.at[i, 'flip_rate'])} of its predictions > "
            f"max_discovery_flip_rate {t.max_discovery_flip_rate:.2f}"
            for i in rows
        ]
        return "discovery found an unlabelled shortcut: " + "; ".join(found or ["(no rows)"])

    return [
        Check(
            "no confirmed strategy",
            lambda gxe: gxe.ExpectColumnValuesToBeInSet(
                column="status", value_set=["ok", "suspicious"]
            ),
            describe,
        )
    ]


def _num(value: Any) -> str:
    try:
        return f"{float(value):.3f}"
    except (TypeError, ValueError):
        return str(value)
