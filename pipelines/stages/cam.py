"""CAM audit of an image classifier against known spurious regions.

Every configured method (the CAM family, or attention rollout for ViTs)
explains each image's predicted class; the first method's per-image scores
form the gating score table, the others add their own metrics and overlays as
evidence. Model-level numbers carry a bootstrap
95 % interval and sit beside their chance level.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pipelines.evidence.columns import SCORE_COLUMNS
from pipelines.policy.schema import HeatmapChecks
from pipelines.stages._progress import batches
from xai_checks.cam import CAMEngine, LayerSpec
from xai_checks.labels import class_labels
from xai_checks.methods import get_method
from xai_checks.metrics import (
    Estimate,
    area_fraction,
    bootstrap_ci,
    energy_pointing_game,
    enrichment,
    pointing_game,
    rank_accuracy,
    relevance_mass,
)
from xai_checks.rollout import AttentionRollout

__all__ = [
    "AuditResult",
    "Cases",
    "MethodAudit",
    "audit_images",
    "make_explainer",
    "merge_audits",
    "shard_bounds",
]


def make_explainer(
    method: str, model: nn.Module, target_layer: LayerSpec | Sequence[LayerSpec] | None = None
) -> CAMEngine | AttentionRollout:
    """The method's explainer from the registry (``xai_checks.methods``); every kind gives
    heatmaps and predictions from ``explain``.

    Attention methods (rollout) read every attention layer and are
    class-agnostic, so they take no target layer.
    """
    spec = get_method(method)
    if not spec.needs_target_layer:
        return spec.load()(model)
    return spec.load()(model, target_layer)


_PER_IMAGE = {
    "spurious_mass": relevance_mass,
    "enrichment": enrichment,
    "rank_accuracy": rank_accuracy,
    "pointing_game": pointing_game,
    "energy_pointing_game": energy_pointing_game,
}
"""Per-image metrics, by the name their model-level mean is logged under."""

LOW_RESOLUTION = 16
"""Side of the heatmap kept for every image (``MethodAudit.low_res``): enough for
strategy discovery, and 1 KB per image, so even big audits keep them all."""


@dataclass(frozen=True)
class Cases:
    """A few audited images with their full-resolution heatmaps, for overlay grids."""

    images: Tensor
    heatmaps: Tensor
    masks: Tensor
    rows: pd.DataFrame


@dataclass(frozen=True)
class MethodAudit:
    """One CAM method's scores over the audit set."""

    method: str
    layers: tuple[str, ...]
    per_image: dict[str, Tensor]
    """Each of ``_PER_IMAGE``'s metrics, (N,) float, NaN where undefined."""
    estimates: dict[str, Estimate]
    flagged_fraction: float
    worst: Cases
    """The highest-spurious-mass images, worst first."""
    samples: Cases
    """The first images in audit-set order: what the model typically looks at."""
    low_res: Tensor = field(default_factory=lambda: torch.empty(0, LOW_RESOLUTION, LOW_RESOLUTION))
    """(N, 16, 16) every image's heatmap, average-pooled: the input of strategy discovery."""

    def metrics(self, chance_mass: float) -> dict[str, float]:
        """MLflow metrics under the method's prefix, e.g. ``gradcam.spurious_mass_ci_low``."""
        out: dict[str, float] = {}
        for name, estimate in self.estimates.items():
            out |= estimate.as_dict(f"{self.method}.{name}")
        out[f"{self.method}.flagged_fraction"] = self.flagged_fraction
        out[f"{self.method}.chance_mass"] = chance_mass
        return out


@dataclass(frozen=True)
class AuditResult:
    scores: pd.DataFrame
    """One row per image, ``SCORE_COLUMNS`` of the gating method, then ``<method>_spurious_mass``
    for every other method."""
    methods: dict[str, MethodAudit]
    summary: dict[str, float | int | str] = field(default_factory=dict)
    correct: Tensor = field(default_factory=lambda: torch.empty(0, dtype=torch.bool))
    """(N,) whether each prediction matched its label: shards merge into the same accuracy."""
    chance: Tensor = field(default_factory=lambda: torch.empty(0))
    """(N,) each mask's area fraction: the chance level of the spurious mass."""
    predictions: Tensor = field(default_factory=lambda: torch.empty(0, dtype=torch.long))
    """(N,) the predicted class: the class each heatmap explains."""
    pixel_spread: Tensor = field(default_factory=lambda: torch.empty(0))
    """(N,) each image's pixel standard deviation: near 0, the image is blank (no evidence)."""

    @property
    def gating(self) -> MethodAudit:
        return next(iter(self.methods.values()))

    def metrics(self) -> dict[str, float]:
        """The MLflow metrics of this audit: every method's, plus accuracy."""
        out = {"accuracy": float(self.summary["accuracy"])}
        for method in self.methods.values():
            out |= method.metrics(float(self.summary["chance_mass"]))
        return out


class _Tracker:
    """Streams one method's per-image scores and keeps only the overlays it will draw."""

    def __init__(self, method: str, keep: int, n: int, *, score: bool = True) -> None:
        self.method, self.keep, self.score = method, keep, score
        # Preallocated, not a list of small per-batch tensors: those would pin the freed
        # batch buffers between them in the heap, and memory would grow with the set.
        self.scores = {name: torch.full((n,), float("nan")) for name in _PER_IMAGE}
        self.low_res = torch.zeros(n, LOW_RESOLUTION, LOW_RESOLUTION)
        self.worst_index = torch.empty(0, dtype=torch.long)
        self.worst_maps: Tensor | None = None
        self.worst_mass = torch.empty(0)
        self.sample_maps: list[Tensor] = []

    def add(self, start: int, heatmaps: Tensor, masks: Tensor) -> None:
        stop = start + len(heatmaps)
        for name, metric in _PER_IMAGE.items() if self.score else ():
            self.scores[name][start:stop] = metric(heatmaps, masks).cpu()
        heatmaps = heatmaps.cpu()
        pooled = F.adaptive_avg_pool2d(heatmaps.float().unsqueeze(1), LOW_RESOLUTION)
        self.low_res[start:stop] = pooled.squeeze(1)
        if start < self.keep:
            self.sample_maps.append(heatmaps[: self.keep - start].clone())
        # Keep only the running top-k for overlays: memory stays flat on big audits.
        mass = self.scores["spurious_mass"][start:stop].nan_to_num(nan=-1.0)
        index = torch.cat([self.worst_index, torch.arange(start, start + len(heatmaps))])
        maps = heatmaps if self.worst_maps is None else torch.cat([self.worst_maps, heatmaps])
        masses = torch.cat([self.worst_mass, mass])
        keep = masses.argsort(descending=True, stable=True)[: self.keep]
        self.worst_index, self.worst_maps, self.worst_mass = index[keep], maps[keep], masses[keep]


def audit_images(
    model: nn.Module,
    images: Tensor,
    labels: Tensor | Sequence[int],
    masks: Tensor,
    *,
    image_ids: Sequence[str] | None = None,
    class_names: Sequence[str] | None = None,
    flag_mass: float | None = None,
    methods: Sequence[str] = ("gradcam",),
    target_layer: LayerSpec | Sequence[LayerSpec] | None = None,
    batch_size: int = 32,
    keep_worst: int = 12,
    progress: bool | None = None,
    regions: bool = True,
) -> AuditResult:
    """Explain each image's predicted class with every CAM method and score it against its mask.

    ``images`` are (N, C, H, W) as the model takes them, ``masks`` (N, H, W)
    bool: tensors, or lazy stacks that decode the rows asked for
    (``pipelines.audit_sets.images.FileStack``). Batches stream through;
    full-resolution heatmaps are kept only for the ``keep_worst``
    highest-mass images and the first ``keep_worst`` images of each method,
    16 x 16 ones for every image (``MethodAudit.low_res``). ``progress=None``
    shows a bar on a TTY. ``regions=False`` (masks all empty): heatmaps only,
    every score NaN, for strategy discovery.
    """
    flag_mass = HeatmapChecks().flag_mass if flag_mass is None else flag_mass
    labels = torch.as_tensor(labels, dtype=torch.long)
    n = images.shape[0]
    if labels.shape != (n,):
        raise ValueError(f"labels must have shape ({n},), got {tuple(labels.shape)}")
    if masks.shape[0] != n:
        raise ValueError(f"masks must hold one mask per image ({n}), got {masks.shape[0]}")
    ids = list(image_ids) if image_ids is not None else [str(i) for i in range(n)]
    if len(ids) != n:
        raise ValueError(f"image_ids must hold one id per image ({n}), got {len(ids)}")
    if not methods:
        raise ValueError("methods must name at least one CAM method")
    for method in methods:
        get_method(method)  # an unknown name fails here, before any model runs

    cams = {method: make_explainer(method, model, target_layer) for method in methods}
    trackers = {method: _Tracker(method, keep_worst, n, score=regions) for method in methods}
    prediction = torch.zeros(n, dtype=torch.long)
    chance = torch.zeros(n)
    spread = torch.zeros(n)
    starts = range(0, n, batch_size)
    for start in batches(starts, desc="CAM audit", progress=progress):
        stop = min(start + batch_size, n)
        batch, batch_masks = images[start:stop], masks[start:stop]  # read once, for every method
        spread[start:stop] = batch.detach().flatten(1).float().std(dim=1).cpu()
        for index, (method, cam) in enumerate(cams.items()):
            result = cam.explain(batch)
            batch_masks = batch_masks.to(result.heatmaps.device)
            trackers[method].add(start, result.heatmaps, batch_masks)
            if index == 0:
                prediction[start:stop] = result.predictions.cpu()
                chance[start:stop] = area_fraction(batch_masks).cpu()

    label_names = class_labels(labels, class_names)
    prediction_names = class_labels(prediction, class_names)
    audits = {
        method: _finish(
            trackers[method],
            getattr(cams[method], "target_layers", ()),
            images,
            masks,
            flag_mass,
            ids,
            label_names,
            prediction_names,
        )
        for method in methods
    }
    return _assemble(
        audits,
        ids,
        label_names,
        prediction_names,
        prediction,
        prediction == labels,
        chance,
        spread,
        flag_mass,
    )


def _assemble(
    audits: dict[str, MethodAudit],
    ids: list[str],
    label_names: list[str] | list[int],
    prediction_names: list[str] | list[int],
    predictions: Tensor,
    correct: Tensor,
    chance: Tensor,
    spread: Tensor,
    flag_mass: float,
) -> AuditResult:
    """The score table and summary from each method's audit: one path for whole and sharded."""
    methods = list(audits)
    gating = audits[methods[0]]
    scores = pd.DataFrame(
        {
            "image_id": ids,
            "label": label_names,
            "prediction": prediction_names,
            "spurious_mass": gating.per_image["spurious_mass"].double().numpy(),
            "enrichment": gating.per_image["enrichment"].double().numpy(),
            "rank_accuracy": gating.per_image["rank_accuracy"].double().numpy(),
            "pointing_hit": gating.per_image["pointing_game"].double().numpy(),
            "flagged": (gating.per_image["spurious_mass"] > flag_mass).numpy(),
        },
        columns=list(SCORE_COLUMNS),
    )
    for method in methods[1:]:
        scores[f"{method}_spurious_mass"] = (
            audits[method].per_image["spurious_mass"].double().numpy()
        )
    summary: dict[str, float | int | str] = {
        "n_images": len(ids),
        "n_inputs": len(ids),
        "accuracy": float(correct.float().mean()),
        "method": methods[0],
        "spurious_mass": gating.estimates["spurious_mass"].mean,
        "enrichment": gating.estimates["enrichment"].mean,
        "flagged_fraction": gating.flagged_fraction,
        "chance_mass": float(chance.mean()),
        "target_layer": ", ".join(gating.layers),
    }
    return AuditResult(
        scores,
        audits,
        summary,
        correct=correct,
        chance=chance,
        predictions=predictions,
        pixel_spread=spread,
    )


def shard_bounds(n: int, shards: int, batch_size: int) -> list[tuple[int, int]]:
    """``shards`` contiguous ``(start, stop)`` ranges over ``n`` images, cut on batch edges.

    Cutting on batch edges gives every batch the same images as an unsharded
    run, so the merged scores are identical, not merely close.
    """
    if n == 0:
        return [(0, 0)]
    batches = -(-n // batch_size)
    step = -(-batches // max(1, min(shards, batches))) * batch_size
    return [(start, min(start + step, n)) for start in range(0, n, step)]


def merge_audits(
    parts: Sequence[AuditResult], *, flag_mass: float | None = None, keep_worst: int = 12
) -> AuditResult:
    """Join the audits of consecutive shards into the audit of the whole set.

    Per-image scores are concatenated in order, and every model-level number is
    recomputed from them, so the result equals an unsharded ``audit_images``.
    """
    if not parts:
        raise ValueError("merge_audits needs at least one shard")
    flag_mass = HeatmapChecks().flag_mass if flag_mass is None else flag_mass
    methods = list(parts[0].methods)
    audits = {
        method: _merge_method([part.methods[method] for part in parts], flag_mass, keep_worst)
        for method in methods
    }

    def column(name: str) -> list:
        return [value for part in parts for value in part.scores[name].tolist()]

    return _assemble(
        audits,
        [str(i) for i in column("image_id")],
        column("label"),
        column("prediction"),
        torch.cat([part.predictions for part in parts]),
        torch.cat([part.correct for part in parts]),
        torch.cat([part.chance for part in parts]),
        torch.cat([part.pixel_spread for part in parts]),
        flag_mass,
    )


def _merge_method(parts: list[MethodAudit], flag_mass: float, keep: int) -> MethodAudit:
    per_image = {name: torch.cat([part.per_image[name] for part in parts]) for name in _PER_IMAGE}
    mass = per_image["spurious_mass"]
    low_res = torch.cat([part.low_res for part in parts])
    worst = _join([part.worst for part in parts])
    # Stable sort over shards in order: ties keep audit-set order, as the streaming top-k does.
    candidates = torch.tensor(worst.rows["spurious_mass"].to_numpy()).nan_to_num(nan=-1.0)
    top = candidates.argsort(descending=True, stable=True)[:keep]
    samples = _join([part.samples for part in parts])
    n_samples = min(keep, int(mass.numel()))
    return MethodAudit(
        method=parts[0].method,
        layers=parts[0].layers,
        per_image=per_image,
        estimates={name: bootstrap_ci(values) for name, values in per_image.items()},
        flagged_fraction=float((mass > flag_mass).float().mean()),
        worst=_pick(worst, top),
        samples=_pick(samples, torch.arange(n_samples)),
        low_res=low_res,
    )


def _join(cases: list[Cases]) -> Cases:
    return Cases(
        images=torch.cat([c.images for c in cases]),
        heatmaps=torch.cat([c.heatmaps for c in cases]),
        masks=torch.cat([c.masks for c in cases]),
        rows=pd.concat([c.rows for c in cases], ignore_index=True),
    )


def _pick(cases: Cases, index: Tensor) -> Cases:
    return Cases(
        images=cases.images[index],
        heatmaps=cases.heatmaps[index],
        masks=cases.masks[index],
        rows=cases.rows.iloc[index.tolist()].reset_index(drop=True),
    )


def _finish(
    tracker: _Tracker,
    layers: tuple[str, ...],
    images: Tensor,
    masks: Tensor,
    flag_mass: float,
    ids: list[str],
    labels: list[str] | list[int],
    predictions: list[str] | list[int],
) -> MethodAudit:
    per_image = dict(tracker.scores)
    mass = per_image["spurious_mass"]
    rows = pd.DataFrame(
        {"image_id": ids, "label": labels, "prediction": predictions, "spurious_mass": mass.numpy()}
    )
    worst_index = tracker.worst_index
    n_samples = min(tracker.keep, len(ids))
    empty = torch.empty(0, *images.shape[-2:])
    return MethodAudit(
        method=tracker.method,
        layers=layers,
        per_image=per_image,
        estimates={name: bootstrap_ci(values) for name, values in per_image.items()},
        flagged_fraction=float((mass > flag_mass).float().mean()),
        worst=Cases(
            images=images[worst_index].detach().cpu(),
            heatmaps=tracker.worst_maps if tracker.worst_maps is not None else empty,
            masks=masks[worst_index].cpu(),
            rows=rows.iloc[worst_index.tolist()].reset_index(drop=True),
        ),
        samples=Cases(
            images=images[:n_samples].detach().cpu(),
            heatmaps=torch.cat(tracker.sample_maps),
            masks=masks[:n_samples].cpu(),
            rows=rows.iloc[:n_samples].reset_index(drop=True),
        ),
        low_res=tracker.low_res,
    )
