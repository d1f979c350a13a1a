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

from pipelines.gate import GateDecision, Verdict, record_verdict
from pipelines.tracking import EXPERIMENT, configure_tracking

__all__ = ["Approval", "ask_for_approval", "publish_summary", "record_error_verdict"]

_log = logging.getLogger("xai_gate")


def _key(*parts: str) -> str:
    """Prefect artifact keys: lowercase letters, digits and dashes only."""
    return re.sub(r"[^a-z0-9-]+", "-", "-".join(parts).lower()).strip("-")


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
    where = f"experiment `{EXPERIMENT}`, run `{run_id}`"
    if tracking.startswith(("http://", "https://")) and experiment is not None:
        base = f"{tracking.rstrip('/')}/#/experiments/{experiment.experiment_id}/runs/{run_id}"
        where = f"[the MLflow run]({base}) and [its artifacts]({base}/artifacts)"
    reasons = "\n".join(f"- {reason}" for reason in decision.reasons) or "- all checks passed"
    moved = f"`{alias}` now points to v{version}" if promoted else f"`{alias}` not moved"
    create_markdown_artifact(
        markdown=(
            f"# {model} v{version}: **{decision.verdict.value}**\n\n{reasons}\n\n"
            f"Alias: {moved}.\n\nEvidence: {where} (tracking `{tracking}`), artifacts under "
            "`xai/`: overlays, counterfactual examples, sanity plot or attention views, "
            "`scores.csv`, `validation.json`, `report.html`."
        ),
        key=_key("xai-gate", model, f"v{version}"),
        description=f"xai-gate verdict for {model} v{version}",
    )
    rows = [
        {"metric": name, "value": round(value, 6)}
        for name, value in sorted(metrics.items())
        if math.isfinite(value)
    ]
    create_table_artifact(
        table=rows,
        key=_key("xai-gate", model, f"v{version}", "metrics"),
        description=f"xai-gate numbers for {model} v{version}",
    )


def record_error_verdict(flow: Any, flow_run: Any, state: Any) -> None:
    """``on_failure`` / ``on_crashed``: make sure a run that did not finish leaves 'error'.

    A blocked or inconclusive run also ends Failed, but its verdict is already
    recorded; only runs whose outcome is ``error`` or missing (a crash) are
    tagged here, so such a version is never promoted silently.
    """
    from flows.xai_gate import GateOutcome  # the flow module imports this one

    try:
        outcome = state.result(raise_on_failure=False)
    except Exception:  # a crashed run has no result to read
        outcome = None
    if isinstance(outcome, GateOutcome) and outcome.verdict is not Verdict.ERROR:
        return
    params = dict(getattr(flow_run, "parameters", {}) or {})
    name, version = params.get("model_name"), params.get("version")
    if not name or version is None:
        return
    reason = (
        "; ".join(outcome.reasons)
        if isinstance(outcome, GateOutcome)
        else (state.message or "flow run crashed")
    )
    try:
        configure_tracking(params.get("tracking_uri"))
        record_verdict(str(name), str(version), GateDecision(Verdict.ERROR, [reason]), run_id=None)
    except Exception as exc:  # the version may not exist; the run already failed loudly
        _log.warning("could not tag %s v%s with verdict 'error': %s", name, version, exc)


class Approval(BaseModel):
    """What the reviewer answers when a pass waits for approval."""

    approve: bool = Field(description="Move the protected alias to this version?")
    reviewer: str = Field("", description="Who decided.")
    note: str = Field("", description="Why.")


def ask_for_approval(
    decision: GateDecision, model: str, version: str, run_id: str, timeout: int = 3600
) -> GateDecision:
    """Pause the flow run until a person approves the pass; a refusal or timeout blocks."""
    from prefect.flow_runs import pause_flow_run

    try:
        answer = pause_flow_run(
            wait_for_input=Approval, timeout=timeout, poll_interval=2, key="xai-gate-approval"
        )
    except TimeoutError:
        return GateDecision(Verdict.BLOCKED, [f"no approval within {timeout} s"])
    if answer is not None and answer.approve:
        return decision
    who = f" by {answer.reviewer}" if answer is not None and answer.reviewer else ""
    note = f": {answer.note}" if answer is not None and answer.note else ""
    return GateDecision(Verdict.BLOCKED, [f"passed, but approval refused{who}{note}"])
