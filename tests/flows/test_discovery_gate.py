"""The gate on shortcuts nobody labelled: an audit set without masks, and checks.discovery."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow import MlflowClient

from flows.run import exit_code, run_gate
from pipelines.verdict.decision import TAG_WARNINGS, Verdict

pytestmark = pytest.mark.slow
MODEL = "discovery-model"
DISCOVERY = {"discovery": True}


@pytest.fixture
def two_versions(trained_pair, lesion_gate, tracking_uri) -> None:
    """The ruler-shortcut model as version 1, the clean one as version 2."""
    lesion_gate.register(trained_pair.shortcut, MODEL)
    lesion_gate.register(trained_pair.clean, MODEL)


def _artifacts(run_id: str) -> set[str]:
    return {item.path for item in MlflowClient().list_artifacts(run_id, "xai")}


def test_discovery_blocks_the_ruler_model_and_promotes_the_clean_one_without_masks(
    two_versions, lesion_gate, tmp_path, registry
):
    policy = lesion_gate.policy(tmp_path, MODEL, n=48, rules=DISCOVERY, regions=False)
    shortcut = run_gate(MODEL, "1", policy_file=str(policy))
    assert shortcut.verdict is Verdict.BLOCKED and exit_code(shortcut) == 1
    assert not shortcut.promoted
    reason = " ".join(shortcut.reasons)
    assert "discovery found an unlabelled shortcut: strategy #1 of class 'malignant'" in reason
    assert shortcut.summary["discovery.top_flip_rate"] > 0.5
    client = MlflowClient()
    blocked = registry(MODEL, "1")
    assert (blocked.verdict, blocked.run_id, blocked.alias_holder) == (
        "blocked",
        shortcut.run_id,
        None,
    )
    assert "discovery found an unlabelled shortcut" in blocked.tags["xai_gate.reason"]
    assert blocked.tags["xai_gate.checks"] == "sanity,discovery"  # no masks: nothing else
    artifacts = _artifacts(shortcut.run_id)
    assert {
        "xai/discovery.csv",
        "xai/discovery_clusters.png",
        "xai/discovery_samples.png",
        "xai/discovery_proposals.png",
        "xai/validation_discovery.json",
    } <= artifacts
    assert "xai/counterfactual_removal.png" not in artifacts
    run = client.get_run(shortcut.run_id)
    assert run.data.metrics["discovery.confirmed"] >= 1
    assert not any(name.startswith("gradcam.") for name in run.data.metrics)
    local = client.download_artifacts(shortcut.run_id, "xai/report.html", str(tmp_path))
    report = Path(local).read_text(encoding="utf-8")
    assert "Discovered strategies (most suspicious first)" in report and "confirmed" in report

    clean = run_gate(MODEL, "2", policy_file=str(policy))
    assert clean.verdict is Verdict.PASSED and clean.promoted
    assert clean.summary["discovery.top_suspicion"] < 0.5
    passed = registry(MODEL, "2")
    assert (passed.verdict, passed.run_id, passed.holds_alias) == ("passed", clean.run_id, True)


def test_an_unconfirmed_suspicion_is_a_warning_not_a_block(
    two_versions, lesion_gate, tmp_path, registry
):
    """The clean model's clusters made suspicious by a low bound: filling flips nothing."""
    rules = DISCOVERY | {
        "max_discovery_suspicion": 0.02,
        "max_discovery_flip_rate": 0.90,
        "max_discovery_lift": 1.0,
    }
    policy = lesion_gate.policy(tmp_path, MODEL, n=64, rules=rules, regions=False)
    outcome = run_gate(MODEL, "2", policy_file=str(policy))
    assert outcome.verdict is Verdict.PASSED and outcome.promoted
    assert outcome.warnings and all(w.startswith("discovery: strategy #") for w in outcome.warnings)
    assert "\n  warning: discovery: strategy #1" in outcome.message
    state = registry(MODEL, "2")
    assert (state.verdict, state.holds_alias) == ("passed", True)
    assert state.tags[TAG_WARNINGS].startswith("discovery: strategy #1")
    # Gated again without the low bound: the stale warnings go.
    strict = lesion_gate.policy(tmp_path / "default", MODEL, n=64, rules=DISCOVERY, regions=False)
    assert run_gate(MODEL, "2", policy_file=str(strict)).warnings == []
    assert TAG_WARNINGS not in MlflowClient().get_model_version(MODEL, "2").tags


def test_an_audit_set_without_masks_needs_discovery(two_versions, lesion_gate, tmp_path, registry):
    policy = lesion_gate.policy(tmp_path, MODEL, regions=False)
    outcome = run_gate(MODEL, "2", policy_file=str(policy))
    assert outcome.verdict is Verdict.ERROR and exit_code(outcome) == 2 and not outcome.promoted
    assert "has no spurious regions" in outcome.message
    assert "enable checks.discovery" in outcome.message
    state = registry(MODEL, "2")  # recorded as an error: gated again, promoted by nothing
    assert (state.verdict, state.alias_holder, state.run_id) == ("error", None, "")
    assert "has no spurious regions" in state.tags["xai_gate.reason"]
