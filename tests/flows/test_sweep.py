"""The sweeper, its per-version lock, policies in the flow, and the Prefect artifacts."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import torch
from mlflow import MlflowClient

from flows.sweep import sweep_deployment, ungated_versions, xai_gate_sweep
from pipelines.audit_sets.images import write_audit_set
from pipelines.policy import EXAMPLE_POLICY
from xai_checks.examples.synthetic import CLASS_NAMES, make_lesions
from xai_checks.examples.toy_models import SmallCNN

MODEL = "sweep-model"


def _register(count: int) -> None:
    import mlflow

    for seed in range(count):
        torch.manual_seed(seed)
        with mlflow.start_run():
            mlflow.pytorch.log_model(
                SmallCNN(),
                name="model",
                registered_model_name=MODEL,
                serialization_format="pickle",
                metadata={"class_names": list(CLASS_NAMES)},
                pip_requirements=["torch"],
            )


SECRET = "sweep-secret-value"


@pytest.fixture
def policy_file(tracking_uri, tmp_path: Path, monkeypatch) -> Path:
    monkeypatch.setenv("XAI_GATE_SECRET", SECRET)
    batch = make_lesions(8, ruler="always", seed=5)
    write_audit_set(tmp_path / "audit", batch.images, batch.labels, batch.masks, CLASS_NAMES)
    text = (
        EXAMPLE_POLICY.replace("model: lesion-classifier", f"model: {MODEL}")
        .replace("methods: [gradcam, layercam]", "methods: [gradcam]")
        .replace("images: 16", "images: 2")
    )
    path = tmp_path / "policy.yaml"
    path.write_text(text)
    _register(2)
    return path


def _evidence_runs(version: str) -> int:
    import mlflow

    runs = mlflow.search_runs(
        experiment_names=["xai-gate"],
        filter_string=f"tags.`xai_gate.model_version` = '{version}'",
    )
    return len(runs)


def test_two_sweeps_racing_give_each_version_exactly_one_verdict(policy_file, tracking_uri):
    assert ungated_versions(MODEL) == ["1", "2"]
    results: list[list] = []
    errors: list[BaseException] = []

    def sweep() -> None:
        try:
            results.append(xai_gate_sweep(str(policy_file), tracking_uri))
        except BaseException as exc:  # surfaced below, with the thread's result
            errors.append(exc)

    threads = [threading.Thread(target=sweep) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=600)
    assert not errors, errors
    gated = sorted(outcome.version for result in results for outcome in result)
    assert gated == ["1", "2"]  # each version once, across both sweepers
    assert _evidence_runs("1") == 1 and _evidence_runs("2") == 1
    client = MlflowClient()
    for version in ("1", "2"):
        tags = client.get_model_version(MODEL, version).tags
        assert tags["xai_gate.verdict"] in {"passed", "blocked", "inconclusive"}
        assert len(tags["xai_gate.policy_hash"]) == 64
    assert ungated_versions(MODEL) == []
    assert xai_gate_sweep(str(policy_file), tracking_uri) == []  # nothing left to gate
    # Verdicts are signed, and the secret itself is nowhere in what was logged.
    import mlflow

    for version in ("1", "2"):
        tags = client.get_model_version(MODEL, version).tags
        assert len(tags["xai_gate.signature"]) == 64 and SECRET not in str(tags)
    runs = mlflow.search_runs(experiment_names=["xai-gate"])
    assert SECRET not in runs.to_csv()


def test_each_gate_run_publishes_a_summary_and_a_table_artifact(policy_file, tracking_uri):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
    from prefect.client.schemas.sorting import ArtifactSort

    (outcome,) = xai_gate_sweep(str(policy_file), tracking_uri)[:1]
    with get_client(sync_client=True) as client:

        def read(key: str):
            found = client.read_artifacts(
                artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])),
                sort=ArtifactSort.CREATED_DESC,
            )
            assert found, key
            return found[0]

        summary = read(f"xai-gate-{MODEL}-v{outcome.version}")
        table = read(f"xai-gate-{MODEL}-v{outcome.version}-metrics")
    assert summary.type == "markdown"
    assert f"{MODEL} v{outcome.version}: **{outcome.verdict.value}**" in summary.data
    assert outcome.run_id in summary.data
    assert table.type == "table"
    assert "gradcam.spurious_mass" in str(table.data)


def test_serve_builds_a_scheduled_sweeper_deployment(policy_file, tracking_uri):
    deployment = sweep_deployment(policy_file, cron="0 * * * *", tracking_uri=tracking_uri)
    assert deployment.name == f"xai-gate-{MODEL}"
    assert deployment.parameters == {"policy_file": str(policy_file), "tracking_uri": tracking_uri}
    (schedule,) = deployment.schedules
    assert schedule.schedule.cron == "0 * * * *"


def test_a_gate_killed_while_writing_leaves_no_verdict_so_the_sweeper_gates_again(
    tracking_uri,
):
    """Every tag but the verdict written (the process died before the last one)."""
    _register(1)
    client = MlflowClient()
    for key, value in {
        "xai_gate.run_id": "r",
        "xai_gate.reason": "x",
        "xai_gate.signature": "ab" * 32,
    }.items():
        client.set_model_version_tag(MODEL, "1", key, value)
    assert ungated_versions(MODEL) == ["1"]
