"""The precision probe: bf16 runs every stage when a probe batch stays within tolerance of
fp32, and the whole gate falls back to fp32 (and says so) when it does not."""

from __future__ import annotations

import copy
import threading

import numpy as np
import pytest
import torch

from pipelines.audit_sets.images import load_audit_set
from pipelines.audit_sets.texts import write_text_audit_set
from pipelines.policy import GatePolicy
from pipelines.stages import assembly
from pipelines.stages.assembly import collect_evidence
from pipelines.stages.precision import PROBE_INPUTS, PrecisionEvidence
from pipelines.tracking import LoadedModel
from xai_checks.examples.synthetic import CLASS_NAMES
from xai_checks.examples.synthetic_text import REVIEW_CLASSES, make_reviews
from xai_checks.precision_drift import PrecisionDrift

SCORES = ["spurious_mass", "artifact_class_probability"]
"""Per-image scores in [0, 1]: the gating mass and a counterfactual probability."""


@pytest.mark.slow
def test_bf16_runs_every_stage_and_stays_near_fp32(shortcut_model, lesion_manifest, runner):
    options = {"model": "m", "audit_set": lesion_manifest, "sanity_images": 4, "batch_size": 8}
    model = shortcut_model
    exact = collect_evidence(model, GatePolicy.from_options(**options))
    reduced = collect_evidence(
        model, GatePolicy.from_options(**options, precision="bf16"), runner=runner
    )
    assert runner.calls[:2] == [("run", "load-audit-set"), ("run", "precision-probe")]
    assert exact.precision is None and "precision.map_drift" not in exact.metrics()
    probe = reduced.precision
    assert (probe.requested, probe.used, probe.inputs) == ("bf16", "bf16", PROBE_INPUTS)
    assert probe.drift.finite and probe.drift.flipped == 0 and probe.drift.maps <= 0.01
    assert reduced.warnings() == []
    a, b = exact.score_table(), reduced.score_table()
    assert a["prediction"].tolist() == b["prediction"].tolist()
    moved = (a[SCORES] - b[SCORES]).abs().to_numpy()
    assert np.nanmax(moved) < 0.02  # every image, not the probe's alone
    # it did run in bf16 past the probe: not one image's scores are bit-equal to fp32's
    assert (a["spurious_mass"] != b["spurious_mass"]).any()
    metrics = reduced.metrics()
    assert metrics["precision.map_drift"] == probe.drift.maps
    assert metrics["precision.overflowed"] == 0.0
    for name, value in exact.metrics().items():
        assert metrics[name] == pytest.approx(value, abs=0.02, nan_ok=True), name


@pytest.mark.slow
def test_a_drift_past_the_tolerance_runs_the_whole_gate_in_fp32(shortcut_model, lesion_manifest):
    options = {"model": "m", "audit_set": lesion_manifest, "sanity": False, "batch_size": 8}
    model = shortcut_model
    exact = collect_evidence(model, GatePolicy.from_options(**options))
    refused = collect_evidence(
        model, GatePolicy.from_options(**options, precision="bf16", precision_tolerance=0.0)
    )
    assert refused.precision.used == "fp32" and refused.precision.requested == "bf16"
    assert refused.score_table().equals(exact.score_table())  # bit-equal: fp32 throughout
    (warning,) = refused.warnings()
    assert warning.startswith(f"precision bf16 was not used: on the first {PROBE_INPUTS} inputs")
    assert "precision_tolerance 0.0" in warning and warning.endswith("every stage ran in fp32")


@pytest.mark.slow
def test_text_gates_probe_attention_and_run_in_bf16(trained_text_pair, tmp_path, runner):
    reviews = make_reviews(12, signature="always", seed=100)
    manifest = write_text_audit_set(
        tmp_path / "reviews.csv", reviews.texts, reviews.labels, reviews.spurious, REVIEW_CLASSES
    )
    model = LoadedModel(
        trained_text_pair.shortcut,
        *("r", "1", "models:/r/1", tuple(REVIEW_CLASSES), None),
        tokenizer=trained_text_pair.tokenizer,
    )
    exact = collect_evidence(model, GatePolicy(model="r", audit_set=manifest))
    reduced = collect_evidence(
        model, GatePolicy(model="r", audit_set=manifest, precision="bf16"), runner=runner
    )
    assert runner.calls[:2] == [("run", "load-text-audit-set"), ("run", "precision-probe")]
    assert reduced.precision.used == "bf16" and reduced.warnings() == []
    metrics = reduced.metrics()
    assert 0 < metrics["precision.map_drift"] <= 0.01
    for name in ("saliency.spurious_mass", "attention.cls_mass", "attention.rollout_mass"):
        assert metrics[name] == pytest.approx(exact.metrics()[name], abs=0.02), name


def test_an_overflow_is_reported_without_infinite_metrics():
    overflow = PrecisionEvidence(
        "fp16", "fp32", PrecisionDrift(float("inf"), float("inf"), 8, finite=False), 0.01, 8
    )
    assert overflow.metrics() == {"precision.overflowed": 1.0}
    assert overflow.warnings() == [
        "precision fp16 was not used: on the first 8 inputs its outputs overflowed to NaN or "
        "Inf; every stage ran in fp32"
    ]
    kept = PrecisionEvidence("bf16", "bf16", PrecisionDrift(0.001, 0.004, 0), 0.01, 8)
    assert kept.warnings() == []
    assert kept.metrics() == {
        "precision.overflowed": 0.0,
        "precision.probability_drift": 0.001,
        "precision.map_drift": 0.004,
        "precision.flipped": 0.0,
    }


def test_precision_is_validated_and_left_out_of_the_policy_hash(lesion_manifest):
    policy = GatePolicy(model="m", audit_set=lesion_manifest)
    faster = policy.model_copy(update={"precision": "bf16", "precision_tolerance": 0.05})
    assert faster.digest() == policy.digest()
    assert GatePolicy.from_options(model="m", audit_set="a.csv", precision="fp16").precision == (
        "fp16"
    )
    with pytest.raises(ValueError, match="precision"):
        GatePolicy.from_options(model="m", audit_set="a.csv", precision="fp8")
    with pytest.raises(ValueError, match="precision_tolerance"):
        GatePolicy.from_options(model="m", audit_set="a.csv", precision_tolerance=-0.1)


def test_each_stage_sets_its_precision_itself_in_whatever_thread_runs_it(
    trained_pair, lesion_manifest
):
    """A Dask worker or a Prefect task thread does not inherit the caller's context: the
    stage must set the precision where it runs."""
    module = copy.deepcopy(trained_pair.shortcut)
    model = LoadedModel(module, "m", "1", "models:/m/1", tuple(CLASS_NAMES), None)
    data = load_audit_set(lesion_manifest, class_names=CLASS_NAMES)
    seen: list[torch.dtype] = []
    handle = module.features[0].register_forward_hook(lambda _m, _i, out: seen.append(out.dtype))
    rules = GatePolicy.from_options(model="m", audit_set=lesion_manifest, batch_size=24).rules()
    for precision, expected in (("bf16", torch.bfloat16), ("fp32", torch.float32)):
        stage_rules = rules.with_options(precision=precision)
        for stage in (assembly.cam_stage, assembly.counterfactual_stage):
            seen.clear()
            worker = threading.Thread(target=stage, args=(model, data, stage_rules))
            worker.start()
            worker.join()
            assert seen and set(seen) == {expected}, (stage.__name__, precision)
    handle.remove()
