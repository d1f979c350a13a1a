"""Drift of a reduced precision: measured as the gate scores it, and an fp16 overflow is
caught, not scored."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from xai_checks.cam import GradCAM
from xai_checks.precision import mixed_precision
from xai_checks.precision_drift import PrecisionDrift, precision_drift, text_precision_drift
from xai_checks.predict import predict_proba


def _cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 3),
    ).eval()


def test_drift_is_small_for_a_trained_cnn_and_smaller_in_fp16(trained_pair) -> None:
    from xai_checks.examples.synthetic import make_lesions

    images = make_lesions(8, shortcut_strength=1.0, seed=7).images
    bf16 = precision_drift(trained_pair.shortcut, images, "bf16")
    fp16 = precision_drift(trained_pair.shortcut, images, "fp16", method="layercam")
    for drift in (bf16, fp16):
        assert drift.finite and drift.flipped == 0
        assert 0 < drift.probability < 0.01 and 0 < drift.maps < 0.02
    assert fp16.maps < bf16.maps and fp16.probability < bf16.probability  # 10 vs 7 bits
    assert bf16.within(0.02) and not bf16.within(bf16.maps / 2)


def test_drift_agrees_with_a_direct_computation_of_the_moved_share() -> None:
    model, images = _cnn(), torch.rand(4, 3, 16, 16)
    drift = precision_drift(model, images, "bf16")
    exact_targets = predict_proba(model, images).argmax(dim=1)
    exact = GradCAM(model)(images, exact_targets).flatten(1)
    with mixed_precision("bf16"):
        reduced = GradCAM(model)(images, exact_targets).flatten(1)
    moved = ((exact - reduced).abs().sum(1) / exact.abs().sum(1)).max()
    assert drift.maps == pytest.approx(float(moved), rel=1e-6)


class _Loud(nn.Module):
    """A CNN whose activations pass 65,504, the largest float16: fp16 overflows, bf16 not."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.features = nn.Conv2d(3, 4, 3, padding=1)
        self.head = nn.Linear(4, 2)
        with torch.no_grad():
            self.features.weight.abs_().mul_(1e5)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images).relu().mean(dim=(2, 3)) * 1e-5)


def test_an_fp16_overflow_is_reported_as_such_and_never_within_tolerance() -> None:
    model, images = _Loud().eval(), torch.rand(3, 3, 8, 8) + 1
    overflowed = precision_drift(model, images, "fp16")
    assert overflowed == PrecisionDrift(float("inf"), float("inf"), 3, finite=False)
    assert not overflowed.within(1.0)
    assert precision_drift(model, images, "bf16").finite  # bf16 has float32's range


def test_text_drift_is_measured_on_probabilities_and_every_head(trained_text_pair) -> None:
    model, tokenizer = copy.deepcopy(trained_text_pair.shortcut), trained_text_pair.tokenizer
    texts = ["a lovely lamp , truly great", "my chair is flimsy and poor ."]
    drift = text_precision_drift(model, tokenizer, texts, "bf16")
    assert drift.finite and drift.flipped == 0
    assert 0 < drift.probability < 0.02 and 0 < drift.maps < 0.05
