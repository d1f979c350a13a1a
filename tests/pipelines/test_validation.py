"""Score-table validation in a real ephemeral GX context, with thresholds from the policy."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from pydantic import ValidationError

from pipelines.gate import Verdict, decide
from pipelines.policy import Thresholds, score_checks
from pipelines.validation import run_checks


def _scores(masses: list[float], flag_mass: float = 0.5) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "image_id": [f"img{i}" for i in range(len(masses))],
            "label": ["benign"] * len(masses),
            "prediction": ["benign"] * len(masses),
            "spurious_mass": masses,
            "enrichment": [m / 0.1 for m in masses],
            "flagged": [m > flag_mass for m in masses],
        }
    )


def _validate(df: pd.DataFrame, **thresholds: float):
    return run_checks(df, score_checks(Thresholds(**thresholds)), suite="test-scores")


def test_clean_scores_pass_and_the_result_is_json():
    report = _validate(_scores([0.05, 0.1, 0.2, 0.1]))
    assert report.success and report.failures == []
    assert decide(report).verdict is Verdict.PASSED
    stored = json.loads(json.dumps(report.result))
    assert stored["success"] is True
    assert len(stored["results"]) == len(score_checks(Thresholds()))


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
    [{"max_spurious_mass": 1.5}, {"max_flagged_fraction": -0.1}, {"flag_mass": 0}, {"typo": 1}],
)
def test_thresholds_are_validated(bad):
    with pytest.raises(ValidationError):
        Thresholds(**bad)
