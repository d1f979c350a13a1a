"""Counterfactual evidence: does the prediction follow the artifact?

Heatmaps say where a model looks, not what it uses (Adebayo et al. 2022), so a
gate needs evidence that does not go through an explanation method at all:

- **Removal.** Fill the spurious region from its surroundings and predict
  again. A model that uses the artifact changes its mind; report the flip
  rate and the accuracy with and without the artifact.
- **Insertion** (Adebayo et al.'s spurious score). Paste the artifact region
  of images of class A onto images of other classes, after removing their
  own artifact, and read the model's probability of class A. A model that
  learned "artifact means A" says A; a clean one keeps its answer.

The fill is a harmonic (diffusion) inpainting: the region's border takes the
surrounding pixels and its inside relaxes smoothly between them. A black or
grey box would itself be a new, out-of-distribution artifact, and a flip
could then be caused by the box instead of the missing ruler.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from xai_checks._inputs import as_logits, prepare_images
from xai_checks._model_state import explanation_mode
from xai_checks.errors import NonFiniteError, XAICheckError

__all__ = [
    "InsertionResult",
    "RemovalResult",
    "fill_from_surroundings",
    "insertion_test",
    "paste_artifacts",
    "predict_proba",
    "removal_test",
]

_RELAX_STEPS = 40
"""Jacobi sweeps inside the region after the border-in fill: enough to smooth
the onion-peel rings of a ruler-wide band without visible cost."""


def fill_from_surroundings(images: Tensor, masks: Tensor) -> Tensor:
    """Replace each image's masked pixels by a smooth fill from the pixels around them.

    Border-in (onion-peel) fill with the mean of the known 3 x 3 neighbours,
    then Jacobi relaxation inside the region with the outside held fixed: an
    approximation of the harmonic interpolant. ``images`` (N, C, H, W),
    ``masks`` (N, H, W) bool; an empty mask leaves its image unchanged.
    """
    _check_pair(images, masks)
    region = masks.unsqueeze(1).to(images.device)
    known = (~region).to(images.dtype)
    if (known.flatten(1).sum(dim=1) == 0).any():
        index = int((known.flatten(1).sum(dim=1) == 0).nonzero()[0])
        raise XAICheckError(f"mask of image {index} covers the whole image: nothing to fill from")
    filled = images * known
    while (known == 0).any():
        total = _neighbour_mean(filled * known)
        weight = _neighbour_mean(known)
        frontier = (known == 0) & (weight > 0)
        filled = torch.where(frontier, total / weight.clamp_min(1e-12), filled)
        known = torch.where(frontier, torch.ones_like(known), known)
    for _ in range(_RELAX_STEPS):
        filled = torch.where(region, _neighbour_mean(filled), filled)
    return filled


def paste_artifacts(images: Tensor, donors: Tensor, donor_masks: Tensor) -> Tensor:
    """Each image with its donor's masked pixels pasted in at the same place."""
    _check_pair(donors, donor_masks)
    if images.shape != donors.shape:
        raise XAICheckError(
            f"images {tuple(images.shape)} and donors {tuple(donors.shape)} must have one shape"
        )
    return torch.where(donor_masks.unsqueeze(1).to(images.device), donors, images)


def predict_proba(model: nn.Module, images: Tensor, *, batch_size: int = 64) -> Tensor:
    """Softmax probabilities (N, classes) in eval mode; the model's flags are restored."""
    if batch_size < 1:
        raise XAICheckError(f"batch_size must be >= 1, got {batch_size}")
    chunks = []
    with torch.inference_mode(False), explanation_mode(model), torch.no_grad():
        images = prepare_images(model, images)
        for start in range(0, images.shape[0], batch_size):
            logits = as_logits(model(images[start : start + batch_size])).float()
            chunks.append(logits.softmax(dim=1))
    probabilities = torch.cat(chunks)
    if not torch.isfinite(probabilities).all():
        raise NonFiniteError("the model's outputs contain NaN or Inf")
    return probabilities


@dataclass(frozen=True)
class RemovalResult:
    """Predictions before and after the artifact was filled in, per image.

    Rates are over the images that have an artifact (a non-empty mask); images
    without one are kept for alignment and never count as flipped.
    """

    labels: Tensor
    has_artifact: Tensor
    predictions: Tensor
    predictions_without: Tensor
    probabilities: Tensor
    probabilities_without: Tensor
    edited: Tensor | list[str]
    """The inputs with the artifact removed (images (N, C, H, W), or texts), for before/after
    views."""

    @property
    def flipped(self) -> Tensor:
        return self.has_artifact & (self.predictions != self.predictions_without)

    @property
    def flip_rate(self) -> float:
        return _share(self.flipped, self.has_artifact)

    @property
    def accuracy_with(self) -> float:
        return _share(self.predictions == self.labels, self.has_artifact)

    @property
    def accuracy_without(self) -> float:
        return _share(self.predictions_without == self.labels, self.has_artifact)


def removal_test(
    model: nn.Module, images: Tensor, masks: Tensor, labels: Tensor, *, batch_size: int = 64
) -> RemovalResult:
    """Fill every masked region from its surroundings and compare the predictions."""
    _check_pair(images, masks)
    labels = _check_labels(labels, images.shape[0])
    has_artifact = masks.flatten(1).any(dim=1).cpu()
    if not has_artifact.any():
        raise XAICheckError("no image has a spurious mask: there is no artifact to remove")
    edited = fill_from_surroundings(images, masks)
    before = predict_proba(model, images, batch_size=batch_size).cpu()
    after = predict_proba(model, edited, batch_size=batch_size).cpu()
    return RemovalResult(
        labels=labels,
        has_artifact=has_artifact,
        predictions=before.argmax(dim=1),
        predictions_without=after.argmax(dim=1),
        probabilities=before,
        probabilities_without=after,
        edited=edited.detach().cpu(),
    )


@dataclass(frozen=True)
class InsertionResult:
    """The artifact of class ``artifact_class`` pasted onto images of the other classes.

    ``target_index`` are the receiving images (indices into the audit set),
    ``source_index`` their donors. ``baseline`` is P(artifact_class) on the
    receiving image with its own artifact filled in, ``probability`` the same
    after pasting. ``scores_by_class`` holds the spurious score of every class
    that was tried, when the class was not given.
    """

    artifact_class: int
    target_index: Tensor
    source_index: Tensor
    baseline: Tensor
    probability: Tensor
    predictions_before: Tensor
    predictions_after: Tensor
    cleaned: Tensor | list[str]
    pasted: Tensor | list[str]
    scores_by_class: dict[int, float]

    @property
    def spurious_score(self) -> float:
        """Mean P(artifact_class) after pasting (Adebayo et al. 2022): near 1 = shortcut."""
        return float(self.probability.mean())

    @property
    def lift(self) -> float:
        """Mean rise in P(artifact_class) caused by the paste alone."""
        return float((self.probability - self.baseline).mean())

    @property
    def flip_rate(self) -> float:
        """Share of images not predicted as the artifact's class before, but after."""
        toward = self.predictions_after == self.artifact_class
        return _share(toward, self.predictions_before != self.artifact_class)


def insertion_test(
    model: nn.Module,
    images: Tensor,
    masks: Tensor,
    labels: Tensor,
    artifact_class: int | None = None,
    *,
    batch_size: int = 64,
    cleaned: Tensor | None = None,
) -> InsertionResult:
    """Paste class-A artifacts onto the other classes' images and read P(A).

    ``cleaned`` may pass in ``removal_test``'s filled images, so the fill runs once.

    Donors are the class-A images with a non-empty mask, cycled in audit-set
    order so the result is deterministic. With ``artifact_class=None`` every
    class with donors is tried and the one with the highest spurious score is
    returned: the gate should not need to be told which class the shortcut
    serves.
    """
    _check_pair(images, masks)
    labels = _check_labels(labels, images.shape[0])
    has_artifact = masks.flatten(1).any(dim=1).cpu()
    classes = sorted({int(c) for c in labels[has_artifact].tolist()})
    if artifact_class is not None:
        if artifact_class not in classes:
            raise XAICheckError(
                f"no image of class {artifact_class} has a spurious mask: nothing to paste"
            )
        classes = [artifact_class]
    candidates = [c for c in classes if (labels != c).any()]
    if not candidates:
        raise XAICheckError(
            "insertion needs masked images of one class and images of another class; "
            f"masked classes: {classes}, labels present: {sorted(set(labels.tolist()))}"
        )
    if cleaned is not None and cleaned.shape != images.shape:
        raise XAICheckError(
            f"cleaned images {tuple(cleaned.shape)} must match images {tuple(images.shape)}"
        )
    cleaned_all = (
        fill_from_surroundings(images, masks) if cleaned is None else cleaned.to(images.device)
    )
    results = {
        c: _insert(model, images, masks, labels, cleaned_all, c, batch_size) for c in candidates
    }
    worst = max(results.values(), key=lambda r: r.spurious_score)
    scores = {c: r.spurious_score for c, r in results.items()}
    return replace(worst, scores_by_class=scores)


def _insert(
    model: nn.Module,
    images: Tensor,
    masks: Tensor,
    labels: Tensor,
    cleaned_all: Tensor,
    artifact_class: int,
    batch_size: int,
) -> InsertionResult:
    donors = ((labels == artifact_class) & masks.flatten(1).any(dim=1).cpu()).nonzero().flatten()
    targets = (labels != artifact_class).nonzero().flatten()
    sources = donors[torch.arange(targets.numel()) % donors.numel()]
    device = images.device
    cleaned = cleaned_all[targets.to(device)]
    pasted = paste_artifacts(cleaned, images[sources.to(device)], masks[sources.to(device)])
    before = predict_proba(model, cleaned, batch_size=batch_size).cpu()
    after = predict_proba(model, pasted, batch_size=batch_size).cpu()
    return InsertionResult(
        artifact_class=artifact_class,
        target_index=targets,
        source_index=sources,
        baseline=before[:, artifact_class],
        probability=after[:, artifact_class],
        predictions_before=before.argmax(dim=1),
        predictions_after=after.argmax(dim=1),
        cleaned=cleaned.detach().cpu(),
        pasted=pasted.detach().cpu(),
        scores_by_class={},
    )


def _neighbour_mean(x: Tensor) -> Tensor:
    return F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)


def _share(hits: Tensor, among: Tensor) -> float:
    count = int(among.sum())
    return float((hits & among).sum() / count) if count else float("nan")


def _check_pair(images: Tensor, masks: Tensor) -> None:
    if not isinstance(images, Tensor) or not isinstance(masks, Tensor):
        raise TypeError("images and masks must be torch tensors")
    if images.ndim != 4 or images.shape[0] == 0:
        raise XAICheckError(
            f"images must have shape (N, C, H, W) with N >= 1, got {tuple(images.shape)}"
        )
    if masks.dtype != torch.bool:
        raise XAICheckError(f"masks must be boolean, got dtype {masks.dtype}")
    expected = (images.shape[0], *images.shape[-2:])
    if tuple(masks.shape) != expected:
        raise XAICheckError(
            f"masks must have shape (N, H, W) = {expected} to match the images, "
            f"got {tuple(masks.shape)}"
        )


def _check_labels(labels: Tensor, n: int) -> Tensor:
    labels = torch.as_tensor(labels).cpu()
    if labels.shape != (n,) or labels.is_floating_point():
        raise XAICheckError(
            f"labels must be {n} integer class indices, got {labels.dtype} {tuple(labels.shape)}"
        )
    return labels.long()
