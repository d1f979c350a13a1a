"""A one-logit binary classifier (sigmoid, as BCEWithLogitsLoss trains it) is gated as two
classes, and its shortcut is caught as the two-logit model's is."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from flows.run import run_gate
from pipelines.verdict.decision import Verdict

pytestmark = pytest.mark.slow


def _one_logit(model: nn.Module) -> nn.Module:
    """The two-logit model's log-odds z = l1 - l0 as its only output: p = sigmoid(z)."""
    head = nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[-1.0, 1.0]]))
    return nn.Sequential(model, head).eval()


def test_one_logit_models_are_gated_as_two_classes(
    trained_pair, lesion_gate, tracking_uri, tmp_path
):
    lesion_gate.register(_one_logit(trained_pair.shortcut), "one-logit")
    lesion_gate.register(_one_logit(trained_pair.clean), "one-logit")
    policy = lesion_gate.policy(tmp_path, "one-logit")
    shortcut = run_gate("one-logit", "1", policy_file=str(policy))
    assert shortcut.verdict is Verdict.BLOCKED, shortcut.message
    assert shortcut.summary["counterfactual.removal_flip_rate"] > 0.5, shortcut.summary
    clean = run_gate("one-logit", "2", policy_file=str(policy))
    assert clean.verdict is Verdict.PASSED and clean.promoted, clean.message
    assert clean.summary["counterfactual.removal_flip_rate"] < 0.2, clean.summary
