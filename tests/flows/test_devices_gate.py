"""``--device``: the same verdict and scores wherever the gate computes."""

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
