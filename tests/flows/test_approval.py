"""Human approval after a pass: the flow run pauses; the answer decides the alias."""

from __future__ import annotations

import threading
import time

import pytest

from flows.run import run_gate
from pipelines.audit_sets.images import write_audit_set
from pipelines.policy import EXAMPLE_POLICY
from xai_checks.examples.synthetic import CLASS_NAMES, make_lesions

pytestmark = pytest.mark.slow
MODEL = "approval-model"


def _paused_run_id(deadline: float, tracking_uri: str):
    """The gate's paused run: this test's own (the harness's Prefect outlives each test)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType

    with get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            runs = client.read_flow_runs(
                flow_run_filter=FlowRunFilter(
                    state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.PAUSED]))
                )
            )
            mine = [run for run in runs if run.parameters.get("tracking_uri") == tracking_uri]
            if mine:
                return mine[0].id
            time.sleep(1)
    raise AssertionError("the gate never paused for approval")


def _approval_gate(model, tmp_path):
    """The clean model registered, and a policy whose passes wait for approval."""
    import mlflow

    batch = make_lesions(16, ruler="always", seed=100)
    write_audit_set(tmp_path / "audit", batch.images, batch.labels, batch.masks, CLASS_NAMES)
    with mlflow.start_run():
        mlflow.pytorch.log_model(
            model,
            name="model",
            registered_model_name=MODEL,
            serialization_format="pickle",
            metadata={"class_names": list(CLASS_NAMES)},
            pip_requirements=["torch"],
        )
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        EXAMPLE_POLICY.replace("model: lesion-classifier", f"model: {MODEL}")
        .replace("approval: false", "approval: true")
        .replace("images: 16", "images: 4")
    )
    return policy


@pytest.mark.parametrize(("approve", "verdict"), [(True, "passed"), (False, "blocked")])
def test_a_pass_waits_for_a_person_and_their_answer_decides(
    trained_pair, tracking_uri, tmp_path, approve, verdict, registry
):
    from prefect.flow_runs import resume_flow_run

    policy = _approval_gate(trained_pair.clean, tmp_path)
    outcomes = []
    gate = threading.Thread(
        target=lambda: outcomes.append(
            run_gate(MODEL, "1", policy_file=str(policy), tracking_uri=tracking_uri)
        )
    )
    gate.start()
    run_id = _paused_run_id(time.monotonic() + 300, tracking_uri)
    resume_flow_run(run_id, run_input={"approve": approve, "reviewer": "ana", "note": "seen"})
    gate.join(timeout=300)
    (outcome,) = outcomes
    assert outcome.verdict.value == verdict
    assert outcome.promoted is approve
    state = registry(MODEL, "1")
    assert state.verdict == verdict and state.holds_alias is approve
    assert state.alias_holder == ("1" if approve else None)
    assert state.run_id == outcome.run_id
    if not approve:
        assert "approval refused by ana: seen" in state.tags["xai_gate.reason"]


def test_no_answer_within_the_timeout_is_recorded_as_blocked(
    trained_pair, tracking_uri, tmp_path, registry, monkeypatch
):
    import flows.reporting

    monkeypatch.setattr(flows.reporting, "APPROVAL_TIMEOUT_SECONDS", 3)
    policy = _approval_gate(trained_pair.clean, tmp_path)
    outcome = run_gate(MODEL, "1", policy_file=str(policy), tracking_uri=tracking_uri)
    assert outcome.verdict.value == "blocked" and not outcome.promoted
    assert outcome.reasons == ["no approval within 3 s"]
    state = registry(MODEL, "1")
    assert (state.verdict, state.alias_holder, state.run_id) == ("blocked", None, outcome.run_id)
    assert state.tags["xai_gate.reason"] == "no approval within 3 s"
