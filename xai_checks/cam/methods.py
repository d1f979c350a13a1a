"""CAM methods: each one is only its weighting rule over the shared engine."""

from __future__ import annotations

from torch import Tensor

from xai_checks.cam.core import CAMEngine

__all__ = ["GradCAM"]


class GradCAM(CAMEngine):
    """Grad-CAM (Selvaraju et al. 2017): channels weighted by their mean gradient."""

    def combine(self, activations: Tensor, gradients: Tensor) -> Tensor:
        weights = gradients.mean(dim=(2, 3), keepdim=True)
        return (weights * activations).sum(dim=1)
