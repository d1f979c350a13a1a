"""Recorded verdicts are never lost, never stale and never duplicated, whatever the caller does."""

from __future__ import annotations

import html
import json
import os
import subprocess
import threading
import time
from pathlib import Path

import mlflow
import pytest
import yaml
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from PIL import Image

from flows.run import exit_code, run_gate
from pipelines.tracking.models import logged_model_id
from pipelines.verdict.decision import Verdict
from pipelines.verdict.signing import identity_of, verify_passed

pytestmark = pytest.mark.slow
MODEL = "records-model"
SECRET = "records-secret"


@pytest.fixture
def champion(trained_pair, lesion_gate, tracking_uri, tmp_path, monkeypatch) -> Path:
    """The clean model as v1, passed and holding 'champion'; returns its policy file."""
    monkeypatch.setenv("XAI_GATE_SECRET", SECRET)
    lesion_gate.register(trained_pair.clean, MODEL)
    policy = lesion_gate.policy(tmp_path, MODEL)
    outcome = run_gate(MODEL, "1", policy_file=str(policy))
    assert outcome.verdict is Verdict.PASSED and outcome.promoted
    return policy


def _tags() -> dict[str, str]:
    return dict(MlflowClient().get_model_version(MODEL, "1").tags)


def _champion() -> str | None:
    try:
        return str(MlflowClient().get_model_version_by_alias(MODEL, "champion").version)
    except MlflowException:
        return None


def _evidence_runs() -> int:
    return len(mlflow.search_runs(experiment_names=["xai-gate"], output_format="list"))


def _edited_policy(policy: Path, folder: Path, **changes: object) -> Path:
    data = yaml.safe_load(policy.read_text())
    data["audit_set"] = str((policy.parent / data["audit_set"]).resolve())
    data.update(changes)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "policy.yaml").write_text(yaml.safe_dump(data))
    return folder / "policy.yaml"


def test_option_and_policy_mistakes_touch_no_version(champion, tmp_path, monkeypatch):
    before, runs = _tags(), _evidence_runs()
    audit_set = yaml.safe_load(champion.read_text())["audit_set"]
    mistakes = [
        run_gate(MODEL, "1", champion.parent / audit_set, max_spurious_mass=30),
        run_gate(MODEL, "1", champion.parent / audit_set, alias="latest"),
        run_gate("another-model", "1", policy_file=str(champion)),
        run_gate(MODEL, "9", policy_file=str(champion)),  # no such version
    ]
    signed = _edited_policy(champion, tmp_path / "signed", require_signature=True)
    monkeypatch.delenv("XAI_GATE_SECRET")
    mistakes.append(run_gate(MODEL, "1", policy_file=str(signed)))
    other_model = _edited_policy(champion, tmp_path / "other", model="never-gated")
    mistakes.append(run_gate(MODEL, "1", policy_file=str(other_model)))
    reasons = [outcome.reasons[0] for outcome in mistakes]
    assert all(o.verdict is Verdict.ERROR and exit_code(o) == 2 for o in mistakes), reasons
    assert "max_spurious_mass" in reasons[0] and "reserved by MLflow" in reasons[1]
    assert "does not match the policy's model" in reasons[2]
    assert "has no version '9'" in reasons[3] and "require_signature" in reasons[4]
    assert _tags() == before and _champion() == "1" and _evidence_runs() == runs
    with pytest.raises(MlflowException):
        MlflowClient().get_registered_model("never-gated")


def test_the_flow_itself_leaves_the_version_alone_on_a_caller_error(champion, monkeypatch):
    """The flow's own pre-flight (a deployment calls it without run_gate): no error tag."""
    from flows.xai_gate import xai_gate
    from pipelines.policy import load_policy

    before = _tags()
    policy = load_policy(champion).model_copy(update={"require_signature": True})
    monkeypatch.delenv("XAI_GATE_SECRET")
    state = xai_gate(policy, "1", return_state=True)
    assert state.is_failed() and "require_signature" in state.message
    assert _tags() == before and _champion() == "1"


def test_an_error_during_a_gate_keeps_the_verdict_and_records_the_attempt(champion, monkeypatch):
    import flows.xai_gate as gate_flow

    before = _tags()

    def broken(*args, **kwargs):
        raise RuntimeError("the audit broke")

    with monkeypatch.context() as patch:
        patch.setattr(gate_flow, "validate_evidence", broken)
        failed = run_gate(MODEL, "1", policy_file=str(champion), force=True)
    assert failed.verdict is Verdict.ERROR and exit_code(failed) == 2
    tags = _tags()
    kept = ("xai_gate.verdict", "xai_gate.run_id", "xai_gate.policy_hash", "xai_gate.signature")
    assert {key: tags[key] for key in kept} == {key: before[key] for key in kept}
    identity = identity_of(MlflowClient().get_model_version(MODEL, "1"))
    assert verify_passed(SECRET.encode(), tags=tags, **identity) is None
    assert tags["xai_gate.last_error"].endswith("RuntimeError: the audit broke")
    history = json.loads(tags["xai_gate.history"])
    assert [entry["verdict"] for entry in history] == ["passed", "error"]
    assert history[1]["reason"] == "RuntimeError: the audit broke"
    assert _champion() == "1"
    again = run_gate(MODEL, "1", policy_file=str(champion), force=True)
    assert again.verdict is Verdict.PASSED
    tags = _tags()
    assert "xai_gate.last_error" not in tags
    assert [e["verdict"] for e in json.loads(tags["xai_gate.history"])] == [
        "passed",
        "error",
        "passed",
    ]


@pytest.mark.parametrize("holder", ["keep", "remove"])
def test_regating_the_champion_blocked_is_the_policys_decision(champion, tmp_path, holder):
    stricter = _edited_policy(
        champion,
        tmp_path / holder,
        checks={
            "heatmaps": {"max_spurious_mass": 0.0, "methods": ["gradcam"]},
            "attribution_alone": "block",
        },
        on_alias_holder_blocked=holder,
    )
    outcome = run_gate(MODEL, "1", policy_file=str(stricter))
    assert outcome.verdict is Verdict.BLOCKED
    warning = outcome.warnings[0]
    assert warning.startswith("v1 holds 'champion' but is now blocked")
    assert f"on_alias_holder_blocked: {holder}" in warning and warning in outcome.message
    assert _champion() == ("1" if holder == "keep" else None)
    assert _tags()["xai_gate.verdict"] == "blocked"
    report = mlflow.artifacts.download_artifacts(
        run_id=outcome.run_id, artifact_path="xai/report.html", dst_path=str(tmp_path / holder)
    )
    assert "holds 'champion' but is now blocked" in html.unescape(Path(report).read_text())


def test_changed_images_or_masks_are_gated_again_never_reused(champion):
    audit = champion.parent / "audit"
    first_run = _tags()["xai_gate.run_id"]
    image = audit / "images/00003.png"
    pixels = Image.open(image).convert("RGB")
    pixels.putpixel((0, 0), (0, 0, 0) if pixels.getpixel((0, 0)) != (0, 0, 0) else (9, 9, 9))
    pixels.save(image)
    edited = run_gate(MODEL, "1", policy_file=str(champion))
    assert not edited.reused and edited.run_id != first_run
    (audit / "masks/00002.png").unlink()
    deleted = run_gate(MODEL, "1", policy_file=str(champion))
    assert not deleted.reused and deleted.verdict is Verdict.ERROR
    assert "masks/00002.png" in deleted.reasons[0]
    assert _tags()["xai_gate.verdict"] == "passed"  # the error did not erase the verdict


def test_two_spellings_of_one_version_and_one_store_are_one_gate(champion, tmp_path):
    """'01' is v1, and sqlite:///mlflow.db (from the cwd) is the absolute path: one lock."""
    absolute, relative = os.environ["MLFLOW_TRACKING_URI"], "sqlite:///mlflow.db"
    assert Path.cwd() == tmp_path
    policy = _edited_policy(champion, tmp_path / "again", batch_size=8)  # no verdict to reuse
    runs, outcomes = _evidence_runs(), []
    start = threading.Barrier(2)

    def gate(version: str, uri: str) -> None:
        start.wait()
        outcomes.append(run_gate(MODEL, version, policy_file=str(policy), tracking_uri=uri))

    threads = [
        threading.Thread(target=gate, args=("01", relative)),
        threading.Thread(target=gate, args=("1", absolute)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=600)
    assert sorted(o.version for o in outcomes) == ["1", "1"]
    assert {o.verdict for o in outcomes} == {Verdict.PASSED}
    # One lock for both spellings: one gated, the other waited and reused its verdict.
    assert sorted(o.reused for o in outcomes) == [False, True]
    assert _evidence_runs() == runs + 1
    history = json.loads(_tags()["xai_gate.history"])
    assert [entry["verdict"] for entry in history] == ["passed", "passed"]


def _read_only(path: Path) -> None:
    if os.geteuid() == 0:  # root writes through permissions: make the file immutable
        subprocess.run(["chattr", "+i", str(path)], check=True)
    else:
        path.chmod(0o444)


def _writable(path: Path) -> None:
    if os.geteuid() == 0:
        subprocess.run(["chattr", "-i", str(path)], check=True)
    else:
        path.chmod(0o644)


def test_a_read_only_store_is_refused_before_any_compute(champion, tmp_path):
    database = tmp_path / "mlflow.db"
    _read_only(database)
    try:
        started = time.monotonic()
        outcome = run_gate(MODEL, "1", policy_file=str(champion), force=True)
        elapsed = time.monotonic() - started
    finally:
        _writable(database)
    assert outcome.verdict is Verdict.ERROR and outcome.caller_error
    assert "refuses writes" in outcome.reasons[0] or "read-only" in outcome.reasons[0]
    assert str(database) in outcome.reasons[0]
    assert elapsed < 60  # refused up front, not after the audit
    assert _tags()["xai_gate.verdict"] == "passed" and _champion() == "1"


def test_the_verdict_and_its_metrics_show_where_reviewers_look(champion):
    """The version's description leads with the verdict and links the evidence; the gate's
    metrics are logged against the version's logged model, whose input the run names."""
    client = MlflowClient()
    version = client.get_model_version(MODEL, "1")
    run_id = version.tags["xai_gate.run_id"]
    run = client.get_run(run_id)
    assert version.description.startswith(
        "xai-gate: passed (every check within its bound) · [evidence run]"
        f"(#/experiments/{run.info.experiment_id}/runs/{run_id})"
    )
    model_id = logged_model_id(version)  # the client leaves model_id empty; the source names it
    assert model_id and version.source == f"models:/{model_id}"
    on_model = client.get_logged_model(model_id).metrics
    on_run = run.data.metrics  # the latest value of each (curves have steps)
    assert on_run and all(
        value in {m.value for m in on_model if m.key == key} for key, value in on_run.items()
    )
    assert {m.run_id for m in on_model if m.key in on_run} == {run_id}
    assert [m.model_id for m in run.inputs.model_inputs] == [model_id]
