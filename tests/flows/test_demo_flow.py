"""End to end: train, register, gate through the Prefect flow, evidence in MLflow."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from mlflow import MlflowClient
from typer.testing import CliRunner

from flows.cli import app
from flows.demo import DemoConfig, champion_version, run_demo
from flows.outcome import GateOutcome
from flows.xai_gate import xai_gate
from pipelines.policy import GatePolicy
from pipelines.verdict.decision import Verdict

pytestmark = pytest.mark.slow
MODEL = "lesion-classifier"
TEXT_MODEL = "review-classifier"
UNLABELLED = "lesion-classifier-unlabelled"
FIXED = "lesion-classifier-fixed-tag"


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """The demo at its real size, in a temp dir with its own sqlite store."""
    workdir = tmp_path_factory.mktemp("demo")
    uri = f"sqlite:///{workdir / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(workdir)
        patch.setenv("MLFLOW_TRACKING_URI", uri)
        mlflow.set_tracking_uri(uri)
        rows = run_demo(DemoConfig(workdir=workdir, tracking_uri=uri))
        yield workdir, uri, rows


@pytest.fixture
def own_store(demo, tmp_path, monkeypatch):
    """The demo's registry copied for a test that gates again: the shared one stays as the
    demo left it, whatever order the tests run in. Models and audit sets are read in place."""
    import shutil

    workdir, uri, rows = demo
    shutil.copy(workdir / "mlflow.db", tmp_path / "mlflow.db")
    copy = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", copy)
    mlflow.set_tracking_uri(copy)
    yield workdir, copy, rows
    mlflow.set_tracking_uri(uri)


def test_shortcut_version_blocked_clean_version_promoted(demo):
    _, _, rows = demo
    v1, v2 = (row.outcome for row in rows[:2])
    assert (v1.version, v1.verdict, v1.promoted) == ("1", Verdict.BLOCKED, False)
    assert (v2.version, v2.verdict, v2.promoted) == ("2", Verdict.PASSED, True)
    assert "spurious_mass mean" in v1.message and "exceeds max_spurious_mass 0.300" in v1.message
    # Blocked on independent lines of evidence, not only on where the heatmap sits.
    assert "removal flip rate" in v1.message and "spurious lift" in v1.message
    assert v1.summary["counterfactual.removal_flip_rate"] > 0.8
    assert v2.summary["counterfactual.removal_flip_rate"] < 0.1
    assert v1.summary["sanity.final_spearman"] < 0.5 and v2.summary["sanity.final_spearman"] < 0.5
    assert champion_version(MODEL) == "2"
    # The story the table tells: v1 looks perfect in distribution and fails without rulers.
    assert rows[0].accuracy > 0.98 and rows[0].accuracy_no_shortcut < 0.6
    assert rows[1].accuracy_no_shortcut > 0.75


def test_text_shortcut_version_blocked_clean_version_promoted(demo):
    _, _, rows = demo
    v1, v2 = (row.outcome for row in rows[2:4])
    assert (v1.model_name, v1.version, v1.verdict) == (TEXT_MODEL, "1", Verdict.BLOCKED)
    assert (v2.version, v2.verdict, v2.promoted) == ("2", Verdict.PASSED, True)
    for check in ("spurious_mass mean", "removal flip rate", "spurious lift"):
        assert check in v1.message
    assert champion_version(TEXT_MODEL) == "2"
    assert champion_version(MODEL) == "2"
    # Signed reviews look perfect to v1; unsigned ones are a coin toss.
    assert rows[2].accuracy > 0.98 and rows[2].accuracy_no_shortcut < 0.6
    assert rows[3].accuracy_no_shortcut > 0.65


def test_without_masks_discovery_finds_the_ruler_and_blocks_v1(demo):
    workdir, _, rows = demo
    v1, v2 = (row.outcome for row in rows[4:6])
    assert (v1.model_name, v1.verdict, v1.promoted) == (UNLABELLED, Verdict.BLOCKED, False)
    assert (v2.model_name, v2.verdict, v2.promoted) == (UNLABELLED, Verdict.PASSED, True)
    assert "discovery found an unlabelled shortcut: strategy #1 of class 'malignant'" in (
        v1.message
    )
    assert v1.summary["discovery.top_suspicion"] > 0.5 > v2.summary["discovery.top_suspicion"]
    assert v1.summary["discovery.top_flip_rate"] > 0.8
    header = (workdir / "audit" / "unlabelled.csv").read_text().splitlines()[0]
    assert header == "image,label"  # nobody labelled the rulers
    client = MlflowClient()
    tags = client.get_model_version(UNLABELLED, "1").tags
    assert tags["xai_gate.checks"] == "sanity,discovery"
    # The same logged models as the labelled registry entry, gated a second way.
    for version in "12":
        assert (
            client.get_model_version(UNLABELLED, version).source
            == client.get_model_version(MODEL, version).source
        )
    table = pd.read_csv(client.download_artifacts(tags["xai_gate.run_id"], "xai/discovery.csv"))
    assert table.loc[0, "status"] == "confirmed" and table.loc[0, "class"] == "malignant"
    assert champion_version(UNLABELLED) == "2"


def test_without_masks_discovery_finds_a_tag_in_one_fixed_corner_and_blocks_v1(demo):
    """One place on every image: one cluster of heatmaps, found by what its region holds."""
    _, _, rows = demo
    v1, v2 = (row.outcome for row in rows[6:8])
    assert (v1.model_name, v1.verdict, v1.promoted) == (FIXED, Verdict.BLOCKED, False)
    assert (v2.model_name, v2.verdict, v2.promoted) == (FIXED, Verdict.PASSED, True)
    assert "discovery found an unlabelled shortcut: strategy #1 of class 'malignant'" in (
        v1.message
    )
    assert "suspicious by" in v1.message
    assert "presence" in v1.message or "stereotypy" in v1.message
    assert v1.summary["discovery.top_pull"] > 0.5
    assert rows[6].accuracy > 0.98 and rows[6].accuracy_no_shortcut < 0.6
    assert champion_version(FIXED) == "2"


def test_text_evidence_in_mlflow(demo):
    client = MlflowClient()
    tags = client.get_model_version(TEXT_MODEL, "1").tags
    assert tags["xai_gate.verdict"] == "blocked"
    assert tags["xai_gate.checks"] == "saliency,attention,counterfactual"
    run = client.get_run(tags["xai_gate.run_id"])
    metrics = run.data.metrics
    assert metrics["saliency.spurious_mass"] > 0.5
    assert metrics["saliency.precision_at_k"] > 0.87
    assert metrics["attention.cls_mass"] > 0.3
    assert metrics["text_counterfactual.removal_flip_rate"] > 0.8
    # v1 is at chance with the signature (all positive) and without it (mostly negative).
    assert metrics["text_counterfactual.accuracy_change"] == pytest.approx(
        metrics["text_counterfactual.accuracy_without_artifact"]
        - metrics["text_counterfactual.accuracy_with_artifact"]
    )
    assert run.data.params["modality"] == "text"
    names = {a.path for a in client.list_artifacts(run.info.run_id, "xai")}
    assert names == {
        "xai/attention.html",
        "xai/attention_map.png",
        "xai/attention_grid.png",
        "xai/attention_from_cls.png",
        "xai/saliency.png",
        "xai/saliency.csv",
        "xai/scores.csv",
        "xai/validation.json",
        "xai/report.html",
        "xai/stages.json",
    }
    local = Path(client.download_artifacts(run.info.run_id, "xai"))
    saliency = pd.read_csv(local / "saliency.csv")
    spurious = saliency[saliency["spurious"]]
    assert set(spurious["token"]) == {"cheers"}
    page = (local / "attention.html").read_text()
    assert "<script" in page and "http" not in page


def test_registry_tags_point_at_the_evidence_runs(demo):
    client = MlflowClient()
    tags = {v: client.get_model_version(MODEL, v).tags for v in ("1", "2")}
    assert tags["1"]["xai_gate.verdict"] == "blocked"
    assert tags["1"]["xai_gate.checks"] == "gradcam,layercam,counterfactual,sanity"
    assert tags["2"]["xai_gate.verdict"] == "passed"
    assert "spurious_mass mean" in tags["1"]["xai_gate.reason"]
    metrics = {v: client.get_run(tags[v]["xai_gate.run_id"]).data.metrics for v in ("1", "2")}
    for version_metrics in metrics.values():
        assert set(version_metrics) >= {
            "gradcam.spurious_mass",
            "gradcam.spurious_mass_ci_low",
            "gradcam.spurious_mass_ci_high",
            "gradcam.chance_mass",
            "gradcam.enrichment",
            "gradcam.rank_accuracy",
            "gradcam.pointing_game",
            "gradcam.flagged_fraction",
            "layercam.spurious_mass",
            "counterfactual.removal_flip_rate",
            "counterfactual.accuracy_with_artifact",
            "counterfactual.accuracy_without_artifact",
            "counterfactual.spurious_lift",
            "sanity.final_spearman",
            "sanity.spearman_by_step",
            "accuracy",
        }
    assert metrics["1"]["gradcam.spurious_mass"] > 0.3 > metrics["2"]["gradcam.spurious_mass"]
    assert metrics["1"]["gradcam.enrichment"] > metrics["2"]["gradcam.enrichment"]
    assert metrics["1"]["counterfactual.spurious_lift"] > 0.7
    assert abs(metrics["2"]["counterfactual.spurious_lift"]) < 0.1
    curve = client.get_metric_history(tags["2"]["xai_gate.run_id"], "sanity.spearman_by_step")
    assert [m.step for m in curve] == list(range(1, len(curve) + 1)) and len(curve) == 8


def test_artifacts_exist_and_hold_the_scores(demo):
    client = MlflowClient()
    run_id = client.get_model_version(MODEL, "1").tags["xai_gate.run_id"]
    names = {a.path for a in client.list_artifacts(run_id, "xai")}
    assert names == {
        "xai/gradcam_overlays.png",
        "xai/gradcam_samples.png",
        "xai/layercam_overlays.png",
        "xai/layercam_samples.png",
        "xai/counterfactual_removal.png",
        "xai/counterfactual_insertion.png",
        "xai/sanity.png",
        "xai/scores.csv",
        "xai/sanity.csv",
        "xai/validation.json",
        "xai/validation_sanity.json",
        "xai/report.html",
        "xai/stages.json",
    }
    local = Path(client.download_artifacts(run_id, "xai"))
    scores = pd.read_csv(local / "scores.csv")
    assert len(scores) == 64 and scores["flagged"].all()
    assert scores["flipped_on_removal"].mean() > 0.8
    assert len(pd.read_csv(local / "sanity.csv")) == 16
    validation = (local / "validation.json").read_text()
    assert '"success": false' in validation
    png = (local / "gradcam_overlays.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 20_000
    report = (local / "report.html").read_text()
    assert "<span class='verdict blocked'>blocked</span>" in report
    assert report.count("data:image/png;base64,") == 7  # every figure inline
    assert "gradcam.spurious_mass</td><td class=num>0.5" in report
    assert "src='http" not in report and "<link" not in report


def test_flow_state_is_failed_for_blocked_and_a_rerun_changes_nothing(own_store):
    workdir, uri, _ = own_store
    manifest = workdir / "audit" / "manifest.csv"
    policy = GatePolicy(model=MODEL, audit_set=manifest)
    state = xai_gate(policy, "1", tracking_uri=uri, return_state=True)
    assert state.is_failed()
    assert "blocked: spurious_mass mean" in state.message
    outcome = state.result(raise_on_failure=False)
    assert isinstance(outcome, GateOutcome) and outcome.verdict is Verdict.BLOCKED
    passed = xai_gate(policy, "2", tracking_uri=uri, return_state=True)
    assert passed.is_completed()
    assert champion_version(MODEL) == "2"


def test_cli_exit_codes(own_store):
    workdir, uri, _ = own_store
    manifest = str(workdir / "audit" / "manifest.csv")
    runner = CliRunner()
    args = ["gate", "--model", MODEL, "--audit-set", manifest, "--tracking-uri", uri]
    blocked = runner.invoke(app, [*args, "--version", "1"])
    assert blocked.exit_code == 1, blocked.output
    assert "lesion-classifier v1 blocked: spurious_mass mean" in blocked.output
    text_manifest = str(workdir / "reviews" / "audit.csv")
    text = runner.invoke(
        app,
        [
            "gate",
            "--model",
            TEXT_MODEL,
            "--version",
            "1",
            "--audit-set",
            text_manifest,
            "--tracking-uri",
            uri,
        ],
    )
    assert text.exit_code == 1, text.output
    assert "review-classifier v1 blocked" in text.output
    # An image model on a text audit set: the model has no tokenizer, a clear error.
    wrong = runner.invoke(
        app,
        [
            "gate",
            "--model",
            MODEL,
            "--version",
            "2",
            "--audit-set",
            text_manifest,
            "--tracking-uri",
            uri,
        ],
    )
    assert wrong.exit_code == 2 and "has no tokenizer" in wrong.output
    # --modality overrides the detection; a bad value is refused before any work.
    forced = runner.invoke(app, [*args, "--version", "1", "--modality", "text"])
    assert forced.exit_code == 2 and "has no tokenizer" in forced.output
    bogus = runner.invoke(app, [*args, "--version", "1", "--modality", "audio"])
    assert bogus.exit_code == 2
    assert "invalid gate options: modality: Input should be 'auto', 'image' or 'text'" in (
        bogus.output
    )
    assert "errors.pydantic.dev" not in bogus.output  # one readable line, no library noise
    # The errors above were the caller's or happened before any verdict: v2 keeps its pass.
    passed = runner.invoke(app, [*args, "--version", "2"])
    assert passed.exit_code == 0, passed.output
    assert "lesion-classifier v2 passed" in passed.output
    assert MlflowClient().get_model_version(MODEL, "2").tags["xai_gate.verdict"] == "passed"
    assert "xai_gate.last_error" in MlflowClient().get_model_version(MODEL, "2").tags
    # Only the gating method and stages asked for: HiResCAM alone, no counterfactuals.
    lean = runner.invoke(
        app, [*args, "--version", "1", "--method", "hirescam", "--no-counterfactual", "--no-sanity"]
    )
    assert lean.exit_code == 1, lean.output
    assert "spurious_mass mean" in lean.output and "removal flip rate" not in lean.output
    untrusted = runner.invoke(app, [*args, "--version", "2", "--max-sanity-correlation=-1"])
    assert untrusted.exit_code == 3, untrusted.output
    assert "lesion-classifier v2 inconclusive: sanity check failed" in untrusted.output
    assert MlflowClient().get_model_version(MODEL, "2").tags["xai_gate.verdict"] == "inconclusive"
    missing = runner.invoke(app, [*args, "--version", "9"])
    assert missing.exit_code == 2
    assert "model 'lesion-classifier' has no version '9'" in missing.output


def test_bad_manifest_exits_2_with_a_clear_message_and_no_traceback(own_store):
    workdir, uri, _ = own_store
    bad = workdir / "audit" / "bad.csv"
    bad.write_text(
        "image,label,spurious_mask\nimages/00000.png,benign,masks/00000.png\n"
        "images/missing.png,benign,masks/00001.png\n"
    )
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    env.pop("PREFECT_API_URL", None)  # the CLI starts its own ephemeral server, as a user's would
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "flows.cli",
            "gate",
            "--model",
            MODEL,
            "--version",
            "1",
            "--audit-set",
            str(bad),
        ],
        capture_output=True,
        text=True,
        cwd=workdir,
        env=env,
        timeout=300,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 2, output
    assert "bad.csv:3 column 'image': file not found: images/missing.png" in proc.stderr
    assert "Traceback" not in output
    assert champion_version(MODEL) == "2"
    # The failed run keeps v1's verdict and records the attempt (on_failure hook).
    tags = MlflowClient().get_model_version(MODEL, "1").tags
    assert tags["xai_gate.verdict"] == "blocked"
    assert "bad.csv:3 column 'image': file not found" in tags["xai_gate.last_error"]
