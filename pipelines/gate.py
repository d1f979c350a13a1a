"""The verdict and what it does to the registry.

The verdict is written to the model version as tags, signed when
``XAI_GATE_SECRET`` is set (see ``pipelines.signing``), and the protected alias
moves only on ``passed``. Anything else leaves the alias where it was.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from pipelines.signing import (
    TAG_POLICY_HASH,
    TAG_RUN_ID,
    TAG_SIGNATURE,
    TAG_VERDICT,
    secret_from_env,
    sign_verdict,
)
from pipelines.validation import ValidationReport

__all__ = ["DEFAULT_ALIAS", "GateDecision", "Verdict", "decide", "record_verdict"]

DEFAULT_ALIAS = "champion"
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


def decide(
    scores: ValidationReport,
    sanity: ValidationReport | None = None,
    *,
    inconclusive: str = "hold",
) -> GateDecision:
    """Passed only when every expectation held; the reasons name every failed check.

    A failed sanity check makes the verdict ``inconclusive`` whatever the
    scores say: heatmaps that do not depend on the weights are no evidence
    either way, and "not blocked" must never read as "passed". A policy may
    say ``inconclusive: block`` to record such runs as ``blocked`` instead.
    """
    reasons = list(scores.failures) or ([] if scores.success else ["score validation failed"])
    if sanity is not None and not sanity.success:
        sanity_reasons = list(sanity.failures) or ["sanity validation failed"]
        verdict = Verdict.BLOCKED if inconclusive == "block" else Verdict.INCONCLUSIVE
        return GateDecision(verdict, sanity_reasons + reasons)
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
    policy_hash: str = "",
) -> bool:
    """Tag the model version with the verdict; set ``alias`` only when it passed.

    Returns whether the alias was moved. Tags are written first, so a version
    that holds the alias always carries the verdict that put it there, and
    ``checks`` (tagged ``xai_gate.checks``) says which lines of evidence ran.
    With ``XAI_GATE_SECRET`` set the verdict is signed over (model, version,
    verdict, run id, policy hash); a guarded registry accepts only that.
    """
    from mlflow import MlflowClient

    client = MlflowClient()
    version = str(version)
    secret = secret_from_env()
    signature = (
        sign_verdict(
            secret,
            model=name,
            version=version,
            verdict=decision.verdict.value,
            run_id=run_id or "",
            policy_hash=policy_hash,
        )
        if secret
        else ""
    )
    # The verdict tag goes last: a run killed while writing leaves either no verdict (the
    # sweeper gates the version again) or the old verdict beside a signature that no
    # longer matches it (a guarded registry refuses to promote), never a fresh-looking pass.
    client.set_model_version_tag(name, version, TAG_RUN_ID, run_id or "")
    client.set_model_version_tag(name, version, TAG_REASON, decision.reason[:4900])
    client.set_model_version_tag(name, version, TAG_POLICY_HASH, policy_hash)
    if checks:  # which lines of evidence the verdict rests on, e.g. heatmaps only
        client.set_model_version_tag(name, version, TAG_CHECKS, ",".join(checks))
    client.set_model_version_tag(name, version, TAG_SIGNATURE, signature)
    client.set_model_version_tag(name, version, TAG_VERDICT, decision.verdict.value)
    if decision.verdict is not Verdict.PASSED:
        return False
    client.set_registered_model_alias(name, alias, version)
    return True
