"""``--device`` and ``--precision``: the same verdict and scores wherever, and at whatever
precision, the gate computes."""

from __future__ import annotations

import pytest
import torch
from mlflow import MlflowClient

from flows.run import run_gate
from pipelines.verdict.decision import Verdict

pytestmark = pytest.mark.slow
MODEL = "device-model"
SCORES = ("gradcam.spurious_mass", "counterfactual.removal_flip_rate", "accuracy")


def _metrics(run_id: str) -> dict[str, float]:
    metrics = MlflowClient().get_run(run_id).data.metrics
    return {name: metrics[name] for name in SCORES}


def _gate(policy, device: str):
    outcome = run_gate(
        MODEL,
        "1",
        policy_file=None,
        policy=policy.model_copy(update={"device": device}),
        force=True,
    )
    assert outcome.verdict is not Verdict.ERROR, outcome.message
    return outcome


@pytest.fixture
def policy(trained_pair, lesion_gate, tracking_uri, tmp_path):
    from pipelines.policy import load_policy

    lesion_gate.register(trained_pair.shortcut, MODEL)
    return load_policy(lesion_gate.policy(tmp_path, MODEL, n=16))


def test_cpu_and_auto_give_the_same_verdict_and_scores(policy):
    cpu, auto = _gate(policy, "cpu"), _gate(policy, "auto")
    assert cpu.verdict is auto.verdict is Verdict.BLOCKED
    expected = _metrics(cpu.run_id)
    for name, value in _metrics(auto.run_id).items():
        assert value == pytest.approx(expected[name], abs=1e-3), name


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_gives_the_cpu_verdict_and_scores_within_tolerance(policy):
    cpu, cuda = _gate(policy, "cpu"), _gate(policy, "cuda")
    assert cpu.verdict is cuda.verdict
    expected = _metrics(cpu.run_id)
    for name, value in _metrics(cuda.run_id).items():
        assert value == pytest.approx(expected[name], abs=1e-3), name


def test_bf16_gives_the_fp32_verdict_and_logs_what_it_ran_at(policy):
    exact = _gate(policy, "cpu")
    reduced = _gate(policy.model_copy(update={"precision": "bf16"}), "cpu")
    assert reduced.verdict is exact.verdict is Verdict.BLOCKED
    assert reduced.warnings == exact.warnings  # the evidence's own; none about precision
    run = MlflowClient().get_run(reduced.run_id).data
    assert (run.params["precision"], run.params["precision_requested"]) == ("bf16", "bf16")
    assert 0 < run.metrics["precision.map_drift"] <= policy.precision_tolerance
    assert run.metrics["precision.overflowed"] == 0.0
    expected = _metrics(exact.run_id)
    for name, value in _metrics(reduced.run_id).items():
        assert value == pytest.approx(expected[name], abs=0.02), name
    fp32 = MlflowClient().get_run(exact.run_id).data
    assert fp32.params["precision"] == "fp32" and "precision_requested" not in fp32.params
    assert not any(name.startswith("precision.") for name in fp32.metrics)  # no probe ran


def test_a_refused_precision_runs_fp32_and_is_a_warning_in_the_record(policy):
    refused = _gate(
        policy.model_copy(update={"precision": "fp16", "precision_tolerance": 0.0}), "cpu"
    )
    assert refused.verdict is Verdict.BLOCKED
    (warning,) = [line for line in refused.warnings if line.startswith("precision")]
    assert warning.startswith("precision fp16 was not used") and "ran in fp32" in warning
    assert f"warning: {warning}" in refused.message
    run = MlflowClient().get_run(refused.run_id).data
    assert (run.params["precision"], run.params["precision_requested"]) == ("fp32", "fp16")
