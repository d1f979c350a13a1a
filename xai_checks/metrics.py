"""How much of an explanation falls on a known spurious region, with its uncertainty.

Per-image scores take (N, H, W) heatmaps and (N, H, W) boolean masks:

- ``relevance_mass`` (Arras et al. 2022): the share of the positive heatmap
  mass inside the mask. Mass, not the peak, so a map that merely touches the
  region does not count as relying on it.
- ``enrichment``: mass divided by the mask's area fraction. A mask covering
  40 % of the image gets 40 % of a flat heatmap by chance: 1.0 is chance.
- ``rank_accuracy`` (Arras et al. 2022): of the |mask| highest-ranked pixels,
  the share inside the mask. Insensitive to the map's scale, so it also
  compares methods whose maps are peaky and ones that are spread out.
- ``pointing_game`` (Zhang et al. 2016): does the maximum land in the mask.
- ``energy_pointing_game`` (Wang et al. 2020): mass inside the mask's bounding
  box, the form used for box annotations (a hospital tag, a burnt-in label).

``bootstrap_ci`` turns per-image scores into a model-level mean with a
percentile-bootstrap 95 % interval; report the chance level (``area_fraction``)
beside it.

**Resolution.** Scores are computed at the input resolution, on bilinearly
upsampled maps, not at the CAM's native grid with area-weighted masks. The
masks are drawn at input resolution, and the methods compared here live on
different grids (7 x 7 Grad-CAM, a 28 x 28 LayerCAM, a 14 x 14 ViT token grid,
averages of several layers): one common grid makes their scores comparable,
and a thin ruler is scored against its exact pixels instead of a coarse cell
that is mostly skin. Bilinear upsampling keeps each cell's mass in its own
neighbourhood, so the cost is a slight blur at the mask's edge.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import torch
from torch import Tensor

from xai_checks.errors import XAICheckError

__all__ = [
    "Estimate",
    "area_fraction",
    "bootstrap_ci",
    "bounding_boxes",
    "energy_pointing_game",
    "enrichment",
    "pointing_game",
    "rank_accuracy",
    "relevance_mass",
]


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


def rank_accuracy(heatmaps: Tensor, masks: Tensor) -> Tensor:
    """Per image, the share of the top-|mask| pixels that lie inside the mask, in [0, 1].

    Ties at the cut-off rank share the remaining slots in proportion to how
    many of them lie inside (the expected value under random tie-breaking), so
    a flat map scores the area fraction instead of whatever ``topk`` picks.
    NaN where the mask is empty or the heatmap has no positive mass.
    """
    _check(heatmaps, masks)
    _warn_empty(masks)
    values = heatmaps.float().flatten(1)
    inside = masks.flatten(1)
    k = inside.sum(dim=1)
    ranked = values.sort(dim=1, descending=True).values
    cutoff = ranked.gather(1, (k - 1).clamp_min(0).unsqueeze(1))
    above = values > cutoff
    tied = values == cutoff
    slots = k - above.sum(dim=1)
    tied_inside = (tied & inside).sum(dim=1) / tied.sum(dim=1).clamp_min(1)
    hits = (above & inside).sum(dim=1) + slots * tied_inside
    score = hits / k.clamp_min(1)
    valid = (k > 0) & (values.clamp_min(0).sum(dim=1) > 0)
    return torch.where(valid, score, torch.tensor(float("nan"), device=score.device))


def pointing_game(heatmaps: Tensor, masks: Tensor) -> Tensor:
    """Per image, 1.0 when the heatmap's maximum lies inside the mask, else 0.0.

    With several maximal pixels, the share of them inside the mask (a flat map
    does not count as a hit). NaN where the mask is empty or the heatmap has no
    positive value.
    """
    _check(heatmaps, masks)
    _warn_empty(masks)
    values = heatmaps.float().flatten(1)
    inside = masks.flatten(1)
    peak = values == values.amax(dim=1, keepdim=True)
    hit = (peak & inside).sum(dim=1) / peak.sum(dim=1)
    valid = inside.any(dim=1) & (values.amax(dim=1) > 0)
    return torch.where(valid, hit, torch.tensor(float("nan"), device=hit.device))


def bounding_boxes(masks: Tensor) -> Tensor:
    """Each mask's tight bounding box, as a boolean mask of the same shape."""
    rows = masks.any(dim=2)
    cols = masks.any(dim=1)
    rows = rows.cummax(dim=1).values & rows.flip(1).cummax(dim=1).values.flip(1)
    cols = cols.cummax(dim=1).values & cols.flip(1).cummax(dim=1).values.flip(1)
    return rows.unsqueeze(2) & cols.unsqueeze(1)


def energy_pointing_game(heatmaps: Tensor, masks: Tensor) -> Tensor:
    """Per image, the share of positive heatmap energy inside the mask's bounding box.

    For box-shaped masks this equals ``relevance_mass``; for other shapes the
    box is the tight one around the mask, which is how box-annotated data sets
    score it.
    """
    _check(heatmaps, masks)
    return relevance_mass(heatmaps, bounding_boxes(masks))


@dataclass(frozen=True)
class Estimate:
    """A model-level mean with its bootstrap interval over the ``n`` non-NaN scores."""

    mean: float
    low: float
    high: float
    n: int

    def as_dict(self, prefix: str) -> dict[str, float]:
        return {prefix: self.mean, f"{prefix}_ci_low": self.low, f"{prefix}_ci_high": self.high}


_BOOTSTRAP_BLOCK = 1 << 20
"""Resample indices drawn at a time (8 MB of int64), whatever the audit set's size."""


def bootstrap_ci(
    values: Tensor, *, confidence: float = 0.95, n_resamples: int = 2000, seed: int = 0
) -> Estimate:
    """Mean of the non-NaN ``values`` with a percentile-bootstrap confidence interval.

    The audit set is a sample; the interval says how far the mean could move
    on another sample of the same size. Deterministic for a given ``seed``
    (a private generator, never the global RNG). No values: all NaN, n = 0.
    """
    if not 0 < confidence < 1:
        raise XAICheckError(f"confidence must be in (0, 1), got {confidence}")
    flat = torch.as_tensor(values, dtype=torch.float64).flatten()
    flat = flat[~flat.isnan()]
    n = int(flat.numel())
    if n == 0:
        return Estimate(math.nan, math.nan, math.nan, 0)
    generator = torch.Generator().manual_seed(seed)
    # Resampled in blocks: the (n_resamples, n) index matrix would grow with the audit set
    # (320 MB at 10k images). The generator yields the same draws either way.
    block = max(1, _BOOTSTRAP_BLOCK // n)
    resamples = torch.cat(
        [
            flat[
                torch.randint(n, (min(block, n_resamples - i), n), generator=generator).to(
                    flat.device
                )
            ].mean(dim=1)
            for i in range(0, n_resamples, block)
        ]
    )
    tail = (1 - confidence) / 2
    levels = torch.tensor([tail, 1 - tail], dtype=torch.float64, device=flat.device)
    low, high = torch.quantile(resamples, levels)
    return Estimate(float(flat.mean()), float(low), float(high), n)
