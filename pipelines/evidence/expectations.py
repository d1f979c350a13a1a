"""The Great Expectations checks a gate's tables must meet, generated from the policy's rules.

The bounds come from :class:`~pipelines.policy.AuditRules` only, so the GX
suites and the verdict cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pipelines.evidence.columns import SCORE_COLUMNS
from pipelines.evidence.gx import Check
from pipelines.policy.schema import AuditRules

__all__ = ["ATTRIBUTION_CHECKS", "discovery_checks", "sanity_checks", "score_checks"]

ATTRIBUTION_CHECKS = frozenset({"spurious_mass mean", "flagged fraction"})
"""The score checks that read where the explanation sits, not what the predictions do."""


def score_checks(
    rules: AuditRules,
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
    h, cf = rules.checks.heatmaps, rules.checks.counterfactual

    def mean_mass(gxe: Any) -> Any:
        return gxe.ExpectColumnMeanToBeBetween(
            column="spurious_mass", min_value=0.0, max_value=h.max_spurious_mass
        )

    def few_flagged(gxe: Any) -> Any:
        return gxe.ExpectColumnValuesToBeInSet(
            column="flagged", value_set=[False], mostly=1.0 - h.max_flagged_fraction
        )

    def few_flips(gxe: Any) -> Any:
        return gxe.ExpectColumnValuesToBeInSet(
            column="flipped_on_removal", value_set=[False], mostly=1.0 - cf.max_flip_rate
        )

    def low_spurious_lift(gxe: Any) -> Any:
        # Upper bound only: a lift (a difference of probabilities) is never below -1.
        return gxe.ExpectColumnMeanToBeBetween(
            column="artifact_class_lift", max_value=cf.max_spurious_lift
        )

    checks = [
        Check(
            "spurious_mass mean",
            mean_mass,
            lambda r: (
                f"spurious_mass mean {_num(r.get('observed_value'))} exceeds "
                f"max_spurious_mass {h.max_spurious_mass:.3f}"
            ),
        ),
        Check(
            "flagged fraction",
            few_flagged,
            lambda r: (
                f"flagged fraction {_num(r.get('unexpected_percent', float('nan')) / 100)} exceeds "
                f"max_flagged_fraction {h.max_flagged_fraction:.3f} "
                f"(flag_mass {h.flag_mass:.2f})"
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
                    f"exceeds max_flip_rate {cf.max_flip_rate:.3f}: predictions change when the "
                    "artifact is removed"
                ),
            ),
            Check(
                "spurious lift",
                low_spurious_lift,
                lambda r: (
                    f"spurious lift {_num(r.get('observed_value'))} exceeds max_spurious_lift "
                    f"{cf.max_spurious_lift:.3f}: adding the artifact to other classes' inputs "
                    "raises P(its class) by that much on average"
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


def sanity_checks(rules: AuditRules, *, steps: int) -> list[Check]:
    """The expectation on the sanity table: maps must change when the weights are randomised."""
    bound = rules.sanity.max_correlation

    def decorrelates(gxe: Any) -> Any:
        # Upper bound only: a Spearman correlation is never below -1.
        return gxe.ExpectColumnMeanToBeBetween(column="spearman", max_value=bound)

    return [
        Check(
            "sanity spearman mean",
            decorrelates,
            lambda r: (
                "sanity check undefined: no image has an original heatmap that is not constant"
                if r.get("observed_value") is None
                else f"sanity check failed: heatmaps barely change when the model's weights "
                f"are randomised (mean Spearman {_num(r.get('observed_value'))} after {steps} "
                f"layers exceeds max_sanity_correlation {bound:.3f}), so "
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


def discovery_checks(rules: AuditRules, table: Any) -> list[Check]:
    """The expectation on the discovery table (``DISCOVERY_COLUMNS``): no confirmed shortcut.

    The failure names each confirmed strategy: its rank, class, size, suspicion and flip rate.
    """
    rule = rules.checks.discovery

    def describe(result: dict[str, Any]) -> str:
        rows = list(result.get("unexpected_index_list") or [])
        confirmed = [
            f"strategy #{table.at[i, 'rank']} of class {table.at[i, 'class']!r} "
            f"({table.at[i, 'size']} images; suspicious by {table.at[i, 'evidence']} > "
            f"{rule.max_suspicion:.2f}): filling its proposed region flips "
            f"{_num(table.at[i, 'flip_rate'])} of its predictions "
            f"(max_discovery_flip_rate {rule.max_flip_rate:.2f}) and pasting it onto other "
            f"classes raises P(class) by {_num(table.at[i, 'pull'])} "
            f"[95% CI {_num(table.at[i, 'pull_ci_low'])}, {_num(table.at[i, 'pull_ci_high'])}] "
            f"(max_discovery_lift {rule.max_lift:.2f}); it decides "
            f"{_num(table.at[i, 'decided_share'])} of the class's predictions"
            for i in rows
        ]
        return "discovery found an unlabelled shortcut: " + "; ".join(confirmed or ["(no rows)"])

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
