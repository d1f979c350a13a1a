"""How much of an explanation falls on a known spurious region.

Both scores follow Arras et al. (2022): the heatmap is clipped to its positive
part, and mass is measured, not the peak. ``enrichment`` divides by the mask's
area fraction, because a mask covering 40 % of the image gets 40 % of a flat
heatmap by chance: 1.0 is chance, above 1 means the model looks there on purpose.

Scores are computed at whatever resolution the caller passes. The pipelines
pass input-resolution heatmaps (bilinearly upsampled CAMs), where the masks
live, so a thin ruler is scored against its exact pixels.
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor

from xai_checks.errors import XAICheckError

__all__ = ["area_fraction", "enrichment", "relevance_mass"]


def _check(heatmaps: Tensor, masks: Tensor) -> None:
    if not isinstance(heatmaps, Tensor) or not isinstance(masks, Tensor):
        raise TypeError("heatmaps and masks must be torch tensors")
    if heatmaps.ndim != 3:
        raise XAICheckError(f"heatmaps must have shape (N, H, W), got {tuple(heatmaps.shape)}")
    if masks.dtype != torch.bool:
        raise XAICheckError(f"masks must be boolean, got dtype {masks.dtype}")
    if masks.shape != heatmaps.shape:
        raise XAICheckError(
            f"masks must have the heatmaps' shape (N, H, W) = {tuple(heatmaps.shape)}, "
            f"got {tuple(masks.shape)}"
        )


def _warn_empty(masks: Tensor) -> None:
    empty = (~masks.flatten(1).any(dim=1)).nonzero().flatten().tolist()
    if empty:
        warnings.warn(
            f"empty spurious mask for image(s) {empty[:10]}: their scores are NaN",
            RuntimeWarning,
            stacklevel=3,
        )


def area_fraction(masks: Tensor) -> Tensor:
    """Share of each image covered by its mask: the chance level of ``relevance_mass``."""
    return masks.flatten(1).float().mean(dim=1)


def relevance_mass(heatmaps: Tensor, masks: Tensor) -> Tensor:
    """Per image, the share of the positive heatmap mass inside the mask, in [0, 1].

    NaN (with a warning) where the mask is empty; NaN where the heatmap has no
    positive mass, since nothing was attributed anywhere.
    """
    _check(heatmaps, masks)
    _warn_empty(masks)
    positive = heatmaps.float().clamp_min(0).flatten(1)
    inside = (positive * masks.flatten(1)).sum(dim=1)
    total = positive.sum(dim=1)
    mass = inside / total
    nan = torch.tensor(float("nan"), device=mass.device)
    return torch.where((total > 0) & masks.flatten(1).any(dim=1), mass, nan)


def enrichment(heatmaps: Tensor, masks: Tensor) -> Tensor:
    """``relevance_mass`` divided by the mask's area fraction; 1.0 is chance."""
    mass = relevance_mass(heatmaps, masks)
    return mass / area_fraction(masks)
