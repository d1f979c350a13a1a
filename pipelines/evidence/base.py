"""What every line of evidence offers the gate, images and text alike.

The flow, the MLflow evaluator and the report read evidence only through
:class:`Evidence`, so a new modality is one new class, not a new branch in
each of them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

from pipelines.evidence.expectations import ATTRIBUTION_CHECKS
from pipelines.evidence.gx import SuiteResult

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

    from pipelines.policy.schema import AuditRules
    from pipelines.stages.precision import PrecisionEvidence

__all__ = ["Evidence", "EvidenceValidation", "headline", "settle_attribution"]


@dataclass(frozen=True)
class EvidenceValidation:
    """Every expectation suite of one gate run: the score table's, sanity's, discovery's."""

    scores: SuiteResult
    sanity: SuiteResult | None
    discovery: SuiteResult | None = None
    notes: tuple[str, ...] = ()
    """Findings that do not block, e.g. attribution and behaviour disagreeing (warnings)."""
    uninformative: tuple[str, ...] = ()
    """Why the audit evidence is about nothing (accuracy at chance, one prediction, blank
    inputs); the policy's ``checks.uninformative`` decides what that means for a pass."""

    @property
    def gating(self) -> SuiteResult:
        """What decides passed or blocked: the score table's checks and the discovery table's."""
        if self.discovery is None:
            return self.scores
        return SuiteResult(
            success=self.scores.success and self.discovery.success,
            failures=[*self.scores.failures, *self.discovery.failures],
            result=self.scores.result,
        )

    @property
    def success(self) -> bool:
        return self.gating.success and (self.sanity is None or self.sanity.success)

    def documents(self) -> dict[str, Any]:
        docs = {"xai/validation.json": self.scores.result}
        if self.sanity is not None:
            docs["xai/validation_sanity.json"] = self.sanity.result
        if self.discovery is not None:
            docs["xai/validation_discovery.json"] = self.discovery.result
        return docs


@runtime_checkable
class Evidence(Protocol):
    """All lines of evidence of one gate run: what is validated, decided on, logged and drawn."""

    modality: Literal["image", "text"]
    evidence_lines: tuple[str, ...]
    """The checks the verdict rests on (the ``xai_gate.checks`` tag)."""
    precision: PrecisionEvidence | None
    """The precision probe, when the policy asked for bf16 or fp16."""

    @property
    def regions(self) -> bool:
        """Whether spurious regions were known, so the mass and counterfactual checks gate."""
        ...

    @property
    def summary(self) -> dict[str, float | int | str]: ...

    def validate(self, rules: AuditRules) -> EvidenceValidation: ...

    def metrics(self) -> dict[str, float]: ...

    def warnings(self) -> list[str]: ...

    def score_table(self) -> pd.DataFrame: ...

    def tables(self) -> dict[str, pd.DataFrame]: ...

    def series(self) -> dict[str, list[float]]: ...

    def report_tables(self) -> dict[str, pd.DataFrame]: ...

    def figures(self, rules: AuditRules, title: str) -> dict[str, Callable[[], Figure]]: ...

    def pages(self) -> dict[str, str]: ...


def settle_attribution(
    scores: SuiteResult, rules: AuditRules, *, behaviour_ran: bool
) -> tuple[SuiteResult, tuple[str, ...]]:
    """Attribution against behaviour: the policy's ``attribution_alone`` decides.

    When the only failed checks are attribution ones (where the explanation
    sits) while removal and insertion ran and held (the predictions do not
    follow the artifact), ``warn`` passes the scores with one note per failure
    and ``block`` leaves them failed. Any other failure is left as it is.
    """
    only_attribution = bool(scores.failed) and set(scores.failed) <= ATTRIBUTION_CHECKS
    if scores.success or not behaviour_ran or not only_attribution:
        return scores, ()
    if rules.checks.attribution_alone == "block":
        return scores, ()
    notes = tuple(
        f"attribution and behaviour disagree: {failure}, but removing and adding the "
        "artifact moved the predictions within bounds (attribution_alone: warn)"
        for failure in scores.failures
    )
    return replace(scores, success=True, failures=[], failed=[]), notes


def headline(evidence: Evidence) -> dict[str, float]:
    """The counterfactual, sanity and discovery numbers a person reads first, one name each."""
    metrics = evidence.metrics()
    out = {}
    for prefix in ("counterfactual", "text_counterfactual"):
        for name in ("removal_flip_rate", "spurious_lift"):
            if f"{prefix}.{name}" in metrics:
                out[f"counterfactual.{name}"] = metrics[f"{prefix}.{name}"]
    for name in (
        "sanity.final_spearman",
        "discovery.top_suspicion",
        "discovery.top_flip_rate",
        "discovery.top_pull",
    ):
        if name in metrics:
            out[name] = metrics[name]
    return out
