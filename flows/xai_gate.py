"""The gate as a Prefect flow: each stage a task, the verdict the flow's final state.

``passed`` ends the run Completed; ``blocked``, ``inconclusive`` and ``error``
end it Failed with a message naming every failing check or the cause. Either way the outcome is the
run's result, so callers (the CLI, a schedule, a test) read one object.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.states import Failed, State
from pydantic import ValidationError

from flows._reporting import ask_for_approval, publish_summary, record_error_verdict, tag_error
from flows.locking import LockTimeout, version_lock
from pipelines import collect as stages
from pipelines.audit import AuditResult, merge_audits, shard_bounds
from pipelines.audit_set import AuditSet
from pipelines.audit_set import load_audit_set as read_audit_set
from pipelines.counterfactual import CounterfactualEvidence
from pipelines.errors import GateError
from pipelines.evidence import GateEvidence, TextGateEvidence, Validation
from pipelines.gate import (
    DEFAULT_ALIAS,
    GateDecision,
    Verdict,
    decide,
    file_digest,
    prior_verdict,
    record_verdict,
)
from pipelines.gate_policy import (
    Checks,
    CounterfactualChecks,
    DiscoveryChecks,
    GatePolicy,
    HeatmapChecks,
    SanityRule,
    load_policy,
)
from pipelines.policy import AuditPlan, Thresholds
from pipelines.report import render_report
from pipelines.sanity import SanityEvidence
from pipelines.signing import SECRET_ENV, secret_from_env
from pipelines.tracking import (
    LoadedModel,
    close_orphaned_runs,
    configure_tracking,
    evidence_logging,
    load_model_version,
    log_gate_evidence,
)
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
    reused: bool = False
    """The version already had this verdict under the same policy and audit set."""
    recorded: bool = False
    """The version's verdict is written (or, after a lock timeout, is another gate's to
    write), so ``on_failure`` must not tag it ``error``."""
    warnings: list[str] = field(default_factory=list)
    """Findings that did not block, e.g. a suspicious strategy filling did not confirm."""

    @property
    def message(self) -> str:
        reason = "; ".join(self.reasons) if self.reasons else "all checks passed"
        again = " [reused: already gated under this policy and audit set]" if self.reused else ""
        notes = "".join(f"\n  warning: {warning}" for warning in self.warnings)
        return f"{self.model_name} v{self.version} {self.verdict.value}: {reason}{again}{notes}"


def _headline(evidence: GateEvidence | TextGateEvidence) -> dict[str, float]:
    """The counterfactual, sanity and discovery numbers a person reads first, one name each."""
    metrics = evidence.metrics()
    out = {}
    for prefix in ("counterfactual", "text_counterfactual"):
        for name in ("removal_flip_rate", "spurious_score"):
            if f"{prefix}.{name}" in metrics:
                out[f"counterfactual.{name}"] = metrics[f"{prefix}.{name}"]
    for name in ("sanity.final_spearman", "discovery.top_suspicion", "discovery.top_flip_rate"):
        if name in metrics:
            out[name] = metrics[name]
    return out


def _describe(error: BaseException) -> str:
    """One line per problem: pydantic's multi-line report becomes 'field: message'."""
    if isinstance(error, ValidationError):
        problems = "; ".join(
            f"{'.'.join(str(part) for part in e['loc']) or 'options'}: {e['msg']}"
            for e in error.errors()
        )
        return f"invalid gate options: {problems}"
    if isinstance(error, EXPECTED_ERRORS):
        return str(error)
    return f"{type(error).__name__}: {error}"


@task(name="load-model", cache_policy=NO_CACHE)
def load_model(model_name: str, version: str) -> LoadedModel:
    return load_model_version(model_name, version)


@task(name="load-audit-set", cache_policy=NO_CACHE)
def load_audit_set(manifest: Path, class_names: tuple[str, ...] | None) -> AuditSet:
    return read_audit_set(manifest, class_names=class_names)


# Each task is one stage of pipelines.collect, so Prefect shows and retries it on its own.
cam_audit = task(name="cam-audit", cache_policy=NO_CACHE)(stages.cam_stage)
counterfactual_audit = task(name="counterfactual-audit", cache_policy=NO_CACHE)(
    stages.counterfactual_stage
)
sanity_check = task(name="sanity-check", cache_policy=NO_CACHE)(stages.sanity_stage)
discover_strategies = task(name="discover-strategies", cache_policy=NO_CACHE)(
    stages.discovery_stage
)
load_text_audit_set = task(name="load-text-audit-set", cache_policy=NO_CACHE)(
    stages.load_text_audit_set
)
text_audit = task(name="text-audit", cache_policy=NO_CACHE)(stages.text_audit_stage)
text_counterfactual_audit = task(name="text-counterfactual-audit", cache_policy=NO_CACHE)(
    stages.text_counterfactual_stage
)


@task(name="validate-evidence", cache_policy=NO_CACHE)
def validate_evidence(evidence: GateEvidence, thresholds: Thresholds) -> Validation:
    return evidence.validate(thresholds)


@task(name="log-evidence", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2)
def log_evidence(
    evidence: GateEvidence | TextGateEvidence,
    validation: Validation,
    model: LoadedModel,
    thresholds: Thresholds,
    plan: AuditPlan,
    manifest: Path,
    decision: GateDecision,
    bounds: dict[str, float],
) -> str:
    with evidence_logging():  # runs a dead gate left: this gate holds the lock, none is live
        close_orphaned_runs(model.name, model.version)
    summary = evidence.summary
    params = {
        "model_uri": model.uri,
        "audit_set": manifest,
        "modality": "text" if isinstance(evidence, TextGateEvidence) else "image",
        "n_inputs": summary["n_images"],
        "target_layer": summary["target_layer"],
        **thresholds.model_dump(),
        **plan.model_dump(),
    }
    title = f"{model.name} v{model.version}: {decision.verdict.value}"
    metrics = evidence.metrics()

    def report(images: dict[str, bytes]) -> str:
        return render_report(
            title=f"xai-gate: {model.name} v{model.version}",
            verdict=decision.verdict.value,
            reasons=decision.reasons,
            metrics=metrics,
            bounds=bounds,
            images=images,
            notes=[f"Model {model.uri}; audit set {manifest}."],
            warnings=decision.warnings,
            tables=evidence.report_tables(),
        )

    return log_gate_evidence(
        model_name=model.name,
        model_version=model.version,
        params=params,
        metrics=metrics,
        series=evidence.series(),
        tables=evidence.tables(),
        documents=validation.documents(),
        figures=evidence.figures(thresholds, title),
        pages=evidence.pages(),
        report=report,
    )


@task(name="promote", cache_policy=NO_CACHE)
def promote(
    model: LoadedModel,
    decision: GateDecision,
    run_id: str,
    alias: str,
    checks: tuple[str, ...],
    policy_hash: str,
    audit_set_hash: str,
) -> bool:
    """Write the signed verdict; move the alias only on a pass."""
    return record_verdict(
        model.name,
        model.version,
        decision,
        run_id=run_id,
        alias=alias,
        checks=checks,
        policy_hash=policy_hash,
        audit_set_hash=audit_set_hash,
    )


def _policy_from_options(
    model_name: str,
    audit_set: Path | None,
    policy_file: str | None,
    *,
    alias: str,
    modality: str,
    cam_methods: list[str] | None,
    target_layer: str | None,
    counterfactual: bool,
    sanity: bool,
    sanity_images: int,
    batch_size: int,
    discovery: bool = False,
    **thresholds: float,
) -> GatePolicy:
    """The policy file, or the flow's keyword arguments as the equivalent policy."""
    if policy_file:
        policy = load_policy(policy_file)
        if model_name and model_name != policy.model:
            raise GateError(
                f"model {model_name!r} does not match the policy's model {policy.model!r} "
                f"({policy_file})"
            )
    else:
        if audit_set is None:
            raise GateError("an audit set or a policy file is required")
        policy = GatePolicy(
            model=model_name,
            protected_aliases=(alias,),
            audit_set=Path(audit_set),
            modality=modality,
            checks=Checks(
                heatmaps=HeatmapChecks(
                    **({"methods": tuple(cam_methods)} if cam_methods else {}),
                    target_layers=tuple(target_layer.split(",")) if target_layer else (),
                    max_spurious_mass=thresholds["max_spurious_mass"],
                    max_flagged_fraction=thresholds["max_flagged_fraction"],
                    flag_mass=thresholds["flag_mass"],
                ),
                counterfactual=CounterfactualChecks(
                    enabled=counterfactual,
                    max_flip_rate=thresholds["max_flip_rate"],
                    max_spurious_score=thresholds["max_spurious_score"],
                ),
                discovery=DiscoveryChecks(enabled=discovery),
            ),
            sanity=SanityRule(
                enabled=sanity,
                images=sanity_images,
                max_correlation=thresholds["max_sanity_correlation"],
            ),
            batch_size=batch_size,
        )
    if policy.require_signature and secret_from_env() is None:
        raise GateError(
            "the policy requires signed verdicts (require_signature: true) but "
            f"{SECRET_ENV} is not set"
        )
    return policy


def _error(
    model_name: str, version: str, alias: str, error: BaseException, *, recorded: bool
) -> State:
    outcome = GateOutcome(
        model_name, version, Verdict.ERROR, [_describe(error)], alias=alias, recorded=recorded
    )
    get_run_logger().error(outcome.message)
    return Failed(message=outcome.message, data=outcome)


def _final(outcome: GateOutcome) -> GateOutcome | State:
    """Completed with the outcome on a pass; Failed (the outcome as its data) otherwise."""
    logger = get_run_logger()
    if outcome.verdict is Verdict.PASSED:
        moved = f"; alias {outcome.alias!r} now points to v{outcome.version}"
        logger.info("%s%s", outcome.message, moved if outcome.promoted else "")
        return outcome
    logger.warning(outcome.message)
    return Failed(message=outcome.message, data=outcome)


@flow(
    name="xai-gate",
    on_failure=[record_error_verdict],
    on_crashed=[record_error_verdict],
)
def xai_gate(
    model_name: str,
    version: str,
    audit_set: Path | None = None,
    max_spurious_mass: float = 0.30,
    max_flagged_fraction: float = 0.10,
    flag_mass: float = 0.50,
    max_flip_rate: float = 0.20,
    max_spurious_score: float = 0.50,
    max_sanity_correlation: float = 0.50,
    alias: str = DEFAULT_ALIAS,
    cam_methods: list[str] | None = None,
    target_layer: str | None = None,
    counterfactual: bool = True,
    sanity: bool = True,
    sanity_images: int = 16,
    batch_size: int = 32,
    discovery: bool = False,
    tracking_uri: str | None = None,
    modality: str = "auto",
    policy_file: str | None = None,
    force: bool = False,
    shards: int = 1,
) -> GateOutcome | State:
    """Audit ``models:/model_name/version`` on ``audit_set`` and gate its promotion.

    With ``policy_file`` every rule comes from that policy (and ``model_name``
    must match it); otherwise the keyword arguments form an equivalent policy.
    Images: CAM audit (every method in ``cam_methods``, the first gates),
    counterfactual removal and insertion, the randomisation sanity check, and
    with ``discovery`` strategy discovery (SpRAy; the only check an audit set
    without spurious masks allows).
    Texts (a CSV with a ``text`` column, or ``modality="text"``): gradient x
    input saliency, attention and rollout masses, word removal and insertion.
    Then GX validation of the score tables, MLflow evidence, the signed
    verdict, the alias, and Prefect artifacts summarising the run.

    ``shards > 1`` splits the image CAM audit into that many tasks, submitted
    with the counterfactual and sanity tasks to the flow's task runner (Dask
    workers with ``flows.run.run_gate(task_runner="dask")``); the merged scores
    equal an unsharded run's.

    One gate per version runs at a time (``flows.locking``). A version that
    already has a verdict under this policy and audit-set manifest keeps it
    and nothing is re-run or moved, unless ``force``; an ``error`` is always
    gated again.
    """
    version = str(version)
    try:
        policy = _policy_from_options(
            model_name,
            audit_set,
            policy_file,
            alias=alias,
            modality=modality,
            cam_methods=cam_methods,
            target_layer=target_layer,
            counterfactual=counterfactual,
            sanity=sanity,
            sanity_images=sanity_images,
            batch_size=batch_size,
            discovery=discovery,
            max_spurious_mass=max_spurious_mass,
            max_flagged_fraction=max_flagged_fraction,
            flag_mass=flag_mass,
            max_flip_rate=max_flip_rate,
            max_spurious_score=max_spurious_score,
            max_sanity_correlation=max_sanity_correlation,
        )
        model_name, alias = policy.model, policy.alias
        scope = configure_tracking(tracking_uri, check=True)
    except EXPECTED_ERRORS as exc:
        return _error(model_name, version, alias, exc, recorded=False)  # on_failure tags it
    try:
        with version_lock(model_name, version, scope=scope):
            try:
                return _final(_gate_version(policy, version, force=force, shards=shards))
            except Exception as exc:  # every failure must end as a recorded error
                if not isinstance(exc, EXPECTED_ERRORS):
                    get_run_logger().exception("the gate of %s v%s failed", model_name, version)
                recorded = tag_error(model_name, version, _describe(exc), tracking_uri)
                return _error(model_name, version, alias, exc, recorded=recorded)
    except LockTimeout as exc:  # the other gate is still at work: its verdict will stand
        return _error(model_name, version, alias, exc, recorded=True)


def _image_stages_sharded(
    model: LoadedModel, images: AuditSet, thresholds: Thresholds, plan: AuditPlan, shards: int
) -> tuple[AuditResult, CounterfactualEvidence | None, SanityEvidence | None]:
    """The CAM audit as one task per shard, beside the counterfactual and sanity tasks.

    With a Dask task runner every task may run on another worker at once. Shards
    are cut on batch edges and merged in order, so the scores equal an unsharded run.
    """
    bounds = shard_bounds(len(images), shards, plan.batch_size)
    parts = [cam_audit.submit(model, images.subset(a, b), thresholds, plan) for a, b in bounds]
    counterfactual = (
        counterfactual_audit.submit(model, images, plan) if plan.counterfactual else None
    )
    sanity = sanity_check.submit(model, images, plan) if plan.sanity else None
    audit = merge_audits([part.result() for part in parts], thresholds)
    return (
        audit,
        counterfactual.result() if counterfactual is not None else None,
        sanity.result() if sanity is not None else None,
    )


def _gate_version(policy: GatePolicy, version: str, *, force: bool, shards: int = 1) -> GateOutcome:
    """Everything after the lock is held: reuse a finished verdict, or audit and decide."""
    model_name, alias = policy.model, policy.alias
    policy_hash, audit_set_hash = policy.digest(), file_digest(policy.audit_set)
    prior = (
        None
        if force
        else prior_verdict(
            model_name, version, policy_hash=policy_hash, audit_set_hash=audit_set_hash
        )
    )
    if prior is not None:
        reasons = [prior.reason] if prior.verdict is not Verdict.PASSED else []
        return GateOutcome(
            model_name,
            version,
            prior.verdict,
            reasons,
            run_id=prior.run_id,
            alias=alias,
            reused=True,
            recorded=True,
        )
    thresholds, plan = policy.thresholds(), policy.plan()
    manifest = policy.audit_set
    text = stages.is_text_policy(policy)
    model = load_model(model_name, version)
    if text:
        texts = load_text_audit_set(model, policy)
        evidence = TextGateEvidence(
            audit=text_audit(model, texts, thresholds, plan),
            counterfactual=text_counterfactual_audit(model, texts, plan)
            if plan.counterfactual
            else None,
            class_names=texts.class_names,
        )
    else:
        images = load_audit_set(manifest, model.class_names)
        plan = stages.image_plan(images, plan)
        audit, counterfactual, sanity = (
            _image_stages_sharded(model, images, thresholds, plan, shards)
            if shards > 1
            else (
                cam_audit(model, images, thresholds, plan),
                counterfactual_audit(model, images, plan) if plan.counterfactual else None,
                sanity_check(model, images, plan) if plan.sanity else None,
            )
        )
        evidence = GateEvidence(
            audit=audit,
            counterfactual=counterfactual,
            sanity=sanity,
            images=images.images,
            class_names=images.class_names,
            masks=images.masks,
            discovery=discover_strategies(model, images, audit, thresholds, plan),
            regions=images.has_regions,
        )
    validation = validate_evidence(evidence, thresholds)
    decision = decide(
        validation.gating,
        validation.sanity,
        inconclusive=policy.inconclusive,
        warnings=evidence.warnings(),
    )
    regions = isinstance(evidence, TextGateEvidence) or evidence.regions
    bounds = policy.bounds(text=text, regions=regions)
    run_id = log_evidence(evidence, validation, model, thresholds, plan, manifest, decision, bounds)
    if decision.verdict is Verdict.PASSED and policy.approval:
        decision = ask_for_approval(decision, model_name, version, run_id)
    checks = (
        ("saliency", "attention", *(("counterfactual",) if plan.counterfactual else ()))
        if text
        else stages.image_checks(plan, regions=regions)
    )
    promoted = promote(model, decision, run_id, alias, checks, policy_hash, audit_set_hash)
    try:  # the verdict is recorded: a failing summary must not turn it into 'error'
        publish_summary(model_name, version, decision, run_id, evidence.metrics(), promoted, alias)
    except Exception as exc:
        get_run_logger().warning("could not publish the Prefect summary: %s", exc)
    return GateOutcome(
        model_name,
        version,
        decision.verdict,
        decision.reasons,
        run_id=run_id,
        promoted=promoted,
        alias=alias,
        summary=evidence.summary | _headline(evidence),
        recorded=True,
        warnings=decision.warnings,
    )
