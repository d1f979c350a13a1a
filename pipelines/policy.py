"""Gate thresholds and the Great Expectations checks derived from them.

The thresholds live here and only here: the score-table expectations are
generated from them, so the GX suite and the verdict cannot drift apart.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from pipelines.validation import Check

__all__ = ["SCORE_COLUMNS", "Thresholds", "score_checks"]

SCORE_COLUMNS = ("image_id", "label", "prediction", "spurious_mass", "enrichment", "flagged")


class Thresholds(BaseModel):
    """When a model counts as relying on the spurious region."""

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


def score_checks(thresholds: Thresholds) -> list[Check]:
    """The expectations a score table must meet for the gate to pass."""
    t = thresholds

    def mean_mass(gxe: Any) -> Any:
        return gxe.ExpectColumnMeanToBeBetween(
            column="spurious_mass", min_value=0.0, max_value=t.max_spurious_mass
        )

    def few_flagged(gxe: Any) -> Any:
        return gxe.ExpectColumnValuesToBeInSet(
            column="flagged", value_set=[False], mostly=1.0 - t.max_flagged_fraction
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
    for column in SCORE_COLUMNS:
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


def _num(value: Any) -> str:
    try:
        return f"{float(value):.3f}"
    except (TypeError, ValueError):
        return str(value)
