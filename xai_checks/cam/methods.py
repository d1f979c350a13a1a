"""CAM methods: each one is only its weighting rule over the shared engine.

All take (N, C, h, w) activations A and gradients G = dy_c/dA of the target
score and return the (N, h, w) map before the engine's ReLU.
"""

from __future__ import annotations

from torch import Tensor

from xai_checks.cam.core import CAMEngine

__all__ = ["GradCAM", "GradCAMPlusPlus", "HiResCAM", "LayerCAM"]

_EPS = 1e-6  # grad-cam's constant, so maps agree with the reference where G is tiny


class GradCAM(CAMEngine):
    """Grad-CAM (Selvaraju et al. 2017): channels weighted by their mean gradient."""

    def combine(self, activations: Tensor, gradients: Tensor) -> Tensor:
        weights = gradients.mean(dim=(2, 3), keepdim=True)
        return (weights * activations).sum(dim=1)


class GradCAMPlusPlus(CAMEngine):
    """Grad-CAM++ (Chattopadhay et al. 2018, eq. 19): positive gradients, pixel-weighted.

    The closed-form alpha uses powers of the first derivative in place of the
    higher derivatives (exact for an exponential of the score), so one
    backward pass suffices. Better than Grad-CAM when a class shows up in
    several places.
    """

    def combine(self, activations: Tensor, gradients: Tensor) -> Tensor:
        g2 = gradients.pow(2)
        g3 = g2 * gradients
        total = activations.sum(dim=(2, 3), keepdim=True)
        alpha = g2 / (2 * g2 + total * g3 + _EPS)
        alpha = alpha.where(gradients != 0, 0.0)
        weights = (gradients.clamp_min(0) * alpha).sum(dim=(2, 3), keepdim=True)
        return (weights * activations).sum(dim=1)


class HiResCAM(CAMEngine):
    """HiResCAM (Draelos & Carin 2020): gradient times activation, element-wise.

    No spatial averaging of the gradient, so the map shows exactly the
    locations the score depends on, at the layer's full resolution: small
    artifacts are not smeared over the grid cell.
    """

    def combine(self, activations: Tensor, gradients: Tensor) -> Tensor:
        return (gradients * activations).sum(dim=1)


class LayerCAM(CAMEngine):
    """LayerCAM (Jiang et al. 2021): activations weighted by their positive gradient per pixel.

    Reliable on shallow, high-resolution layers where Grad-CAM's global
    weights turn noisy; use it with an early layer to resolve small patches.
    """

    def combine(self, activations: Tensor, gradients: Tensor) -> Tensor:
        return (gradients.clamp_min(0) * activations).sum(dim=1)
