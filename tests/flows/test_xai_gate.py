"""The gate flow on the failure paths: reruns, racing gates, crashes, a server that dies."""

from __future__ import annotations

import threading
from pathlib import Path

import mlflow
import pytest
import torch
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from flows.run import exit_code, run_gate
from pipelines.verdict.decision import Verdict
from pipelines.verdict.signing import identity_of, verify_passed

pytestmark = pytest.mark.slow
MODEL = "gate-model"
SECRET = "gate-test-secret"


@pytest.fixture
def clean_version(trained_pair, lesion_gate, tracking_uri, tmp_path, monkeypatch) -> Path:
    """The clean model as version 1, and a policy it passes; returns the policy file."""
    monkeypatch.setenv("XAI_GATE_SECRET", SECRET)
    lesion_gate.register(trained_pair.clean, MODEL)
    return lesion_gate.policy(tmp_path, MODEL)


def _evidence_runs() -> list[str]:
    runs = mlflow.search_runs(experiment_names=["xai-gate"], output_format="list")
    return sorted(run.info.run_id for run in runs)


class AliasMoves:
    """Counts the calls that really move an alias (the call goes through)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[tuple[str, str, str]] = []
        original = MlflowClient.set_registered_model_alias

        def counted(client, name, alias, version):
            self.calls.append((name, alias, str(version)))
            return original(client, name, alias, version)

        monkeypatch.setattr(MlflowClient, "set_registered_model_alias", counted)


def test_a_rerun_reuses_the_verdict_and_moves_no_alias(
    clean_version, lesion_gate, monkeypatch, tmp_path
):
    policy = str(clean_version)
    moves = AliasMoves(monkeypatch)
    first = run_gate(MODEL, "1", policy_file=policy)
    assert first.verdict is Verdict.PASSED and first.promoted and not first.reused
    assert moves.calls == [(MODEL, "champion", "1")]
    assert len(_evidence_runs()) == 1

    again = run_gate(MODEL, "1", policy_file=policy)
    assert again.reused and again.verdict is Verdict.PASSED and exit_code(again) == 0
    assert again.run_id == first.run_id and not again.promoted
    assert "[reused: already gated under this policy and audit set]" in again.message
    assert len(_evidence_runs()) == 1 and len(moves.calls) == 1

    forced = run_gate(MODEL, "1", policy_file=policy, force=True)
    assert not forced.reused and forced.verdict is Verdict.PASSED and forced.promoted
    assert len(_evidence_runs()) == 2
    assert len(moves.calls) == 1  # the alias already points at v1: not moved again
    tags = MlflowClient().get_model_version(MODEL, "1").tags
    assert tags["xai_gate.run_id"] == forced.run_id

    # Another rule, or other audit data, is another question: gated again.
    stricter = lesion_gate.policy(tmp_path / "stricter", MODEL, rules={"max_flip_rate": 0.19})
    assert not run_gate(MODEL, "1", policy_file=str(stricter)).reused
    other_data = lesion_gate.policy(tmp_path / "other", MODEL, seed=7)
    assert not run_gate(MODEL, "1", policy_file=str(other_data)).reused
    assert len(_evidence_runs()) == 4


def test_a_verdict_that_does_not_verify_is_not_reused(clean_version):
    policy = str(clean_version)
    first = run_gate(MODEL, "1", policy_file=policy)
    MlflowClient().set_model_version_tag(MODEL, "1", "xai_gate.run_id", "edited")
    again = run_gate(MODEL, "1", policy_file=policy)
    assert not again.reused and again.run_id != first.run_id
    assert len(_evidence_runs()) == 2


def test_two_gates_at_once_on_one_version_give_one_consistent_verdict(clean_version):
    policy = str(clean_version)
    outcomes = []
    start = threading.Barrier(2)

    def gate() -> None:
        start.wait()
        outcomes.append(run_gate(MODEL, "1", policy_file=policy))

    threads = [threading.Thread(target=gate) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=600)
    assert len(outcomes) == 2
    assert {o.verdict for o in outcomes} == {Verdict.PASSED}
    assert sorted(o.reused for o in outcomes) == [False, True]  # one gated, one waited
    assert len(_evidence_runs()) == 1
    entity = MlflowClient().get_model_version(MODEL, "1")
    tags = entity.tags
    assert verify_passed(SECRET.encode(), tags=tags, **identity_of(entity)) is None
    assert tags["xai_gate.run_id"] == _evidence_runs()[0]


def test_an_unexpected_failure_is_recorded_as_error_and_never_promotes(clean_version, monkeypatch):
    import flows.xai_gate as gate_flow

    def broken(*args, **kwargs):
        raise RuntimeError("the audit broke")

    with monkeypatch.context() as patch:
        patch.setattr(gate_flow, "validate_evidence", broken)
        outcome = run_gate(MODEL, "1", policy_file=str(clean_version))
    assert outcome.verdict is Verdict.ERROR and exit_code(outcome) == 2
    assert outcome.reasons == ["RuntimeError: the audit broke"]
    tags = MlflowClient().get_model_version(MODEL, "1").tags
    assert tags["xai_gate.verdict"] == "error"
    assert tags["xai_gate.reason"] == "RuntimeError: the audit broke"
    with pytest.raises(MlflowException):
        MlflowClient().get_model_version_by_alias(MODEL, "champion")
    # An error is never reused: the next gate runs in full and passes.
    retried = run_gate(MODEL, "1", policy_file=str(clean_version))
    assert retried.verdict is Verdict.PASSED and not retried.reused and retried.promoted


def test_the_server_dying_while_evidence_is_logged_ends_in_error_and_no_alias(
    trained_pair, lesion_gate, tmp_path, monkeypatch
):
    """A real ``mlflow server`` is killed (its whole process group) halfway through logging."""
    import flows.xai_gate as gate_flow
    from flows.example import start_mlflow_server
    from pipelines.tracking import close_orphaned_runs

    monkeypatch.setenv("XAI_GATE_SECRET", SECRET)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    monkeypatch.chdir(tmp_path)
    store = tmp_path / "store"
    store.mkdir()
    server = start_mlflow_server(store)
    try:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", server.uri)
        mlflow.set_tracking_uri(server.uri)
        mlflow.set_experiment("training")  # forget an experiment id cached from another store
        lesion_gate.register(trained_pair.clean, MODEL)
        policy = str(lesion_gate.policy(tmp_path, MODEL))

        original = gate_flow.log_gate_evidence
        attempts = []

        def counted_close(*args):
            attempts.append(1)  # the first thing each attempt of the log-evidence task does
            return close_orphaned_runs(*args)

        def log_then_lose_the_server(**kwargs):
            figures = dict(kwargs["figures"])
            first = next(iter(figures))
            draw = figures[first]

            def kill_then_draw():
                if server.process.poll() is None:  # params, metrics, tables are logged by now
                    server.kill()
                return draw()

            figures[first] = kill_then_draw
            return original(**{**kwargs, "figures": figures})

        monkeypatch.setattr(gate_flow, "log_gate_evidence", log_then_lose_the_server)
        monkeypatch.setattr(gate_flow, "close_orphaned_runs", counted_close)
        outcome = run_gate(MODEL, "1", policy_file=policy, tracking_uri=server.uri)
    finally:
        server.kill()
    assert outcome.verdict is Verdict.ERROR and exit_code(outcome) == 2
    (reason,) = outcome.reasons
    assert reason.startswith(f"could not log the evidence to MLflow at {server.uri}: ")
    assert len(attempts) == 3  # the log-evidence task is retried twice

    monkeypatch.setattr(gate_flow, "log_gate_evidence", original)
    monkeypatch.setattr(gate_flow, "close_orphaned_runs", close_orphaned_runs)
    restarted = start_mlflow_server(store)
    try:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", restarted.uri)
        mlflow.set_tracking_uri(restarted.uri)
        client = MlflowClient()
        assert "xai_gate.verdict" not in client.get_model_version(MODEL, "1").tags
        with pytest.raises(MlflowException):
            client.get_model_version_by_alias(MODEL, "champion")
        (half,) = mlflow.search_runs(experiment_names=["xai-gate"], output_format="list")
        assert half.info.status == "RUNNING"  # left by the gate that lost its server

        retried = run_gate(MODEL, "1", policy_file=policy, tracking_uri=restarted.uri)
        assert retried.verdict is Verdict.PASSED and retried.promoted
        closed = client.get_run(half.info.run_id)
        assert closed.info.status == "FAILED"
        assert closed.data.tags["xai_gate.orphaned"] == "left unfinished by a gate that died"
        assert client.get_run(retried.run_id).info.status == "FINISHED"
    finally:
        restarted.kill()


def test_a_model_that_produces_nan_ends_in_error_never_passed(
    lesion_gate, tracking_uri, tmp_path, monkeypatch
):
    from xai_checks.examples.toy_models import SmallCNN

    monkeypatch.setenv("XAI_GATE_SECRET", SECRET)
    broken = SmallCNN()
    with torch.no_grad():
        next(broken.parameters()).fill_(float("nan"))  # the first conv: NaN all the way up
    lesion_gate.register(broken, MODEL)
    outcome = run_gate(MODEL, "1", policy_file=str(lesion_gate.policy(tmp_path, MODEL)))
    assert outcome.verdict is Verdict.ERROR and exit_code(outcome) == 2
    (reason,) = outcome.reasons
    assert "of target layer" in reason and "contain NaN or Inf" in reason, reason
    assert MlflowClient().get_model_version(MODEL, "1").tags["xai_gate.verdict"] == "error"
    assert MlflowClient().get_registered_model(MODEL).aliases == {}


def test_the_signing_secret_appears_nowhere(clean_version, caplog, capfd):
    """Not in logs, console, MLflow params, tags, metrics or artifacts, nor Prefect artifacts."""
    import logging

    from prefect.client.orchestration import get_client

    caplog.set_level(logging.DEBUG)
    outcome = run_gate(MODEL, "1", policy_file=str(clean_version))
    assert outcome.verdict is Verdict.PASSED
    client = MlflowClient()
    run = client.get_run(outcome.run_id)
    haystacks = [
        caplog.text,
        *capfd.readouterr(),
        str(run.data),
        str(client.get_model_version(MODEL, "1").tags),
    ]
    folder = Path(mlflow.artifacts.download_artifacts(run_id=outcome.run_id))
    files = [p for p in folder.rglob("*") if p.is_file()]
    assert any(p.name == "report.html" for p in files)
    haystacks += [p.read_bytes().decode("latin-1") for p in files]
    with get_client(sync_client=True) as prefect:
        haystacks += [str(a.data) + str(a.description) for a in prefect.read_artifacts()]
    assert all(SECRET not in text for text in haystacks)
    assert len(client.get_model_version(MODEL, "1").tags["xai_gate.signature"]) == 64


def test_a_pass_the_guarded_registry_refuses_exits_4_and_is_promoted_by_a_signed_rerun(
    trained_pair, lesion_gate, tracking_uri, tmp_path, monkeypatch
):
    """The CLI without the secret before a guarded registry: passed, NOT PROMOTED, exit 4; a
    rerun tries the alias again (still 4, not 'passed [reused]' 0); signed, it is promoted."""
    monkeypatch.delenv("XAI_GATE_SECRET", raising=False)
    # The guarded registry for this test only: monkeypatch restores MLflow's global too.
    monkeypatch.setenv("MLFLOW_REGISTRY_URI", f"xai-gate+{tracking_uri}")
    monkeypatch.setattr(
        "mlflow.tracking._model_registry.utils._registry_uri", f"xai-gate+{tracking_uri}"
    )
    lesion_gate.register(trained_pair.clean, MODEL)
    policy = str(lesion_gate.policy(tmp_path, MODEL))
    refused = (
        f"xai-gate refuses alias 'champion' for {MODEL} version 1: the guard has no "
        "XAI_GATE_SECRET, so no verdict can be verified"
    )
    first = run_gate(MODEL, "1", policy_file=policy)
    assert (first.verdict, first.promoted, exit_code(first)) == (Verdict.PASSED, False, 4)
    assert first.message.startswith(f"{MODEL} v1 passed, NOT PROMOTED: alias 'champion' was ")
    assert first.not_promoted == refused
    again = run_gate(MODEL, "1", policy_file=policy)
    assert again.reused and exit_code(again) == 4 and again.not_promoted == refused
    assert len(_evidence_runs()) == 1  # the alias was tried again; nothing was re-judged
    with pytest.raises(MlflowException):
        MlflowClient().get_model_version_by_alias(MODEL, "champion")
    monkeypatch.setenv("XAI_GATE_SECRET", SECRET)
    signed = run_gate(MODEL, "1", policy_file=policy)
    assert (signed.verdict, signed.promoted, exit_code(signed)) == (Verdict.PASSED, True, 0)
    assert str(MlflowClient().get_model_version_by_alias(MODEL, "champion").version) == "1"
    assert "xai_gate.promotion_error" not in MlflowClient().get_model_version(MODEL, "1").tags
