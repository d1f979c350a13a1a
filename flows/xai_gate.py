"""The gate as a Prefect flow: fetch, judge, decide, log, sign; the verdict its final state.

``passed`` ends the run Completed; ``blocked``, ``inconclusive`` and ``error``
end it Failed with a message naming every failing check or the cause. Either
way the outcome is the run's result, so callers (the CLI, a schedule, a test)
read one object.

The model is fetched and hashed here, then judged in a worker process that
holds no key and no credential (``pipelines.judging``): the stages, assembled
by ``pipelines.stages.assembly.collect_evidence``, run there, and their lines
are logged here. This process reads the worker's answer as checked files,
decides, logs the evidence, signs and moves the alias: it runs no model code.
"""

from __future__ import annotations

import tempfile
from dataclasses import replace
from pathlib import Path
from typing import TypeVar

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.states import Failed, State

from flows.interrupt import uninterrupted
from flows.locking import LockTimeout, version_lock
from flows.outcome import EXPECTED_ERRORS, GateOutcome, describe_error
from flows.reporting import ask_for_approval, publish_summary, record_error_verdict, tag_error
from pipelines.devices import resolve_device
from pipelines.errors import GateError
from pipelines.evidence.base import EvidenceValidation, headline
from pipelines.judging.contract import CheckedJudgement, read_judgement
from pipelines.judging.sandbox import judge_in_worker, judge_request
from pipelines.judging.worker import STAGE_MARK
from pipelines.policy import GatePolicy
from pipelines.report.html import render_report
from pipelines.stages.assembly import rules_for_batch
from pipelines.tracking import (
    close_orphaned_runs,
    configure_tracking,
    evidence_logging,
    log_gate_evidence,
)
from pipelines.tracking.config import (
    canonical_version,
    check_writable,
    store_full,
    store_identity,
)
from pipelines.tracking.models import FetchedModel, fetch_model_version
from pipelines.verdict.decision import (
    GateDecision,
    Verdict,
    decide,
    holds_alias,
    prior_verdict,
    promote_alias,
    promotion_error,
    record_verdict,
)
from pipelines.verdict.evidence_digest import audit_set_digest
from pipelines.verdict.signing import SECRET_ENV, secret_from_env

__all__ = ["EXPECTED_ERRORS", "GateOutcome", "check_signing", "xai_gate"]

T = TypeVar("T")


@task(name="fetch-model", cache_policy=NO_CACHE)
def fetch_model(model_name: str, version: str) -> FetchedModel:
    """Download the version's files once and hash them: runs nothing of the model."""
    return fetch_model_version(model_name, version)


@task(name="judge", cache_policy=NO_CACHE)
def judge(
    fetched: FetchedModel,
    policy: GatePolicy,
    audit_set_hash: str,
    shards: int = 1,
    dask_address: str | None = None,
    dask_workers: int = 0,
) -> CheckedJudgement:
    """Load and audit the model in a worker that holds no key (``pipelines.judging``).

    The worker's stages are logged here as it reaches them; its answer is read
    back as files and checked (types, paths, digests) before anything decides on it.
    """
    logger = get_run_logger()

    def forward(line: str) -> None:
        if line.startswith(STAGE_MARK):
            logger.info("%s", line[len(STAGE_MARK) :])

    request = judge_request(
        fetched,
        policy,
        shards=shards,
        dask_address=dask_address,
        dask_workers=dask_workers,
        title=f"{fetched.name} v{fetched.version}",
    )
    with tempfile.TemporaryDirectory(prefix="xai-gate-judge-") as folder:
        out = Path(folder, "answer")
        judge_in_worker(request, out, on_line=forward)
        return read_judgement(
            out, model_digest=fetched.digest, audit_set_digest=audit_set_hash, what=fetched.uri
        )


@task(name="validate-evidence", cache_policy=NO_CACHE)
def validate_evidence(judged: CheckedJudgement) -> EvidenceValidation:
    """The worker's Great Expectations results, as checked when its answer was read."""
    return judged.validation


@task(name="log-evidence", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2)
def log_evidence(
    judged: CheckedJudgement,
    validation: EvidenceValidation,
    model: FetchedModel,
    policy: GatePolicy,
    decision: GateDecision,
) -> str:
    with evidence_logging():  # runs a dead gate left: this gate holds the lock, none is live
        close_orphaned_runs(model.name, model.version)
    rules = rules_for_batch(judged.judgement.max_batch, policy.rules())  # as they ran
    manifest = policy.audit_set
    params = {
        "model_uri": model.uri,
        "audit_set": manifest,
        "modality": judged.modality,
        "n_inputs": judged.summary["n_inputs"],
        "target_layer": judged.summary["target_layer"],
        **rules.options(),
    }
    used = judged.judgement.precision_used
    if used is not None:  # what the stages ran at, and what was asked
        params |= {"precision": used, "precision_requested": policy.precision}
    metrics = judged.metrics()
    bounds = rules.bounds(text=judged.modality == "text", regions=judged.regions)

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
            tables=judged.report_tables,
        )

    stages = [record.model_dump() for record in judged.judgement.stages]
    return log_gate_evidence(
        model_name=model.name,
        model_version=model.version,
        params=params,
        metrics=metrics,
        series=judged.series(),
        tables=judged.tables,
        documents={**validation.documents(), "xai/stages.json": stages},
        figures=judged.figures,
        pages=judged.pages,
        report=report,
        model_id=model.model_id,
    )


@task(name="promote", cache_policy=NO_CACHE)
def promote(
    model: FetchedModel,
    decision: GateDecision,
    run_id: str,
    alias: str,
    checks: tuple[str, ...],
    policy_hash: str,
    audit_set_hash: str,
    on_alias_holder_blocked: str = "keep",
) -> bool:
    """Write the signed verdict; move the alias only on a pass (Ctrl-C waits for it)."""
    with uninterrupted():
        return record_verdict(
            model.name,
            model.version,
            decision,
            run_id=run_id,
            alias=alias,
            checks=checks,
            policy_hash=policy_hash,
            audit_set_hash=audit_set_hash,
            on_alias_holder_blocked=on_alias_holder_blocked,
            model_digest=model.digest,
        )


@task(name="retry-promotion", cache_policy=NO_CACHE)
def retry_promotion(model_name: str, version: str, alias: str) -> bool:
    """The alias again, for a reused pass the registry refused it to last time."""
    with uninterrupted():
        return promote_alias(model_name, version, alias)


def check_signing(policy: GatePolicy) -> None:
    """``require_signature: true`` without a secret is the caller's mistake: refused up front."""
    if policy.require_signature and secret_from_env() is None:
        raise GateError(
            "the policy requires signed verdicts (require_signature: true) but "
            f"{SECRET_ENV} is not set"
        )


def _error(
    policy: GatePolicy,
    version: str,
    error: BaseException,
    *,
    recorded: bool,
    caller_error: bool = False,
) -> State:
    outcome = GateOutcome(
        policy.model,
        version,
        Verdict.ERROR,
        [describe_error(error)],
        alias=policy.alias,
        recorded=recorded,
        caller_error=caller_error,
    )
    get_run_logger().error(outcome.message)
    return Failed(message=outcome.message, data=outcome)


def _final(outcome: GateOutcome) -> GateOutcome | State:
    """Completed with the outcome on a promoted pass; Failed (the outcome as its data)
    otherwise, a pass the registry refused the alias to included."""
    logger = get_run_logger()
    if outcome.not_promoted:  # a pass nothing may deploy from: the run fails, the verdict stays
        logger.warning(outcome.message)
        return Failed(message=outcome.message, data=outcome)
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
    policy: GatePolicy,
    version: str,
    tracking_uri: str | None = None,
    force: bool = False,
    shards: int = 1,
    dask_address: str | None = None,
    dask_workers: int = 0,
) -> GateOutcome | State:
    """Audit ``models:/<policy.model>/<version>`` on the policy's audit set and gate its
    promotion.

    Images: CAM audit (every heatmap method of the policy, the first gates),
    counterfactual removal and insertion, the randomisation sanity check, and
    with discovery strategy discovery (SpRAy; the only check an audit set
    without spurious masks allows). Texts (a CSV with a ``text`` column, or
    ``modality: text``): gradient x input saliency, attention and rollout
    masses, word removal and insertion. Then GX validation of the score
    tables, MLflow evidence, the signed verdict, the alias, and Prefect
    artifacts summarising the run.

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
    try:  # the caller's mistakes: each touches no version
        check_signing(policy)
        resolve_device(policy.device)
        uri = configure_tracking(tracking_uri, check=True)
        version = canonical_version(policy.model, version)  # '02' and '2' are one version
        check_writable(uri)
        scope = store_identity(uri)  # two spellings of one database are one store
    except EXPECTED_ERRORS as exc:
        return _error(policy, version, exc, recorded=False, caller_error=True)
    try:
        with version_lock(policy.model, version, scope=scope):
            try:
                dask = (dask_address, dask_workers)
                return _final(_gate_version(policy, version, force=force, shards=shards, dask=dask))
            except Exception as exc:  # every failure must end as a recorded error
                if not isinstance(exc, EXPECTED_ERRORS):  # one line naming a full store
                    exc = store_full(exc, uri) or exc
                if not isinstance(exc, EXPECTED_ERRORS):
                    get_run_logger().exception("the gate of %s v%s failed", policy.model, version)
                recorded = tag_error(policy.model, version, describe_error(exc), tracking_uri)
                return _error(policy, version, exc, recorded=recorded)
    except LockTimeout as exc:  # the other gate is still at work: its verdict will stand
        return _error(policy, version, exc, recorded=True)


def _gate_version(
    policy: GatePolicy,
    version: str,
    *,
    force: bool,
    shards: int = 1,
    dask: tuple[str | None, int] = (None, 0),
) -> GateOutcome:
    """Everything after the lock is held: reuse a finished verdict, or audit and decide."""
    model_name, alias = policy.model, policy.alias
    policy_hash, audit_set_hash = policy.digest(), audit_set_digest(Path(policy.audit_set))
    fetched = fetch_model(model_name, version)  # the bytes to judge, hashed before anything runs
    prior = (
        None
        if force
        else prior_verdict(
            model_name,
            version,
            policy_hash=policy_hash,
            audit_set_hash=audit_set_hash,
            model_digest=fetched.digest,
        )
    )
    if prior is not None:
        reasons = [prior.reason] if prior.verdict is not Verdict.PASSED else []
        promoted, not_promoted = False, ""
        if prior.promotion_error:  # a pass the registry refused the alias to: try it again
            promoted = retry_promotion(model_name, version, alias)
            not_promoted = "" if promoted else promotion_error(model_name, version)
        return GateOutcome(
            model_name,
            version,
            prior.verdict,
            reasons,
            run_id=prior.run_id,
            promoted=promoted,
            alias=alias,
            reused=True,
            recorded=True,
            not_promoted=not_promoted,
        )
    evidence = judge(fetched, policy, audit_set_hash, shards, *dask)
    validation = validate_evidence(evidence)
    toothless = policy.rules().blocks_nothing(
        text=evidence.modality == "text", regions=evidence.regions
    )
    decision = decide(
        validation.gating,
        validation.sanity,
        inconclusive=policy.inconclusive,
        warnings=[*([toothless] if toothless else []), *evidence.warnings(), *validation.notes],
        uninformative=validation.uninformative,
        on_uninformative=policy.checks.uninformative,
    )
    decision = _warn_alias_holder(decision, policy, version)
    run_id = log_evidence(evidence, validation, fetched, policy, decision)
    if decision.verdict is Verdict.PASSED and policy.approval:
        decision = ask_for_approval(decision, model_name, version, run_id)
    promoted = promote(
        fetched,
        decision,
        run_id,
        alias,
        evidence.evidence_lines,
        policy_hash,
        audit_set_hash,
        policy.on_alias_holder_blocked,
    )
    try:  # the verdict is recorded: a failing summary must not turn it into 'error'
        publish_summary(model_name, version, decision, run_id, evidence.metrics(), promoted, alias)
    except Exception as exc:
        get_run_logger().warning("could not publish the Prefect summary: %s", exc)
    not_promoted = (
        promotion_error(model_name, version)
        if decision.verdict is Verdict.PASSED and not promoted
        else ""
    )
    return GateOutcome(
        model_name,
        version,
        decision.verdict,
        decision.reasons,
        run_id=run_id,
        promoted=promoted,
        not_promoted=not_promoted,
        alias=alias,
        summary=evidence.summary | headline(evidence),
        recorded=True,
        warnings=decision.warnings,
    )


def _warn_alias_holder(decision: GateDecision, policy: GatePolicy, version: str) -> GateDecision:
    """A version that holds the alias and is now not passed: say so, loudly, everywhere."""
    if decision.verdict is Verdict.PASSED or not holds_alias(policy.model, version, policy.alias):
        return decision
    if policy.on_alias_holder_blocked == "remove":
        what = f"alias {policy.alias!r} is removed from it (on_alias_holder_blocked: remove)"
    else:
        what = (
            f"alias {policy.alias!r} stays on it (on_alias_holder_blocked: keep): move or "
            "remove the alias, or set on_alias_holder_blocked: remove"
        )
    warning = f"v{version} holds {policy.alias!r} but is now {decision.verdict.value}: {what}"
    return replace(decision, warnings=[warning, *decision.warnings])
