"""run_gate's task runners: the gate on a real Dask cluster gives the single-process scores."""

from __future__ import annotations

import io
import json

import mlflow
import pandas as pd
import pytest
from mlflow import MlflowClient

from flows.run import run_gate
from pipelines.verdict.decision import Verdict

pytestmark = pytest.mark.slow
MODEL = "dask-model"


def _scores(run_id: str) -> pd.DataFrame:
    text = mlflow.artifacts.load_text(f"runs:/{run_id}/xai/scores.csv")
    return pd.read_csv(io.StringIO(text))


def test_a_sharded_gate_on_two_dask_workers_equals_the_single_process_gate(
    trained_pair, lesion_gate, tracking_uri, tmp_path, registry
):
    for model in (trained_pair.shortcut, trained_pair.clean):
        lesion_gate.register(model, MODEL)
    # Both CAM methods, and five batches of 8 to shard.
    rules = {"cam_methods": ["gradcam", "layercam"], "batch_size": 8}
    policy = lesion_gate.policy(tmp_path, MODEL, n=40, rules=rules)
    single = run_gate(MODEL, "1", policy_file=str(policy))
    assert single.verdict is Verdict.BLOCKED
    scaled = run_gate(
        MODEL, "1", policy_file=str(policy), force=True, task_runner="dask", dask_workers=2
    )
    assert scaled.verdict is Verdict.BLOCKED and scaled.reasons == single.reasons
    assert scaled.run_id != single.run_id
    pd.testing.assert_frame_equal(_scores(scaled.run_id), _scores(single.run_id))
    client = MlflowClient()
    metrics = [client.get_run(o.run_id).data.metrics for o in (single, scaled)]
    assert metrics[0] == metrics[1]
    # The scaled run's CAM audit ran as two shards on Dask (five batches of 8: 3 + 2).
    assert (_cam_audit_stages(single.run_id), _cam_audit_stages(scaled.run_id)) == (1, 2)
    clean = run_gate(MODEL, "2", policy_file=str(policy), task_runner="dask", dask_workers=2)
    assert clean.verdict is Verdict.PASSED and clean.promoted
    blocked, passed = registry(MODEL, "1"), registry(MODEL, "2")
    assert (blocked.verdict, blocked.run_id) == ("blocked", scaled.run_id)
    assert (passed.verdict, passed.run_id, passed.alias_holder) == ("passed", clean.run_id, "2")


def _cam_audit_stages(run_id: str) -> int:
    """How many CAM-audit stages the judging worker ran (``xai/stages.json``)."""
    stages = json.loads(mlflow.artifacts.load_text(f"runs:/{run_id}/xai/stages.json"))
    assert all(stage["seconds"] >= 0 for stage in stages)
    return sum(stage["name"] == "cam-audit" for stage in stages)


def test_a_gate_as_a_deployment_run_is_listed_there_and_a_missing_deployment_gates_nothing(
    trained_pair, lesion_gate, tracking_uri, tmp_path, registry
):
    """The listener's way: each gate a run of its deployment, executed in this process."""
    import uuid

    from prefect.client.orchestration import get_client

    from flows.listen import listener_deployment
    from pipelines.policy import load_policy

    lesion_gate.register(trained_pair.clean, MODEL)
    policy_file = lesion_gate.policy(tmp_path, MODEL)
    labels = (f"model:{MODEL}", "trigger:webhook")
    deployment = listener_deployment(load_policy(policy_file), policy_file, labels)

    missing = uuid.uuid4()
    refused = run_gate(MODEL, "1", policy_file=str(policy_file), deployment_id=missing)
    assert refused.verdict is Verdict.ERROR
    assert refused.reasons[0].startswith(f"could not start a run of deployment {missing}: ")
    assert registry(MODEL, "1").verdict is None  # nothing ran, nothing was written

    outcome = run_gate(MODEL, "1", policy_file=str(policy_file), deployment_id=deployment)
    assert outcome.verdict is Verdict.PASSED and outcome.promoted
    assert registry(MODEL, "1").run_id == outcome.run_id
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    with get_client(sync_client=True) as prefect:
        (run,) = prefect.read_flow_runs(
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment]))
        )
    assert run.deployment_id == deployment and run.state.is_completed()
    assert run.parameters["version"] == "1" and run.parameters["policy"]["model"] == MODEL
