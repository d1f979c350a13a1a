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

from xai_checks._inputs import check_batch_size, check_image_batch
from xai_checks.errors import XAICheckError
from xai_checks.predict import batch_proba, predict_proba, predicting

__all__ = [
    "InsertionResult",
    "RemovalResult",
    "counterfactual_tests",
    "fill_from_surroundings",
    "inserted_images",
    "insertion_test",
    "paste_artifacts",
    "predict_proba",  # re-exported from xai_checks.predict, where it lives
    "removal_test",
]

_RELAX_STEPS = 40
"""Jacobi sweeps inside the region after the border-in fill: enough to smooth
the onion-peel rings of a ruler-wide band without visible cost."""


def fill_from_surroundings(images: Tensor, masks: Tensor, *, first_index: int = 0) -> Tensor:
    """Replace each image's masked pixels by a smooth fill from the pixels around them.

    Border-in (onion-peel) fill with the mean of the known 3 x 3 neighbours,
    then Jacobi relaxation inside the region with the outside held fixed: an
    approximation of the harmonic interpolant. ``images`` (N, C, H, W),
    ``masks`` (N, H, W) bool; an empty mask leaves its image unchanged.
    ``first_index`` numbers the images in errors, for a batch of a larger set.
    """
    _check_tensors(images, masks)
    region = masks.unsqueeze(1).to(images.device)
    known = (~region).to(images.dtype)
    if (known.flatten(1).sum(dim=1) == 0).any():
        index = int((known.flatten(1).sum(dim=1) == 0).nonzero()[0])
        raise XAICheckError(
            f"mask of image {first_index + index} covers the whole image: nothing to fill from"
        )
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
    _check_tensors(donors, donor_masks)
    if images.shape != donors.shape:
        raise XAICheckError(
            f"images {tuple(images.shape)} and donors {tuple(donors.shape)} must have one shape"
        )
    return torch.where(donor_masks.unsqueeze(1).to(images.device), donors, images)


MIN_FLIP_DROP = 0.10
"""A changed prediction counts as a flip only when P(the class predicted with the artifact)
falls by at least this. A model at its decision boundary (under-trained, P ≈ 0.5 everywhere)
tips over on any edit, 0.51 to 0.49; that is noise, not reliance on what was removed."""


@dataclass(frozen=True)
class RemovalResult:
    """Predictions before and after the artifact was filled in, per image.

    Rates are over the images that have an artifact (a non-empty mask); images
    without one are kept for alignment and never count as flipped. A flip is
    a changed prediction whose probability fell by ``MIN_FLIP_DROP`` or more.
    """

    labels: Tensor
    has_artifact: Tensor
    predictions: Tensor
    predictions_without: Tensor
    probabilities: Tensor
    probabilities_without: Tensor
    edited: list[str] | None = None
    """The texts with their spurious words removed. Images are not kept, so the
    test streams: ``fill_from_surroundings`` redraws any of them."""

    @property
    def drop(self) -> Tensor:
        """(N,) the fall in P(class predicted with the artifact) once it is removed."""
        index = self.predictions.unsqueeze(1)
        before = self.probabilities.gather(1, index).squeeze(1)
        return before - self.probabilities_without.gather(1, index).squeeze(1)

    @property
    def flipped(self) -> Tensor:
        changed = self.predictions != self.predictions_without
        return self.has_artifact & changed & (self.drop >= MIN_FLIP_DROP)

    @property
    def flip_rate(self) -> float:
        return _share(self.flipped, self.has_artifact)

    @property
    def accuracy_with(self) -> float:
        return _share(self.predictions == self.labels, self.has_artifact)

    @property
    def accuracy_without(self) -> float:
        return _share(self.predictions_without == self.labels, self.has_artifact)


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
    scores_by_class: dict[int, float]
    cleaned: list[str] | None = None
    """Texts only, like ``RemovalResult.edited``; ``inserted_images`` redraws image pairs."""
    pasted: list[str] | None = None

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


def removal_test(
    model: nn.Module, images: Tensor, masks: Tensor, labels: Tensor, *, batch_size: int = 64
) -> RemovalResult:
    """Fill every masked region from its surroundings and compare the predictions."""
    return _scan(model, images, masks, labels, None, batch_size, insert=False)[0]


def insertion_test(
    model: nn.Module,
    images: Tensor,
    masks: Tensor,
    labels: Tensor,
    artifact_class: int | None = None,
    *,
    batch_size: int = 64,
) -> InsertionResult:
    """Paste class-A artifacts onto the other classes' images and read P(A).

    Donors are the class-A images with a non-empty mask, cycled in audit-set
    order so the result is deterministic. With ``artifact_class=None`` every
    class with donors is tried and the one with the highest spurious score is
    returned: the gate should not need to be told which class the shortcut
    serves.
    """
    return counterfactual_tests(
        model, images, masks, labels, artifact_class, batch_size=batch_size
    )[1]


def counterfactual_tests(
    model: nn.Module,
    images: Tensor,
    masks: Tensor,
    labels: Tensor,
    artifact_class: int | None = None,
    *,
    batch_size: int = 64,
) -> tuple[RemovalResult, InsertionResult]:
    """Removal and insertion in one streamed pass over the audit set.

    Each batch is read once and filled once, then predicted as it is, without
    its artifact (removal; also the insertion baseline) and with each candidate
    class's artifact pasted in. Only probabilities are kept, so memory does not
    grow with the set. ``images`` (N, C, H, W) and ``masks`` (N, H, W) bool are
    tensors or lazy stacks of files: anything with ``shape`` that returns
    tensors for ``[start:stop]`` and ``[index tensor]``.
    """
    removal, results = _scan(model, images, masks, labels, artifact_class, batch_size, insert=True)
    worst = max(results, key=lambda r: r.lift)  # the class the paste moves most
    return removal, replace(
        worst, scores_by_class={r.artifact_class: r.spurious_score for r in results}
    )


def _scan(
    model: nn.Module,
    images: Tensor,
    masks: Tensor,
    labels: Tensor,
    artifact_class: int | None,
    batch_size: int,
    *,
    insert: bool,
) -> tuple[RemovalResult, list[InsertionResult]]:
    n = _check_pair(images, masks)
    check_batch_size(batch_size)
    labels = _check_labels(labels, n)
    has_artifact = torch.zeros(n, dtype=torch.bool)
    for start in range(0, n, batch_size):
        batch_masks = _batch_masks(masks, start, batch_size)
        has_artifact[start : start + len(batch_masks)] = batch_masks.flatten(1).any(dim=1).cpu()
    if not has_artifact.any():
        raise XAICheckError("no image has a spurious mask: there is no artifact to remove")
    plans = _insertion_plans(labels, has_artifact, artifact_class) if insert else []
    # Outputs are preallocated, not lists of per-batch tensors: small tensors kept between
    # the freed batch buffers would pin them in the heap, and memory would grow with the set.
    outputs = _Outputs({"before": n, "after": n} | {plan.key: plan.count for plan in plans})
    with predicting(model):
        for start in range(0, n, batch_size):
            stop = min(start + batch_size, n)
            batch, batch_masks = images[start:stop], _batch_masks(masks, start, batch_size)
            cleaned = fill_from_surroundings(batch, batch_masks, first_index=start)
            outputs.put("before", start, batch_proba(model, batch))
            outputs.put("after", start, batch_proba(model, cleaned))
            for plan in plans:
                receiving = plan.receiving[start:stop]
                if receiving.any():
                    donors = plan.donors_of(start, stop)
                    edited = paste_artifacts(
                        cleaned[receiving.to(cleaned.device)], images[donors], masks[donors]
                    )
                    offset = int(plan.receiving[:start].sum())
                    outputs.put(plan.key, offset, batch_proba(model, edited))
    probabilities, probabilities_without = outputs["before"], outputs["after"]
    removal = RemovalResult(
        labels=labels,
        has_artifact=has_artifact,
        predictions=probabilities.argmax(dim=1),
        predictions_without=probabilities_without.argmax(dim=1),
        probabilities=probabilities,
        probabilities_without=probabilities_without,
    )
    return removal, [plan.result(probabilities_without, outputs[plan.key]) for plan in plans]


class _Outputs:
    """Named (rows, classes) results, allocated once the first batch shows the class count."""

    def __init__(self, rows: dict[str, int]) -> None:
        self.rows, self.tensors = rows, {}

    def put(self, name: str, start: int, values: Tensor) -> None:
        if name not in self.tensors:
            self.tensors[name] = torch.empty(self.rows[name], values.shape[1])
        self.tensors[name][start : start + len(values)] = values

    def __getitem__(self, name: str) -> Tensor:
        return self.tensors[name]


def inserted_images(
    images: Tensor, masks: Tensor, target_index: Tensor, source_index: Tensor
) -> tuple[Tensor, Tensor]:
    """The receiving images cleaned, and with their donors' artifacts pasted in, for views."""
    cleaned = fill_from_surroundings(images[target_index], masks[target_index])
    return cleaned, paste_artifacts(cleaned, images[source_index], masks[source_index])


@dataclass(frozen=True)
class _InsertionPlan:
    """Which images receive class ``artifact_class``'s artifact, and from which donor."""

    artifact_class: int
    receiving: Tensor
    """(N,) bool: the images of the other classes."""
    donors: Tensor
    """Class-A images with an artifact, cycled over the receiving images in order."""

    @property
    def key(self) -> str:
        return f"pasted-{self.artifact_class}"

    @property
    def count(self) -> int:
        return int(self.receiving.sum())

    def donors_of(self, start: int, stop: int) -> Tensor:
        rank = self.receiving[:start].sum() + torch.arange(int(self.receiving[start:stop].sum()))
        return self.donors[rank % self.donors.numel()]

    def result(
        self, probabilities_cleaned: Tensor, probabilities_pasted: Tensor
    ) -> InsertionResult:
        targets = self.receiving.nonzero().flatten()
        baseline = probabilities_cleaned[targets]
        c = self.artifact_class
        return InsertionResult(
            artifact_class=c,
            target_index=targets,
            source_index=self.donors[torch.arange(targets.numel()) % self.donors.numel()],
            baseline=baseline[:, c],
            probability=probabilities_pasted[:, c],
            predictions_before=baseline.argmax(dim=1),
            predictions_after=probabilities_pasted.argmax(dim=1),
            scores_by_class={},
        )


def _insertion_plans(
    labels: Tensor, has_artifact: Tensor, artifact_class: int | None
) -> list[_InsertionPlan]:
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
    return [
        _InsertionPlan(c, labels != c, ((labels == c) & has_artifact).nonzero().flatten())
        for c in candidates
    ]


def _batch_masks(masks: Tensor, start: int, batch_size: int) -> Tensor:
    batch = masks[start : start + batch_size]
    if batch.dtype != torch.bool:
        raise XAICheckError(f"masks must be boolean, got dtype {batch.dtype}")
    return batch


def _neighbour_mean(x: Tensor) -> Tensor:
    return F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)


def _share(hits: Tensor, among: Tensor) -> float:
    count = int(among.sum())
    return float((hits & among).sum() / count) if count else float("nan")


def _check_pair(images: Tensor, masks: Tensor) -> int:
    """The number of images, after checking both shapes (not the data: stacks stay lazy)."""
    for name, value in (("images", images), ("masks", masks)):
        if not (hasattr(value, "shape") and hasattr(value, "__getitem__")):
            raise TypeError(
                f"{name} must be a torch tensor or a stack of them, got {type(value).__name__}"
            )
    n = check_image_batch(images)
    if isinstance(masks, Tensor) and masks.dtype != torch.bool:
        raise XAICheckError(f"masks must be boolean, got dtype {masks.dtype}")
    expected = (n, *images.shape[-2:])
    if tuple(masks.shape) != expected:
        raise XAICheckError(
            f"masks must have shape (N, H, W) = {expected} to match the images, "
            f"got {tuple(masks.shape)}"
        )
    return n


def _check_tensors(images: Tensor, masks: Tensor) -> None:
    if not isinstance(images, Tensor) or not isinstance(masks, Tensor):
        raise TypeError("images and masks must be torch tensors")
    _check_pair(images, masks)


def _check_labels(labels: Tensor, n: int) -> Tensor:
    labels = torch.as_tensor(labels).cpu()
    if labels.shape != (n,) or labels.is_floating_point():
        raise XAICheckError(
            f"labels must be {n} integer class indices, got {labels.dtype} {tuple(labels.shape)}"
        )
    return labels.long()
