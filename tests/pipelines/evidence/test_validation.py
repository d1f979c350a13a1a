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
