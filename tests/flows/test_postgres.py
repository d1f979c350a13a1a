"""The gate and the registry guard on a real shared database: PostgreSQL, not sqlite.

Runs wherever a PostgreSQL server can be started (``.ci/run`` installs Debian's);
elsewhere it skips loudly, and under ``CI=true`` a missing server fails the run.
"""

from __future__ import annotations

import mlflow
import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from flows.run import run_gate
from pipelines.verdict.decision import Verdict

pytestmark = pytest.mark.slow
MODEL = "pg-model"
SECRET = "pg-secret"


def test_the_gate_and_the_guard_on_postgresql(
    postgres_uri, trained_pair, lesion_gate, tmp_path, monkeypatch
):
    guarded = f"xai-gate+{postgres_uri}"
    monkeypatch.chdir(tmp_path)  # the store's artifacts land here
    monkeypatch.setenv("XAI_GATE_SECRET", SECRET)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", postgres_uri)
    monkeypatch.setenv("MLFLOW_REGISTRY_URI", guarded)
    mlflow.set_tracking_uri(postgres_uri)
    mlflow.set_registry_uri(guarded)
    try:
        mlflow.set_experiment("training")
        for model in (trained_pair.shortcut, trained_pair.clean):
            lesion_gate.register(model, MODEL)
        policy = lesion_gate.policy(tmp_path, MODEL)
        blocked = run_gate(MODEL, "1", policy_file=str(policy), tracking_uri=postgres_uri)
        passed = run_gate(MODEL, "2", policy_file=str(policy), tracking_uri=postgres_uri)
        assert blocked.verdict is Verdict.BLOCKED and not blocked.promoted
        assert passed.verdict is Verdict.PASSED and passed.promoted  # through the guard

        client = MlflowClient()
        assert client._registry_uri == guarded
        assert str(client.get_model_version_by_alias(MODEL, "champion").version) == "2"
        client.set_model_version_tag(MODEL, "1", "xai_gate.verdict", "passed")  # by hand
        with pytest.raises(MlflowException, match="refuses alias 'champion' for pg-model"):
            client.set_registered_model_alias(MODEL, "champion", "1")
        runs = mlflow.search_runs(experiment_names=["xai-gate"], output_format="list")
        assert sorted(r.info.run_id for r in runs) == sorted([blocked.run_id, passed.run_id])
        assert client.get_run(passed.run_id).data.metrics["gradcam.spurious_mass"] < 0.3
    finally:
        mlflow.set_registry_uri(None)
