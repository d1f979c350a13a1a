"""Input and output plumbing shared by every explainer: images in, logits and maps out.

One place for the checks and conversions that CAMs, rollout, the
counterfactuals and the sanity check all need, so they reject bad input with
the same messages.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from xai_checks.errors import XAICheckError

__all__ = [
    "Targets",
    "as_logits",
    "check_batch_size",
    "check_image_batch",
    "check_target_shape",
    "prepare_images",
    "resolve_targets",
    "scale_maps",
    "upsample_and_scale",
]

Targets = int | Sequence[int] | Tensor | None
"""Classes to explain: one for all images, one per image, or None for the predictions."""


def prepare_images(model: nn.Module, images: Tensor) -> Tensor:
    """Check (N, C, H, W), move to the model's device and dtype, leave inference mode."""
    if not isinstance(images, Tensor):
        raise TypeError(f"images must be a torch.Tensor, got {type(images).__name__}")
    check_image_batch(images)
    param = next(model.parameters(), None)
    if param is not None:
        images = images.to(device=param.device, dtype=param.dtype)
    return images.clone() if images.is_inference() else images


def check_image_batch(images: Tensor) -> int:
    """N, after checking that ``images`` (a tensor or a lazy stack) is (N, C, H, W), N >= 1.

    Only the shape is read, so a lazy stack of files is not loaded.
    """
    if len(images.shape) != 4 or images.shape[0] == 0:
        raise XAICheckError(
            f"images must have shape (N, C, H, W) with N >= 1, got {tuple(images.shape)}"
        )
    return int(images.shape[0])


def check_batch_size(batch_size: int) -> None:
    if batch_size < 1:
        raise XAICheckError(f"batch_size must be >= 1, got {batch_size}")


def check_target_shape(targets: Targets, n: int) -> Tensor | None:
    if targets is None:
        return None
    if isinstance(targets, bool):
        raise TypeError("targets must be None, an int, or a sequence of ints; got a bool")
    if isinstance(targets, int):
        return torch.full((n,), targets, dtype=torch.long)
    tensor = torch.as_tensor(targets)
    if tensor.ndim != 1 or tensor.shape[0] != n:
        raise ValueError(
            f"targets must hold one class per image: expected length {n}, "
            f"got shape {tuple(tensor.shape)}"
        )
    if tensor.is_floating_point() or tensor.dtype == torch.bool:
        raise TypeError(f"targets must be integer class indices, got dtype {tensor.dtype}")
    return tensor.to(torch.long, copy=True)  # a copy: an inference tensor cannot enter autograd


def resolve_targets(requested: Tensor | None, logits: Tensor) -> Tensor:
    n_classes = logits.shape[1]
    if requested is None:
        return logits.argmax(dim=1)
    requested = requested.to(logits.device)
    bad = (requested < 0) | (requested >= n_classes)
    if bad.any():
        index = int(bad.nonzero()[0])
        raise ValueError(
            f"target {int(requested[index])} for image {index} is out of range: "
            f"the model has {n_classes} classes (0..{n_classes - 1})"
        )
    return requested


def as_logits(output: object) -> Tensor:
    """Accept plain logits, a Hugging Face ``ModelOutput`` or a tuple led by logits."""
    logits = getattr(output, "logits", None)
    if logits is None and isinstance(output, tuple | list) and output:
        logits = output[0]
    if logits is None and isinstance(output, Tensor):
        logits = output
    if not isinstance(logits, Tensor) or logits.ndim != 2:
        shape = tuple(logits.shape) if isinstance(logits, Tensor) else type(output).__name__
        raise XAICheckError(f"model output must be logits of shape (N, classes), got {shape}")
    return logits


def upsample_and_scale(raw: Tensor, size: torch.Size) -> Tensor:
    """Bilinear upsampling to the input size, then per-map min-max scaling to [0, 1]."""
    maps = F.interpolate(raw.unsqueeze(1), size=tuple(size), mode="bilinear", align_corners=False)
    return scale_maps(maps.squeeze(1))


def scale_maps(maps: Tensor) -> Tensor:
    """Per-map min-max scaling of (N, H, W) to [0, 1]; a constant map becomes zeros."""
    low = maps.amin(dim=(1, 2), keepdim=True)
    span = maps.amax(dim=(1, 2), keepdim=True) - low
    return torch.where(span > 0, (maps - low) / span.clamp_min(torch.finfo(maps.dtype).tiny), 0.0)
