"""``decide``: the verdict from the suites' results, every branch with its exact reasons."""

from __future__ import annotations

import pytest

from pipelines.evidence.gx import SuiteResult
from pipelines.verdict.decision import GateDecision, Verdict, decide

PASSED = SuiteResult(success=True)
BLOCKED = SuiteResult(success=False, failures=["spurious_mass mean 0.4 exceeds 0.3"])
SANE = SuiteResult(success=True)
INSANE = SuiteResult(success=False, failures=["sanity check failed: 0.9"])


def test_a_pass_has_no_reasons_and_reads_all_expectations_met():
    decision = decide(PASSED, SANE, warnings=["look at strategy #2"])
    assert decision == GateDecision(Verdict.PASSED, [], ["look at strategy #2"])
    assert decision.reason == "all expectations met"


def test_a_failed_suite_without_failure_lines_still_blocks_and_says_so():
    """GX may fail a suite without a describable expectation: never read as a pass."""
    silent = SuiteResult(success=False)
    assert decide(silent) == GateDecision(Verdict.BLOCKED, ["score validation failed"], [])
    assert decide(PASSED, SuiteResult(success=False)) == GateDecision(
        Verdict.INCONCLUSIVE, ["sanity validation failed"], []
    )


def test_failed_sanity_is_inconclusive_unless_the_policy_blocks_it():
    assert decide(BLOCKED, INSANE) == GateDecision(
        Verdict.INCONCLUSIVE,
        ["sanity check failed: 0.9", "spurious_mass mean 0.4 exceeds 0.3"],
        [],
    )
    assert decide(PASSED, INSANE, inconclusive="block").verdict is Verdict.BLOCKED
    assert decide(PASSED, INSANE, inconclusive="hold").verdict is Verdict.INCONCLUSIVE
    assert decide(PASSED, INSANE).verdict is Verdict.INCONCLUSIVE  # the default holds


@pytest.mark.parametrize(
    ("on_uninformative", "verdict", "reasons", "warnings"),
    [
        (None, Verdict.INCONCLUSIVE, ["uninformative evidence: chance"], ["w"]),  # default
        ("inconclusive", Verdict.INCONCLUSIVE, ["uninformative evidence: chance"], ["w"]),
        ("block", Verdict.BLOCKED, ["uninformative evidence: chance"], ["w"]),
        ("warn", Verdict.PASSED, [], ["w", "uninformative evidence: chance"]),
    ],
)
def test_a_pass_on_uninformative_evidence_is_the_policys_call(
    on_uninformative, verdict, reasons, warnings
):
    options = {} if on_uninformative is None else {"on_uninformative": on_uninformative}
    decision = decide(PASSED, SANE, warnings=["w"], uninformative=["chance"], **options)
    assert decision == GateDecision(verdict, reasons, warnings)


def test_a_block_stands_on_its_own_with_uninformative_reasons_as_warnings():
    decision = decide(BLOCKED, SANE, uninformative=["chance"], on_uninformative="warn")
    assert decision == GateDecision(
        Verdict.BLOCKED, ["spurious_mass mean 0.4 exceeds 0.3"], ["uninformative evidence: chance"]
    )


def test_an_unknown_choice_is_an_error_not_a_quiet_default():
    with pytest.raises(ValueError, match=r"inconclusive must be one of \('hold', 'block'\)"):
        decide(PASSED, INSANE, inconclusive="blok")
    with pytest.raises(ValueError, match=r"on_uninformative must be one of"):
        decide(PASSED, SANE, uninformative=["chance"], on_uninformative="warning")


def test_failed_sanity_keeps_the_warnings_and_the_uninformative_reasons():
    decision = decide(PASSED, INSANE, warnings=["w"], uninformative=["chance"])
    assert decision == GateDecision(
        Verdict.INCONCLUSIVE, ["sanity check failed: 0.9"], ["w", "uninformative evidence: chance"]
    )
