"""Score-table validation in a real ephemeral GX context, with thresholds from the policy."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from pydantic import ValidationError

from pipelines.errors import GateError
from pipelines.evidence.expectations import sanity_checks, score_checks
from pipelines.evidence.gx import run_checks
from pipelines.policy import AuditRules
from pipelines.verdict.decision import Verdict, decide


def _scores(masses: list[float], flag_mass: float = 0.5) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "image_id": [f"img{i}" for i in range(len(masses))],
            "label": ["benign"] * len(masses),
            "prediction": ["benign"] * len(masses),
            "spurious_mass": masses,
            "enrichment": [m / 0.1 for m in masses],
            "rank_accuracy": masses,
            "pointing_hit": [float(m > 0.5) for m in masses],
            "flagged": [m > flag_mass for m in masses],
        }
    )


def _validate(df: pd.DataFrame, **thresholds: float):
    checks = score_checks(AuditRules.from_options(**thresholds), counterfactual=False)
    return run_checks(df, checks, suite="test-scores")


def _with_counterfactuals(
    flips: list[bool | None], probabilities: list[float], lifts: list[float] | None = None
) -> pd.DataFrame:
    df = _scores([0.1] * len(flips))
    df["prediction_without_artifact"] = "benign"
    df["flipped_on_removal"] = pd.array(flips, dtype="boolean")
    df["artifact_class_probability"] = probabilities
    df["artifact_class_lift"] = lifts if lifts is not None else [0.0] * len(flips)
    return df


def test_clean_scores_pass_and_the_result_is_json():
    report = _validate(_scores([0.05, 0.1, 0.2, 0.1]))
    assert report.success and report.failures == []
    assert decide(report).verdict is Verdict.PASSED
    stored = json.loads(json.dumps(report.result))
    assert stored["success"] is True
    assert len(stored["results"]) == len(score_checks(AuditRules(), counterfactual=False))


def test_high_mean_mass_blocks_and_says_by_how_much():
    report = _validate(_scores([0.35, 0.4, 0.3, 0.45]))
    assert not report.success
    assert report.failures == ["spurious_mass mean 0.375 exceeds max_spurious_mass 0.300"]
    decision = decide(report)
    assert decision.verdict is Verdict.BLOCKED
    assert "spurious_mass mean 0.375" in decision.reason


def test_flagged_share_is_bounded_by_max_flagged_fraction():
    masses = [0.0] * 8 + [0.9, 0.9]  # mean 0.18 passes, 20 % flagged does not
    report = _validate(masses and _scores(masses))
    assert report.failures == [
        "flagged fraction 0.200 exceeds max_flagged_fraction 0.100 (flag_mass 0.50)"
    ]
    assert _validate(_scores(masses), max_flagged_fraction=0.2).success


def test_nulls_block_with_the_column_named():
    df = _scores([0.1, float("nan"), 0.1])
    report = _validate(df)
    assert not report.success
    assert any(
        "column 'spurious_mass' has 1 null value(s) (rows [1])" in f for f in report.failures
    )


@pytest.mark.parametrize(
    "bad",
    [
        {"max_spurious_mass": 1.5},
        {"max_flagged_fraction": -0.1},
        {"flag_mass": 0},
        {"max_flip_rate": 2},
        {"max_spurious_lift": -0.5},
        {"max_spurious_score": 0.5},  # replaced by max_spurious_lift: an error, not ignored
        {"max_sanity_correlation": 1.5},
        {"typo": 1},
    ],
)
def test_thresholds_are_validated(bad):
    with pytest.raises((ValidationError, GateError)):
        AuditRules.from_options(**bad)


def test_removal_flip_rate_counts_only_images_with_an_artifact():
    # 1 flip among 3 images with an artifact (the nulls have none): 0.333.
    df = _with_counterfactuals([True, None, None, False, False], [0.1, None, 0.2, 0.1, 0.1])
    checks = score_checks(AuditRules.from_options(max_flip_rate=0.3))
    report = run_checks(df, checks, suite="cf")
    assert report.failures == [
        "removal flip rate 0.333 exceeds max_flip_rate 0.300: predictions change when the "
        "artifact is removed"
    ]
    lenient = AuditRules.from_options(max_flip_rate=0.34)
    assert run_checks(df, score_checks(lenient), suite="cf").success


def test_the_insertion_check_gates_on_the_lift_over_images_that_received_the_artifact():
    nan = float("nan")
    df = _with_counterfactuals([False] * 4, [0.9, nan, 0.8, 0.7], [0.5, nan, 0.3, 0.1])
    report = run_checks(df, score_checks(AuditRules()), suite="cf")
    assert report.failures == [
        "spurious lift 0.300 exceeds max_spurious_lift 0.200: adding the artifact to other "
        "classes' inputs raises P(its class) by that much on average"
    ]
    decision = decide(report)
    assert decision.verdict is Verdict.BLOCKED and "spurious lift 0.300" in decision.reason


def test_a_biased_model_that_pasting_does_not_move_passes_the_insertion_check():
    """P(class) is high before and after pasting (a model leaning to the class): no lift."""
    df = _with_counterfactuals([False] * 4, [0.62, 0.58, 0.6, 0.61], [0.01, -0.02, 0.0, 0.01])
    assert run_checks(df, score_checks(AuditRules()), suite="cf").success


def test_the_replaced_spurious_score_option_says_what_replaced_it():
    with pytest.raises(ValidationError, match="replaced by max_spurious_lift"):
        AuditRules.model_validate({"checks": {"counterfactual": {"max_spurious_score": 0.5}}})


def _sanity(correlations: list[float], threshold: float = 0.5):
    table = pd.DataFrame({"image_id": [str(i) for i in range(len(correlations))]})
    table["spearman"] = correlations
    checks = sanity_checks(AuditRules.from_options(max_sanity_correlation=threshold), steps=8)
    return run_checks(table, checks, suite="sanity")


def test_sanity_failure_makes_the_verdict_inconclusive_and_keeps_every_reason():
    sanity = _sanity([0.95, 0.99, 1.0])
    assert sanity.failures == [
        "sanity check failed: heatmaps barely change when the model's weights are randomised "
        "(mean Spearman 0.980 after 8 layers exceeds max_sanity_correlation 0.500), so they "
        "do not explain this model"
    ]
    blocked_scores = _validate(_scores([0.35, 0.4, 0.3, 0.45]))
    decision = decide(blocked_scores, sanity)
    assert decision.verdict is Verdict.INCONCLUSIVE
    assert decision.reasons[0].startswith("sanity check failed")
    assert "spurious_mass mean 0.375" in decision.reasons[1]
    # Inconclusive even when the scores alone would pass: no promotion on untrusted maps.
    assert decide(_validate(_scores([0.1])), sanity).verdict is Verdict.INCONCLUSIVE


def test_sanity_pass_leaves_the_score_verdict_and_constant_maps_are_undefined():
    passing = _sanity([0.1, -0.2, 0.3])
    assert passing.success
    assert decide(_validate(_scores([0.1])), passing).verdict is Verdict.PASSED
    undefined = _sanity([float("nan")] * 3 + [0.1])
    assert any("3 original heatmap(s) are constant" in f for f in undefined.failures)
    nothing = _sanity([float("nan")] * 3)
    assert "sanity check undefined: no image has an original heatmap" in nothing.failures[0]


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"cam_methods": ("gradcam", "scorecam")}, "unknown method"),
        ({"cam_methods": ("gradcam", "gradcam")}, "lists a method twice"),
        ({"cam_methods": ()}, "at least 1"),
        ({"sanity_images": 1}, "greater than or equal to 2"),
    ],
)
def test_audit_rules_are_validated(bad, message):
    with pytest.raises(ValidationError, match=message):
        AuditRules.from_options(**bad)
    assert AuditRules().gating_method == "gradcam"


def test_attribution_alone_is_settled_by_the_policy_when_behaviour_holds():
    """The explanation sits on the artifact, but removing or adding it moves nothing."""
    from pipelines.evidence.base import settle_attribution

    df = _with_counterfactuals([False] * 4, [0.6] * 4, [0.0, 0.01, -0.01, 0.0])
    df["spurious_mass"] = [0.6, 0.7, 0.5, 0.6]
    df["flagged"] = [True] * 4
    warn = AuditRules()  # the default: attribution_alone "warn"
    raw = run_checks(df, score_checks(warn), suite="cf")
    assert not raw.success and set(raw.failed) == {"spurious_mass mean", "flagged fraction"}
    settled, notes = settle_attribution(raw, warn, behaviour_ran=True)
    assert settled.success and settled.failures == []
    assert len(notes) == 2 and any(
        n.startswith("attribution and behaviour disagree: spurious_mass mean 0.600 exceeds")
        for n in notes
    )
    block = AuditRules.from_options(attribution_alone="block")
    assert settle_attribution(raw, block, behaviour_ran=True) == (raw, ())
    # Without behavioural evidence, or when behaviour fails too, attribution still blocks.
    assert settle_attribution(raw, warn, behaviour_ran=False) == (raw, ())
    df["artifact_class_lift"] = [0.5] * 4
    both = run_checks(df, score_checks(warn), suite="cf")
    assert settle_attribution(both, warn, behaviour_ran=True) == (both, ())


def _discovery(statuses: list[str]) -> pd.DataFrame:
    n = len(statuses)
    return pd.DataFrame(
        {
            "rank": list(range(1, n + 1)),
            "class": ["malignant"] * n,
            "size": [12] * n,
            "evidence": ["placement"] * n,
            "flip_rate": [0.75] * n,
            "pull": [0.4] * n,
            "pull_ci_low": [0.3] * n,
            "pull_ci_high": [0.5] * n,
            "decided_share": [0.6] * n,
            "status": statuses,
        }
    )


def test_discovery_blocks_only_on_a_confirmed_strategy_and_names_it():
    from pipelines.evidence.expectations import discovery_checks

    rules = AuditRules.from_options(discovery=True)
    quiet = _discovery(["ok", "suspicious", "ok"])
    assert run_checks(quiet, discovery_checks(rules, quiet), suite="d").success
    found = _discovery(["ok", "confirmed", "suspicious"])
    report = run_checks(found, discovery_checks(rules, found), suite="d")
    rule = rules.checks.discovery
    assert report.failed == ["no confirmed strategy"]
    assert report.failures == [
        "discovery found an unlabelled shortcut: strategy #2 of class 'malignant' (12 images; "
        f"suspicious by placement > {rule.max_suspicion:.2f}): filling its proposed region "
        f"flips 0.750 of its predictions (max_discovery_flip_rate {rule.max_flip_rate:.2f}) "
        "and pasting it onto other classes raises P(class) by 0.400 [95% CI 0.300, 0.500] "
        f"(max_discovery_lift {rule.max_lift:.2f}); it decides 0.600 of the class's predictions"
    ]
    two = _discovery(["confirmed", "confirmed"])
    [both] = run_checks(two, discovery_checks(rules, two), suite="d").failures
    assert both.count("strategy #") == 2 and "predictions; strategy #2 of class" in both


@pytest.mark.parametrize(
    ("option", "column", "at_bound", "over"),
    [
        ("max_spurious_mass", "spurious_mass", 0.25, 0.26),
        ("max_spurious_lift", "artifact_class_lift", 0.25, 0.26),
    ],
)
def test_a_mean_exactly_at_its_bound_passes_and_just_over_it_blocks(option, column, at_bound, over):
    """The bounds are inclusive (<=), on both sides of the comparison."""
    rules = AuditRules.from_options(**{option: 0.25})
    for value, passes in ((at_bound, True), (over, False), (-0.5 if "lift" in column else 0, True)):
        df = _with_counterfactuals([False] * 4, [0.5] * 4, [0.0] * 4)
        df[column] = [value] * 4
        report = run_checks(df, score_checks(rules), suite="bound")
        assert report.success is passes, (value, report.failures)


@pytest.mark.parametrize(
    ("option", "column"),
    [("max_flagged_fraction", "flagged"), ("max_flip_rate", "flipped_on_removal")],
)
def test_a_share_exactly_at_its_bound_passes_and_one_more_row_blocks(option, column):
    rules = AuditRules.from_options(**{option: 0.25})
    for flagged, passes in ((2, True), (3, False), (0, True)):
        df = _with_counterfactuals([False] * 8, [0.5] * 8)
        values = [True] * flagged + [False] * (8 - flagged)
        df[column] = pd.array(values, dtype="boolean") if column != "flagged" else values
        report = run_checks(df, score_checks(rules), suite="share")
        assert report.success is passes, (flagged, report.failures)


def test_the_sanity_bound_is_inclusive_and_a_constant_map_is_undefined():
    at = _sanity([0.5, 0.5])
    assert at.success
    over = _sanity([0.5, 0.52])
    assert over.failures and "mean Spearman 0.510" in over.failures[0]
    assert "after 8 layers exceeds max_sanity_correlation 0.500" in over.failures[0]


def test_a_negative_mean_mass_is_an_error_in_the_scores_not_a_pass():
    report = _validate(_scores([-0.2, -0.1, 0.0]))
    assert report.failed == ["spurious_mass mean"]
    assert report.failures == ["spurious_mass mean -0.100 exceeds max_spurious_mass 0.300"]


def test_the_sanity_checks_are_named_and_tolerate_a_minority_of_constant_maps():
    over = _sanity([0.9, 0.8])
    assert over.failed == ["sanity spearman mean"]
    one_constant = _sanity([0.1, float("nan"), 0.2, 0.0])  # 3 of 4 defined: enough
    assert one_constant.success
    half = _sanity([0.1, float("nan"), float("nan"), float("nan")])
    assert half.failed == ["sanity spearman not null"]
    assert half.failures == [
        "sanity check undefined: 3 original heatmap(s) are constant, so no correlation can be "
        "computed"
    ]


def test_every_check_describes_a_result_that_lacks_its_numbers():
    """A GX result without counts or values still gives the person a whole sentence."""
    from pipelines.evidence.columns import SCORE_COLUMNS
    from pipelines.evidence.expectations import discovery_checks

    rules = AuditRules()
    described = {
        check.name: check.describe({})
        for check in score_checks(rules)
        + sanity_checks(rules, steps=8)
        + discovery_checks(AuditRules.from_options(discovery=True), None)
    }
    assert described == {
        "spurious_mass mean": "spurious_mass mean None exceeds max_spurious_mass 0.300",
        "flagged fraction": (
            "flagged fraction nan exceeds max_flagged_fraction 0.100 (flag_mass 0.50)"
        ),
        "removal flip rate": (
            "removal flip rate nan exceeds max_flip_rate 0.200: predictions change when the "
            "artifact is removed"
        ),
        "spurious lift": (
            "spurious lift None exceeds max_spurious_lift 0.200: adding the artifact to other "
            "classes' inputs raises P(its class) by that much on average"
        ),
        **{
            f"{column} not null": (
                f"column {column!r} has ? null value(s) (rows []): a score could not be computed"
            )
            for column in SCORE_COLUMNS
        },
        "sanity spearman mean": (
            "sanity check undefined: no image has an original heatmap that is not constant"
        ),
        "sanity spearman not null": (
            "sanity check undefined: ? original heatmap(s) are constant, so no correlation can "
            "be computed"
        ),
        "no confirmed strategy": "discovery found an unlabelled shortcut: (no rows)",
    }


def test_numbers_in_reasons_have_three_decimals_and_anything_else_reads_as_is():
    from pipelines.evidence.expectations import _num

    assert (_num(0.12345), _num(2), _num("0.5")) == ("0.123", "2.000", "0.500")
    assert (_num("n/a"), _num(None), _num([1])) == ("n/a", "None", "[1]")


def test_which_checks_apply_to_texts_and_to_audit_sets_without_regions():
    from pipelines.evidence.columns import TEXT_SCORE_COLUMNS

    names = [c.name for c in score_checks(AuditRules(), required=TEXT_SCORE_COLUMNS)]
    # Attention, rollout and precision@k may be undefined for a text: never a null check.
    assert names == [
        "spurious_mass mean", "flagged fraction", "removal flip rate", "spurious lift",
        "text_id not null", "label not null", "prediction not null", "spurious_mass not null",
        "flagged not null",
    ]  # fmt: skip
    without = [c.name for c in score_checks(AuditRules(), regions=False)]
    assert without == [
        "image_id not null", "label not null", "prediction not null", "spurious_mass not null",
        "enrichment not null", "rank_accuracy not null", "pointing_hit not null",
        "flagged not null",
    ]  # fmt: skip


def test_a_null_check_names_the_first_five_rows():
    report = _validate(_scores([float("nan")] * 7 + [0.1]))
    [nulls] = [f for f in report.failures if f.startswith("column 'spurious_mass'")]
    assert nulls == (
        "column 'spurious_mass' has 7 null value(s) (rows [0, 1, 2, 3, 4]): a score could not "
        "be computed"
    )
