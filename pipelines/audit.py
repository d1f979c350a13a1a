"""Grad-CAM audit of an image classifier against known spurious regions."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import pandas as pd
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from pipelines.policy import SCORE_COLUMNS, Thresholds
from xai_checks.cam import GradCAM
from xai_checks.metrics import area_fraction, enrichment, relevance_mass

__all__ = ["AuditResult", "Cases", "audit_images"]


@dataclass(frozen=True)
class Cases:
    """A few audited images with their full-resolution heatmaps, for overlay grids."""

    images: Tensor
    heatmaps: Tensor
    masks: Tensor
    rows: pd.DataFrame


@dataclass(frozen=True)
class AuditResult:
    scores: pd.DataFrame
    """One row per image: ``image_id, label, prediction, spurious_mass, enrichment, flagged``."""
    summary: dict[str, float | int | str] = field(default_factory=dict)
    worst: Cases | None = None
    """The highest-spurious-mass images, worst first."""
    samples: Cases | None = None
    """The first images in audit-set order: what the model typically looks at."""

    def metrics(self) -> dict[str, float]:
        """The MLflow metrics of this audit."""
        return {
            "gradcam.spurious_mass": float(self.summary["spurious_mass"]),
            "gradcam.enrichment": float(self.summary["enrichment"]),
            "gradcam.flagged_fraction": float(self.summary["flagged_fraction"]),
            "accuracy": float(self.summary["accuracy"]),
        }


def audit_images(
    model: nn.Module,
    images: Tensor,
    labels: Tensor | Sequence[int],
    masks: Tensor,
    *,
    image_ids: Sequence[str] | None = None,
    class_names: Sequence[str] | None = None,
    thresholds: Thresholds | None = None,
    target_layer: str | nn.Module | None = None,
    batch_size: int = 32,
    keep_worst: int = 12,
    progress: bool | None = None,
) -> AuditResult:
    """Explain each image's predicted class with Grad-CAM and score it against its mask.

    ``images`` are (N, C, H, W) as the model takes them, ``masks`` (N, H, W)
    bool. Batches stream through; full-resolution heatmaps are kept only for
    the ``keep_worst`` highest-mass images and the first ``keep_worst`` images.
    ``progress=None`` shows a bar on a TTY.
    """
    thresholds = thresholds or Thresholds()
    labels = torch.as_tensor(labels, dtype=torch.long)
    n = images.shape[0]
    if labels.shape != (n,):
        raise ValueError(f"labels must have shape ({n},), got {tuple(labels.shape)}")
    if masks.shape[0] != n:
        raise ValueError(f"masks must hold one mask per image ({n}), got {masks.shape[0]}")
    ids = list(image_ids) if image_ids is not None else [str(i) for i in range(n)]
    if len(ids) != n:
        raise ValueError(f"image_ids must hold one id per image ({n}), got {len(ids)}")

    cam = GradCAM(model, target_layer)
    predictions, masses, enrichments, chance = [], [], [], []
    worst_index = torch.empty(0, dtype=torch.long)
    worst_maps = torch.empty(0, *images.shape[-2:])
    worst_mass = torch.empty(0)
    sample_maps: list[Tensor] = []
    starts = range(0, n, batch_size)
    for start in tqdm(starts, desc="Grad-CAM audit", unit="batch", disable=_no_bar(progress)):
        stop = min(start + batch_size, n)
        result = cam.explain(images[start:stop])
        batch_masks = masks[start:stop].to(result.heatmaps.device)
        mass = relevance_mass(result.heatmaps, batch_masks).cpu()
        predictions.append(result.predictions.cpu())
        masses.append(mass)
        enrichments.append(enrichment(result.heatmaps, batch_masks).cpu())
        chance.append(area_fraction(batch_masks).cpu())
        if start < keep_worst:
            sample_maps.append(result.heatmaps[: keep_worst - start].cpu())
        # Keep only the running top-k for overlays: memory stays flat on big audits.
        worst_index = torch.cat([worst_index, torch.arange(start, stop)])
        worst_maps = torch.cat([worst_maps, result.heatmaps.cpu()])
        worst_mass = torch.cat([worst_mass, mass.nan_to_num(nan=-1.0)])
        keep = worst_mass.argsort(descending=True, stable=True)[:keep_worst]
        worst_index, worst_maps, worst_mass = worst_index[keep], worst_maps[keep], worst_mass[keep]

    prediction = torch.cat(predictions)
    mass = torch.cat(masses)
    scores = pd.DataFrame(
        {
            "image_id": ids,
            "label": _names(labels, class_names),
            "prediction": _names(prediction, class_names),
            "spurious_mass": mass.double().numpy(),
            "enrichment": torch.cat(enrichments).double().numpy(),
            "flagged": (mass > thresholds.flag_mass).numpy(),
        },
        columns=list(SCORE_COLUMNS),
    )
    summary: dict[str, float | int | str] = {
        "n_images": n,
        "accuracy": float((prediction == labels).float().mean()),
        "spurious_mass": float(scores["spurious_mass"].mean()),
        "enrichment": float(scores["enrichment"].mean()),
        "flagged_fraction": float(scores["flagged"].mean()),
        "chance_mass": float(torch.cat(chance).mean()),
        "target_layer": cam.target_layer or "",
    }
    worst = Cases(
        images=images[worst_index].detach().cpu(),
        heatmaps=worst_maps,
        masks=masks[worst_index].cpu(),
        rows=scores.iloc[worst_index.tolist()].reset_index(drop=True),
    )
    n_samples = min(keep_worst, n)
    samples = Cases(
        images=images[:n_samples].detach().cpu(),
        heatmaps=torch.cat(sample_maps),
        masks=masks[:n_samples].cpu(),
        rows=scores.iloc[:n_samples].reset_index(drop=True),
    )
    return AuditResult(scores=scores, summary=summary, worst=worst, samples=samples)


def _names(indices: Tensor, class_names: Sequence[str] | None) -> list[str] | list[int]:
    values = indices.tolist()
    if class_names is None:
        return values
    return [class_names[i] if 0 <= i < len(class_names) else str(i) for i in values]


def _no_bar(progress: bool | None) -> bool | None:
    return None if progress is None else not progress
