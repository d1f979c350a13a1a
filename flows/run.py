"""Run the gate flow and turn its final state into an outcome and an exit code."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from uuid import UUID

from flows._console import hide_expected_tracebacks
from flows.outcome import EXPECTED_ERRORS, GateOutcome, describe_error
from flows.xai_gate import check_signing, xai_gate
from pipelines.devices import resolve_device
from pipelines.errors import GateError
from pipelines.policy import GatePolicy, load_policy
from pipelines.verdict.decision import Verdict

__all__ = ["EXIT_CODES", "EXIT_NOT_PROMOTED", "exit_code", "gate_policy", "run_gate"]

EXIT_CODES = {Verdict.PASSED: 0, Verdict.BLOCKED: 1, Verdict.ERROR: 2, Verdict.INCONCLUSIVE: 3}
EXIT_NOT_PROMOTED = 4
"""Passed, but the registry refused the alias: not a pass a pipeline may go on from."""


def gate_policy(
    model_name: str | None,
    audit_set: str | Path | None = None,
    *,
    policy_file: str | Path | None = None,
    **rules: Any,
) -> GatePolicy:
    """The policy a gate runs under: the file's, or one built from flat options.

    With ``policy_file`` every rule comes from the file and ``model_name``, if
    given, must match its model. Otherwise ``model_name``, ``audit_set`` and
    ``rules`` (flat option names: ``max_spurious_mass``, ``cam_methods``,
    ``discovery``, ...; see ``pipelines.policy.policy_options``) build one,
    unset rules taking the schema's defaults.
    """
    if policy_file is not None:
        policy = load_policy(policy_file)
        if model_name and model_name != policy.model:
            raise GateError(
                f"model {model_name!r} does not match the policy's model {policy.model!r} "
                f"({policy_file})"
            )
        return policy
    if audit_set is None:
        raise GateError("an audit set or a policy file is required")
    return GatePolicy.from_options(model=model_name, audit_set=Path(audit_set), **rules)


def run_gate(
    model_name: str | None,
    version: str,
    audit_set: str | Path | None = None,
    *,
    policy_file: str | Path | None = None,
    policy: GatePolicy | None = None,
    tracking_uri: str | None = None,
    force: bool = False,
    shards: int | None = None,
    task_runner: str = "threads",
    dask_address: str | None = None,
    dask_workers: int = 2,
    deployment_id: UUID | None = None,
    **rules: Any,
) -> GateOutcome:
    """Run ``xai_gate`` and return its outcome; a bad option or a crash becomes ``error``.

    The policy is ``policy``, or ``policy_file``, or built from ``model_name``,
    ``audit_set`` and flat ``rules`` (:func:`gate_policy`). An invalid policy
    or option gates nothing: no version is touched. ``task_runner="dask"``
    runs the stages on Dask: on the cluster at ``dask_address``
    (``tcp://host:8786``), or on a local cluster of ``dask_workers`` processes;
    the image audit is then sharded over the workers unless ``shards`` says
    otherwise. ``deployment_id``: the gate is a run of that deployment of
    ``xai_gate`` (the Prefect UI lists it there), executed in this process.
    """
    hide_expected_tracebacks(EXPECTED_ERRORS)
    version = str(version)
    try:
        if policy is None:
            policy = gate_policy(model_name, audit_set, policy_file=policy_file, **rules)
        elif rules or policy_file is not None:
            raise GateError("give a policy, or a policy file, or rules: not several")
        check_signing(policy)
        resolve_device(policy.device)
    except EXPECTED_ERRORS as exc:  # the caller's mistake: no flow starts, no version is touched
        return GateOutcome(
            model_name or "?", version, Verdict.ERROR, [describe_error(exc)], caller_error=True
        )
    gate = xai_gate
    dask: dict[str, Any] = {}
    if task_runner == "dask":  # the judging worker starts (or joins) the cluster: no key there
        dask = {"dask_address": dask_address, "dask_workers": max(1, dask_workers)}
        shards = shards or dask_workers
    elif task_runner != "threads":
        raise ValueError(f"task_runner must be 'threads' or 'dask', got {task_runner!r}")
    parameters = {
        "policy": policy,
        "version": version,
        "tracking_uri": tracking_uri,
        "force": force,
        "shards": shards or 1,
        **dask,
    }
    if deployment_id is None:
        state = gate(**parameters, return_state=True)
    else:
        try:
            flow_run = _deployment_flow_run(deployment_id, parameters)
        except Exception as exc:  # nothing ran and nothing is written: the sweeper gates it later
            reason = f"could not start a run of deployment {deployment_id}: {describe_error(exc)}"
            return GateOutcome(policy.model, version, Verdict.ERROR, [reason])
        from prefect.flow_engine import run_flow

        state = run_flow(gate, flow_run=flow_run, parameters=parameters, return_type="state")
    try:
        result = state.result(raise_on_failure=False)
    except Exception as exc:  # the state carries no result: a crash
        result = exc
    if isinstance(result, GateOutcome):
        return result
    message = (
        f"{type(result).__name__}: {result}" if isinstance(result, BaseException) else state.message
    )
    return GateOutcome(policy.model, version, Verdict.ERROR, [message or "flow run crashed"])


def _deployment_flow_run(deployment_id: UUID, parameters: dict[str, Any]) -> Any:
    """A new run of the deployment, to be executed here (``run_flow``): what a served
    deployment's runner does, minus the new process per run (~20 s of imports and start-up)."""
    from prefect.client.orchestration import get_client
    from prefect.context import TagsContext

    as_json = parameters | {"policy": parameters["policy"].model_dump(mode="json")}
    with get_client(sync_client=True) as client:
        return client.create_flow_run_from_deployment(
            deployment_id, parameters=as_json, tags=TagsContext.get().current_tags
        )


def exit_code(outcome: GateOutcome) -> int:
    if outcome.verdict is Verdict.PASSED and outcome.not_promoted:
        return EXIT_NOT_PROMOTED
    return EXIT_CODES[outcome.verdict]
