"""How far a reduced precision moves a check's results from float32's.

Mixed precision (:mod:`xai_checks.precision`) is only worth having where it
leaves the scores as they were. These functions run a probe batch both ways
and measure the difference in what the gate scores: class probabilities, and
the share of each map (heatmap or attention) that moves, which bounds how far
any region's share of that map can move.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from xai_checks.attention import attention_maps
from xai_checks.errors import NonFiniteError
from xai_checks.precision import Precision, mixed_precision
from xai_checks.predict import predict_proba, predict_text_proba
from xai_checks.sanity import method_explainer

__all__ = ["PrecisionDrift", "precision_drift", "text_precision_drift"]


@dataclass(frozen=True)
class PrecisionDrift:
    """How far a reduced precision moves a probe batch's results from float32's."""

    probability: float
    """Largest absolute difference of any class probability."""
    maps: float
    """Largest share of one input's map that moved: sum |reduced - float32| / sum |float32|.
    Any region's share of that map (a spurious mass) moves by at most twice this."""
    flipped: int
    """Inputs whose predicted class differs (all of them when the outputs were not finite)."""
    finite: bool = True
    """False when the reduced precision overflowed to NaN or Inf (fp16 past 65504)."""

    def within(self, tolerance: float) -> bool:
        """Finite, no prediction changed, and neither probabilities nor maps moved by more."""
        return self.finite and self.flipped == 0 and max(self.probability, self.maps) <= tolerance


def _overflowed(inputs: int) -> PrecisionDrift:
    return PrecisionDrift(math.inf, math.inf, inputs, finite=False)


def precision_drift(
    model: nn.Module,
    images: Tensor,
    precision: Precision | torch.dtype,
    *,
    method: str = "gradcam",
    target_layer: str | Sequence[str] | None = None,
) -> PrecisionDrift:
    """Run ``method`` on ``images`` in float32 and at ``precision``, and compare.

    ``method`` is any registered heatmap method (:mod:`xai_checks.methods`);
    both runs explain the float32 predictions, so the maps compare like with like.
    """
    explain = method_explainer(method, target_layer)
    with mixed_precision(None):
        reference = predict_proba(model, images, batch_size=len(images))
        targets = reference.argmax(dim=1)
        reference_maps = explain(model, images, targets).float()
    try:
        with mixed_precision(precision):
            reduced = predict_proba(model, images, batch_size=len(images))
            reduced_maps = explain(model, images, targets).float()
    except NonFiniteError:
        return _overflowed(len(images))
    return _drift(reference, reduced, reference_maps, reduced_maps)


def text_precision_drift(
    model: nn.Module, tokenizer: Any, texts: Sequence[str], precision: Precision | torch.dtype
) -> PrecisionDrift:
    """Probabilities and per-head attention of ``texts`` in float32 and at ``precision``."""
    texts = list(texts)

    def run() -> tuple[Tensor, Tensor]:
        return (
            predict_text_proba(model, tokenizer, texts, batch_size=len(texts)),
            attention_maps(model, tokenizer, texts, batch_size=len(texts)).weights,
        )

    with mixed_precision(None):
        reference, reference_maps = run()
    try:
        with mixed_precision(precision):
            reduced, reduced_maps = run()
    except NonFiniteError:
        return _overflowed(len(texts))
    if not torch.isfinite(reduced_maps).all():
        return _overflowed(len(texts))
    return _drift(reference, reduced, reference_maps, reduced_maps)


def _drift(
    reference: Tensor, reduced: Tensor, maps: Tensor, reduced_maps: Tensor
) -> PrecisionDrift:
    maps, reduced_maps = maps.cpu().flatten(1), reduced_maps.cpu().flatten(1)
    moved = (maps - reduced_maps).abs().sum(dim=1) / maps.abs().sum(dim=1).clamp_min(1e-12)
    return PrecisionDrift(
        probability=float((reference - reduced).abs().max()),
        maps=float(moved.max()),
        flipped=int((reference.argmax(dim=1) != reduced.argmax(dim=1)).sum()),
    )
