"""The verdict and what it does to the registry.

The verdict is written to the model version as tags, and the protected alias
moves only on ``passed``. Anything else leaves the alias where it was.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from pipelines.validation import ValidationReport

__all__ = ["DEFAULT_ALIAS", "GateDecision", "Verdict", "decide", "record_verdict"]

DEFAULT_ALIAS = "champion"
TAG_VERDICT = "xai_gate.verdict"
TAG_RUN_ID = "xai_gate.run_id"
TAG_REASON = "xai_gate.reason"
TAG_CHECKS = "xai_gate.checks"


class Verdict(StrEnum):
    PASSED = "passed"
    BLOCKED = "blocked"
    INCONCLUSIVE = "inconclusive"
    """The explanations failed their sanity check: no verdict on them, and no promotion."""
    ERROR = "error"


@dataclass(frozen=True)
class GateDecision:
    verdict: Verdict
    reasons: list[str] = field(default_factory=list)

    @property
    def reason(self) -> str:
        return "; ".join(self.reasons) if self.reasons else "all expectations met"


def decide(scores: ValidationReport, sanity: ValidationReport | None = None) -> GateDecision:
    """Passed only when every expectation held; the reasons name every failed check.

    A failed sanity check makes the verdict ``inconclusive`` whatever the
    scores say: heatmaps that do not depend on the weights are no evidence
    either way, and "not blocked" must never read as "passed".
    """
    reasons = list(scores.failures) or ([] if scores.success else ["score validation failed"])
    if sanity is not None and not sanity.success:
        sanity_reasons = list(sanity.failures) or ["sanity validation failed"]
        return GateDecision(Verdict.INCONCLUSIVE, sanity_reasons + reasons)
    if scores.success:
        return GateDecision(Verdict.PASSED)
    return GateDecision(Verdict.BLOCKED, reasons)


def record_verdict(
    name: str,
    version: str,
    decision: GateDecision,
    *,
    run_id: str | None,
    alias: str = DEFAULT_ALIAS,
    checks: tuple[str, ...] = (),
) -> bool:
    """Tag the model version with the verdict; set ``alias`` only when it passed.

    Returns whether the alias was moved. Tags are written first, so a version
    that holds the alias always carries the verdict that put it there, and
    ``checks`` (tagged ``xai_gate.checks``) says which lines of evidence ran.
    """
    from mlflow import MlflowClient

    client = MlflowClient()
    client.set_model_version_tag(name, version, TAG_VERDICT, decision.verdict.value)
    client.set_model_version_tag(name, version, TAG_RUN_ID, run_id or "")
    client.set_model_version_tag(name, version, TAG_REASON, decision.reason[:4900])
    if checks:  # which lines of evidence the verdict rests on, e.g. heatmaps only
        client.set_model_version_tag(name, version, TAG_CHECKS, ",".join(checks))
    if decision.verdict is not Verdict.PASSED:
        return False
    client.set_registered_model_alias(name, alias, version)
    return True
