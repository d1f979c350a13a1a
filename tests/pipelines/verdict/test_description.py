"""The verdict in the version's description: rewritten on every gate, a person's text kept."""

from __future__ import annotations

import mlflow
import pytest
from mlflow import MlflowClient

from pipelines.verdict.decision import GateDecision, Verdict, record_error, record_verdict
from pipelines.verdict.description import (
    KEPT_BELOW,
    gate_part,
    merged_description,
    person_part,
)
from xai_checks.examples.toy_models import SmallCNN

NAME = "described"
PERSON = "Trained on the March export.\n\n- owner: dermatology team\n- ticket: ML-42"


@pytest.fixture
def version(tracking_uri) -> str:
    """v1 of NAME, with a description a person wrote when registering it."""
    with mlflow.start_run():
        mlflow.pytorch.log_model(
            SmallCNN(width=8),
            name="model",
            registered_model_name=NAME,
            serialization_format="pickle",
            pip_requirements=["torch"],
        )
    MlflowClient().update_model_version(NAME, "1", description=PERSON)
    return "1"


def _evidence_run() -> tuple[str, str]:
    mlflow.set_experiment("xai-gate")
    with mlflow.start_run() as run:
        return run.info.experiment_id, run.info.run_id


def _description() -> str:
    return MlflowClient().get_model_version(NAME, "1").description


def test_blocked_puts_the_verdict_its_failed_checks_and_links_on_the_first_line(version):
    experiment_id, run_id = _evidence_run()
    reasons = ["gradcam.spurious_mass: mean 0.62 > bound 0.30", "removal flip rate 0.85 > 0.20"]
    record_verdict(NAME, version, GateDecision(Verdict.BLOCKED, reasons), run_id=run_id)
    first, rest = _description().split("\n", 1)
    page = f"#/experiments/{experiment_id}/runs/{run_id}"
    assert first == (
        "xai-gate: blocked (gradcam.spurious\\_mass: mean 0.62 &gt; bound 0.30; removal flip"
        f" rate 0.85 &gt; 0.20) · [evidence run]({page})"
        f" · [report.html]({page}/artifacts/xai/report.html)"
    )
    assert rest.endswith(f"{KEPT_BELOW}\n\n{PERSON}")


def test_every_verdict_rewrites_the_gate_part_and_keeps_the_person_text_once(version):
    _, run_id = _evidence_run()
    record_verdict(NAME, version, GateDecision(Verdict.BLOCKED, ["mass 0.6 > 0.3"]), run_id=run_id)
    record_verdict(
        NAME, version, GateDecision(Verdict.INCONCLUSIVE, ["sanity 0.9 > 0.5"]), run_id=run_id
    )
    record_verdict(NAME, version, GateDecision(Verdict.PASSED), run_id=run_id)
    text = _description()
    assert text.startswith("xai-gate: passed (every check within its bound) · [evidence run]")
    assert "blocked" not in text and "inconclusive" not in text
    assert text.count(KEPT_BELOW) == 1 and text.count(PERSON) == 1
    assert person_part(text) == PERSON
    # A person edits below the marker between gates: the next gate keeps the edit.
    MlflowClient().update_model_version(NAME, "1", description=text + "\n\nReviewed by A. B.")
    record_verdict(NAME, version, GateDecision(Verdict.BLOCKED, ["mass 0.7 > 0.3"]), run_id=run_id)
    assert person_part(_description()) == PERSON + "\n\nReviewed by A. B."
    assert _description().startswith("xai-gate: blocked (mass 0.7 &gt; 0.3)")


def test_an_error_keeps_the_verdict_line_and_says_the_attempt_failed(version):
    _, run_id = _evidence_run()
    record_verdict(NAME, version, GateDecision(Verdict.PASSED), run_id=run_id)
    record_error(NAME, version, "OSError: audit/manifest.csv: no such file")
    lines = _description().split("\n\n")
    assert lines[0].startswith("xai-gate: passed")
    assert lines[1].startswith("Last attempt failed, the verdict above stands: ")
    assert lines[1].endswith("OSError: audit/manifest.csv: no such file")
    assert person_part(_description()) == PERSON


def test_a_version_never_gated_before_an_error_reads_error(version):
    record_error(NAME, version, "RuntimeError: the audit broke")
    first = _description().split("\n", 1)[0]
    assert first == "xai-gate: error (RuntimeError: the audit broke)"  # no run, no link


def test_warnings_get_their_own_line():
    tags = {
        "xai_gate.verdict": "passed",
        "xai_gate.reason": "all expectations met",
        "xai_gate.warnings": "v1 holds 'champion' but <b>x</b>",
    }
    text = gate_part(tags, run_page="http://mlflow:5000/#/experiments/3/runs/abc")
    first, second = text.split("\n\n")
    assert first.endswith(
        "[report.html](http://mlflow:5000/#/experiments/3/runs/abc/artifacts/xai/report.html)"
    )
    assert second == "Warnings (not blocking): v1 holds 'champion' but &lt;b&gt;x&lt;/b&gt;"


def test_a_hostile_reason_stays_text_in_the_description():
    tags = {
        "xai_gate.verdict": "blocked",
        "xai_gate.reason": "x](http://evil) ![i](http://e/x.png)",
    }
    first = gate_part(tags, run_page=None)
    assert "](http://evil)" not in first and "![" not in first


@pytest.mark.parametrize(
    ("existing", "kept"),
    [
        (None, ""),
        ("", ""),
        ("A person's note.", "A person's note."),
        (f"old gate line\n\n{KEPT_BELOW}\n\nA person's note.", "A person's note."),
        (f"old gate line\n\n{KEPT_BELOW}", ""),
    ],
)
def test_merging_keeps_exactly_what_stands_below_the_marker(existing, kept):
    merged = merged_description(existing, "NEW")
    assert merged.startswith(f"NEW\n\n{KEPT_BELOW}")
    assert person_part(merged) == kept
    assert merged_description(merged, "NEW") == merged  # idempotent
