"""What a gate run leaves in Prefect: summary artifacts, an error verdict on failure, approval.

These run inside the flow (or as its state hooks), so they import Prefect;
everything they report comes from ``pipelines``.
"""

from __future__ import annotations

import logging
import math
import re
from typing import Any

from prefect.artifacts import create_markdown_artifact, create_table_artifact
from pydantic import BaseModel, Field

from flows.interrupt import uninterrupted
from flows.outcome import GateOutcome
from pipelines.report.markdown import code_span, link_target, markdown_text
from pipelines.tracking.config import EXPERIMENT, configure_tracking
from pipelines.verdict.decision import GateDecision, Verdict, record_error

__all__ = [
    "Approval",
    "ask_for_approval",
    "code_span",
    "markdown_text",
    "publish_summary",
    "record_error_verdict",
    "summary_markdown",
    "tag_error",
]

_log = logging.getLogger("xai_gate")


def _key(*parts: str) -> str:
    """Prefect artifact keys: lowercase letters, digits and dashes only."""
    return re.sub(r"[^a-z0-9-]+", "-", "-".join(parts).lower()).strip("-")


def summary_markdown(
    model: str,
    version: str,
    decision: GateDecision,
    run_id: str,
    promoted: bool,
    alias: str,
    tracking: str,
    experiment_id: str | None,
) -> str:
    """The verdict artifact's markdown; every string from the run or its data is escaped."""
    where = f"experiment {code_span(EXPERIMENT)}, run {code_span(run_id)}"
    if tracking.startswith(("http://", "https://")) and experiment_id is not None:
        base = link_target(f"{tracking.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}")
        where = (
            f"[the MLflow run]({base}), [its report]({base}/artifacts/xai/report.html) and "
            f"[its artifacts]({base}/artifacts)"
        )
    reasons = (
        "\n".join(f"- {markdown_text(reason)}" for reason in decision.reasons)
        or "- all checks passed"
    )
    if decision.warnings:
        reasons += "\n\nWarnings (not blocking):\n" + "\n".join(
            f"- {markdown_text(warning)}" for warning in decision.warnings
        )
    moved = (
        f"{code_span(alias)} now points to v{markdown_text(version)}"
        if promoted
        else f"{code_span(alias)} not moved"
    )
    return (
        f"# {markdown_text(model)} v{markdown_text(version)}: **{decision.verdict.value}**"
        f"\n\n{reasons}\n\n"
        f"Alias: {moved}.\n\nEvidence: {where} (tracking {code_span(tracking)}), artifacts under "
        "`xai/`: overlays, counterfactual examples, sanity plot or attention views, "
        "`scores.csv`, `validation.json`, `report.html`."
    )


def publish_summary(
    model: str,
    version: str,
    decision: GateDecision,
    run_id: str,
    metrics: dict[str, float],
    promoted: bool,
    alias: str,
) -> None:
    """A markdown verdict with reasons and MLflow links, and a table of every number."""
    import mlflow

    tracking = mlflow.get_tracking_uri()
    experiment = mlflow.get_experiment_by_name(EXPERIMENT)
    title = f"{markdown_text(model)} v{markdown_text(version)}"  # descriptions are markdown too
    create_markdown_artifact(
        markdown=summary_markdown(
            model,
            version,
            decision,
            run_id,
            promoted,
            alias,
            tracking,
            None if experiment is None else str(experiment.experiment_id),
        ),
        key=_key("xai-gate", model, f"v{version}"),
        description=f"xai-gate verdict for {title}",
    )
    rows = [
        {"metric": name, "value": round(value, 6)}
        for name, value in sorted(metrics.items())
        if math.isfinite(value)
    ]
    create_table_artifact(
        table=rows,
        key=_key("xai-gate", model, f"v{version}", "metrics"),
        description=f"xai-gate numbers for {title}",
    )


def record_error_verdict(flow: Any, flow_run: Any, state: Any) -> None:
    """``on_failure`` / ``on_crashed``: make sure a run that did not finish leaves 'error'.

    A blocked or inconclusive run also ends Failed, but its verdict is already
    recorded; only runs whose outcome is ``error`` or missing (a crash) are
    tagged here, so such a version is never promoted silently.
    """
    try:
        outcome = state.result(raise_on_failure=False)
    except Exception:  # a crashed run has no result to read
        outcome = None
    if isinstance(outcome, GateOutcome) and (
        outcome.verdict is not Verdict.ERROR or outcome.recorded or outcome.caller_error
    ):
        return
    params = dict(getattr(flow_run, "parameters", {}) or {})
    policy = params.get("policy")
    name = policy.get("model") if isinstance(policy, dict) else getattr(policy, "model", None)
    version = params.get("version")
    if not name or version is None:
        return
    reason = (
        "; ".join(outcome.reasons)
        if isinstance(outcome, GateOutcome)
        else (state.message or "flow run crashed")
    )
    tag_error(str(name), str(version), reason, params.get("tracking_uri"))


def tag_error(name: str, version: str, reason: str, tracking_uri: str | None) -> bool:
    """Record the failed attempt on the version (``record_error``: a verdict it already has
    is kept); False (logged) when that is impossible."""
    try:
        configure_tracking(tracking_uri)
        with uninterrupted():
            record_error(name, version, reason)
    except Exception as exc:  # the version may not exist, or the server is gone
        _log.warning("could not tag %s v%s with verdict 'error': %s", name, version, exc)
        return False
    return True


class Approval(BaseModel):
    """What the reviewer answers when a pass waits for approval."""

    approve: bool = Field(description="Move the protected alias to this version?")
    reviewer: str = Field("", description="Who decided.")
    note: str = Field("", description="Why.")


APPROVAL_TIMEOUT_SECONDS = 3600
"""How long a pass waits for a person before it is recorded as blocked."""


def _running_again() -> None:
    """Take the flow run out of its timed-out pause: the server fails a run that leaves an
    expired pause any other way, and its final state (the blocked verdict) would be lost."""
    from prefect.client.orchestration import get_client
    from prefect.context import FlowRunContext
    from prefect.states import Running

    context = FlowRunContext.get()
    if context is None or context.flow_run is None:
        return
    with get_client(sync_client=True) as client:
        client.set_flow_run_state(context.flow_run.id, Running(), force=True)


def ask_for_approval(
    decision: GateDecision, model: str, version: str, run_id: str, timeout: int | None = None
) -> GateDecision:
    """Pause the flow run until a person approves the pass; a refusal or timeout blocks."""
    from prefect.exceptions import FlowPauseTimeout
    from prefect.flow_runs import pause_flow_run

    timeout = APPROVAL_TIMEOUT_SECONDS if timeout is None else timeout
    try:
        answer = pause_flow_run(
            wait_for_input=Approval, timeout=timeout, poll_interval=2, key="xai-gate-approval"
        )
    except (FlowPauseTimeout, TimeoutError):  # Prefect's is not a TimeoutError
        _running_again()
        return GateDecision(Verdict.BLOCKED, [f"no approval within {timeout} s"], decision.warnings)
    if answer is not None and answer.approve:
        return decision
    who = f" by {answer.reviewer}" if answer is not None and answer.reviewer else ""
    note = f": {answer.note}" if answer is not None and answer.note else ""
    refused = f"passed, but approval refused{who}{note}"
    return GateDecision(Verdict.BLOCKED, [refused], decision.warnings)
