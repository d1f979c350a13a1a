"""The gate as a Prefect flow: each stage a task, the verdict the flow's final state.

``passed`` ends the run Completed; ``blocked`` and ``error`` end it Failed with
a message naming the failing check or the cause. Either way the outcome is the
run's result, so callers (the CLI, a schedule, a test) read one object.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.states import Failed, State
from pydantic import ValidationError

from pipelines.audit import AuditResult, audit_images
from pipelines.audit_set import AuditSet
from pipelines.audit_set import load_audit_set as read_audit_set
from pipelines.errors import GateError
from pipelines.gate import DEFAULT_ALIAS, GateDecision, Verdict, decide, record_verdict
from pipelines.policy import Thresholds, score_checks
from pipelines.tracking import (
    LoadedModel,
    configure_tracking,
    load_model_version,
    log_audit_evidence,
)
from pipelines.validation import ValidationReport, run_checks
from xai_checks.errors import XAICheckError

__all__ = ["EXPECTED_ERRORS", "GateOutcome", "xai_gate"]

EXPECTED_ERRORS: tuple[type[BaseException], ...] = (GateError, XAICheckError, ValidationError)
"""Errors whose message says it all: reported without a traceback."""


@dataclass(frozen=True)
class GateOutcome:
    model_name: str
    version: str
    verdict: Verdict
    reasons: list[str] = field(default_factory=list)
    run_id: str | None = None
    promoted: bool = False
    alias: str = DEFAULT_ALIAS
    summary: dict[str, float | int | str] = field(default_factory=dict)

    @property
    def message(self) -> str:
        reason = "; ".join(self.reasons) if self.reasons else "all checks passed"
        return f"{self.model_name} v{self.version} {self.verdict.value}: {reason}"


@task(name="load-model", cache_policy=NO_CACHE)
def load_model(model_name: str, version: str) -> LoadedModel:
    return load_model_version(model_name, version)


@task(name="load-audit-set", cache_policy=NO_CACHE)
def load_audit_set(manifest: Path, class_names: tuple[str, ...] | None) -> AuditSet:
    return read_audit_set(manifest, class_names=class_names)


@task(name="gradcam-audit", cache_policy=NO_CACHE)
def gradcam_audit(
    model: LoadedModel,
    audit_set: AuditSet,
    thresholds: Thresholds,
    target_layer: str | None,
    batch_size: int,
) -> AuditResult:
    return audit_images(
        model.module,
        audit_set.images,
        audit_set.labels,
        audit_set.masks,
        image_ids=audit_set.image_ids,
        class_names=audit_set.class_names,
        thresholds=thresholds,
        target_layer=target_layer,
        batch_size=batch_size,
    )


@task(name="validate-scores", cache_policy=NO_CACHE)
def validate_scores(audit: AuditResult, thresholds: Thresholds) -> ValidationReport:
    return run_checks(audit.scores, score_checks(thresholds), suite="xai-gate-scores")


@task(name="log-evidence", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2)
def log_evidence(
    audit: AuditResult,
    validation: ValidationReport,
    model: LoadedModel,
    thresholds: Thresholds,
    manifest: Path,
) -> str:
    params = {
        "model_uri": model.uri,
        "audit_set": manifest,
        "n_images": audit.summary["n_images"],
        "target_layer": audit.summary["target_layer"],
        **thresholds.model_dump(),
    }
    verdict = "passed" if validation.success else "blocked"
    return log_audit_evidence(
        audit,
        validation,
        model_name=model.name,
        model_version=model.version,
        params=params,
        overlay_title=f"{model.name} v{model.version}: {verdict}",
    )


@task(name="decide-and-promote", cache_policy=NO_CACHE)
def decide_and_promote(
    model: LoadedModel, validation: ValidationReport, run_id: str, alias: str
) -> tuple[GateDecision, bool]:
    decision = decide(validation)
    promoted = record_verdict(model.name, model.version, decision, run_id=run_id, alias=alias)
    return decision, promoted


@flow(name="xai-gate", log_prints=True)
def xai_gate(
    model_name: str,
    version: str,
    audit_set: Path,
    max_spurious_mass: float = 0.30,
    max_flagged_fraction: float = 0.10,
    flag_mass: float = 0.50,
    alias: str = DEFAULT_ALIAS,
    target_layer: str | None = None,
    batch_size: int = 32,
    tracking_uri: str | None = None,
) -> GateOutcome | State:
    """Audit ``models:/model_name/version`` on ``audit_set`` and gate its promotion."""
    logger = get_run_logger()
    version = str(version)
    try:
        thresholds = Thresholds(
            max_spurious_mass=max_spurious_mass,
            max_flagged_fraction=max_flagged_fraction,
            flag_mass=flag_mass,
        )
        configure_tracking(tracking_uri)
        model = load_model(model_name, version)
        audit_data = load_audit_set(Path(audit_set), model.class_names)
        audit = gradcam_audit(model, audit_data, thresholds, target_layer, batch_size)
        validation = validate_scores(audit, thresholds)
        run_id = log_evidence(audit, validation, model, thresholds, Path(audit_set))
        decision, promoted = decide_and_promote(model, validation, run_id, alias)
    except EXPECTED_ERRORS as exc:
        outcome = GateOutcome(model_name, version, Verdict.ERROR, [str(exc)], alias=alias)
        logger.error(outcome.message)
        return Failed(message=outcome.message, data=outcome)

    outcome = GateOutcome(
        model_name,
        version,
        decision.verdict,
        decision.reasons,
        run_id=run_id,
        promoted=promoted,
        alias=alias,
        summary=audit.summary,
    )
    if decision.verdict is Verdict.PASSED:
        logger.info("%s; alias %r now points to v%s", outcome.message, alias, version)
        return outcome
    logger.warning(outcome.message)
    return Failed(message=outcome.message, data=outcome)
