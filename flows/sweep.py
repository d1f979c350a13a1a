"""The sweeper: gate every version of a model that has no verdict yet, one verdict each.

Run it by hand (``xai-gate sweep``) or on a schedule (``xai-gate serve``).
The gate flow holds a per-version lock (``flows.locking``) and reuses a
verdict it finds once the lock is held, so two sweepers that race for the
same version produce one verdict, not two.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger

from flows.run import run_gate
from flows.xai_gate import GateOutcome
from pipelines.policy import load_policy
from pipelines.tracking import configure_tracking
from pipelines.verdict.decision import PENDING
from pipelines.verdict.signing import TAG_VERDICT

__all__ = ["run_sweep", "sweep_deployment", "ungated_versions", "xai_gate_sweep"]


def ungated_versions(model: str) -> list[str]:
    """Versions of ``model`` without an xai-gate verdict, oldest first: never gated, or cut
    off while their first verdict was written (``pending``)."""
    from mlflow import MlflowClient

    versions = MlflowClient().search_model_versions(f"name = '{model}'")
    ungated = (str(v.version) for v in versions if v.tags.get(TAG_VERDICT, PENDING) == PENDING)
    return sorted(ungated, key=int)


@flow(name="xai-gate-sweep")
def xai_gate_sweep(policy_file: str, tracking_uri: str | None = None) -> list[GateOutcome]:
    """Gate each ungated version of the policy's model; return the outcomes of this sweep."""
    logger = get_run_logger()
    policy = load_policy(policy_file)
    configure_tracking(tracking_uri)
    outcomes = []
    for version in ungated_versions(policy.model):
        outcome = run_gate(
            policy.model, version, policy_file=str(policy_file), tracking_uri=tracking_uri
        )
        if outcome.reused:  # another sweeper or gate got there first
            logger.info("%s v%s was gated meanwhile; skipped", policy.model, version)
            continue
        logger.info(outcome.message)
        outcomes.append(outcome)
    return outcomes


def run_sweep(policy_file: str | Path, tracking_uri: str | None = None) -> list[GateOutcome]:
    return xai_gate_sweep(str(Path(policy_file).absolute()), tracking_uri)


def sweep_deployment(policy_file: str | Path, *, cron: str, tracking_uri: str | None) -> Any:
    """The sweeper as a deployment on ``cron``, for ``prefect.serve``."""
    policy = load_policy(policy_file)
    return xai_gate_sweep.to_deployment(
        name=f"xai-gate-{policy.model}",
        cron=cron,
        parameters={
            "policy_file": str(Path(policy_file).absolute()),
            "tracking_uri": tracking_uri,
        },
        description=f"Gate new versions of {policy.model} against {Path(policy_file).name}",
        tags=[f"model:{policy.model}", f"policy:{policy.digest()[:12]}"],
        version=policy.digest()[:12],
    )
