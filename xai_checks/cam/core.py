"""One engine for gradient-weighted class-activation maps.

The engine owns everything that is not a method's weighting rule: finding the
target layer, hooking it, running the model, picking targets, backpropagating,
upsampling and restoring the model. A method subclass only implements
:meth:`CAMEngine.combine`.

Memory: the forward pass runs under ``no_grad`` until the target layer, whose
output is detached into a fresh leaf and gradients are switched on from there.
Layers below the target layer therefore keep no autograd graph, and the cost
is a plain forward pass plus a backward pass through the head only.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from xai_checks._layers import locate_spatial_layer, resolve_layer
from xai_checks._model_state import explanation_mode
from xai_checks.errors import NonFiniteError, TargetLayerError, XAICheckError

__all__ = ["CAMEngine", "CAMResult", "Targets"]

Targets = int | Sequence[int] | Tensor | None


@dataclass(frozen=True)
class CAMResult:
    """Everything one explanation pass produces, so no second forward pass is needed.

    ``heatmaps`` are (N, H, W) at the input resolution, each min-max scaled to
    [0, 1]; ``raw`` are the ReLU'd, unscaled maps at the layer's own resolution
    (N, h, w); ``logits`` are the model's outputs (N, classes), detached.
    """

    heatmaps: Tensor
    raw: Tensor
    targets: Tensor
    logits: Tensor
    layer: str

    @property
    def predictions(self) -> Tensor:
        return self.logits.argmax(dim=1)


class _LayerCapture:
    """Forward hook that cuts the graph at the target layer and keeps its output."""

    def __init__(self, layer_name: str) -> None:
        self.layer_name = layer_name
        self.activation: Tensor | None = None
        self.calls = 0

    def __call__(self, _module: nn.Module, _inputs: object, output: object) -> Tensor:
        self.calls += 1
        if self.calls > 1:
            raise TargetLayerError(
                f"target layer {self.layer_name!r} ran more than once in one forward pass; "
                "choose a layer that runs once (e.g. not a shared activation module)"
            )
        if not isinstance(output, Tensor) or output.ndim != 4:
            shape = tuple(output.shape) if isinstance(output, Tensor) else type(output).__name__
            raise TargetLayerError(
                f"target layer {self.layer_name!r} returned {shape}, "
                "expected a feature map of shape (N, C, h, w)"
            )
        self.activation = output.detach().requires_grad_(True)
        torch.set_grad_enabled(True)  # build the graph from here on only
        # A clone, so an in-place op downstream (ReLU(inplace=True)) cannot hit the leaf.
        return self.activation.clone()


class CAMEngine(ABC):
    """Base class of the CAM methods: ``cam(images, targets)`` gives (N, H, W) heatmaps.

    ``target_layer`` is a dotted module name, a submodule, or None for the last
    layer with a spatial output (found by a one-image probe on first use, never
    in the constructor). The model's train/eval flags and every parameter's
    ``requires_grad`` are restored after each call, and the hook is removed,
    also when the forward pass raises. Works under an outer ``torch.no_grad()``.
    """

    def __init__(self, model: nn.Module, target_layer: str | nn.Module | None = None) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        self.model = model
        self._requested_layer = target_layer
        self._layer: tuple[str, nn.Module] | None = None

    @abstractmethod
    def combine(self, activations: Tensor, gradients: Tensor) -> Tensor:
        """Map (N, C, h, w) activations and gradients to (N, h, w) class maps, before ReLU."""

    def __call__(self, images: Tensor, targets: Targets = None) -> Tensor:
        return self.explain(images, targets).heatmaps

    @property
    def target_layer(self) -> str | None:
        """The resolved layer name, or None until it is known."""
        if self._layer is None and isinstance(self._requested_layer, str | nn.Module):
            self._layer = resolve_layer(self.model, self._requested_layer)
        return self._layer[0] if self._layer else None

    def explain(self, images: Tensor, targets: Targets = None) -> CAMResult:
        """Run one explanation pass and return heatmaps, raw maps, targets and logits."""
        # Leave any outer inference mode: its tensors cannot take part in autograd.
        with torch.inference_mode(False), explanation_mode(self.model):
            images = self._prepare(images)
            requested = _check_target_shape(targets, images.shape[0])
            name, layer = self._resolve(images)
            capture = _LayerCapture(name)
            handle = layer.register_forward_hook(capture)
            try:
                with torch.no_grad():
                    output = self.model(images)
            finally:
                handle.remove()
            if capture.activation is None:
                raise TargetLayerError(f"target layer {name!r} did not run during the forward pass")
            logits = _as_logits(output)
            chosen = _resolve_targets(requested, logits)
            score = logits.gather(1, chosen.unsqueeze(1)).sum()
            with torch.enable_grad():
                (gradients,) = torch.autograd.grad(score, capture.activation)
        activations = capture.activation.detach().float()
        gradients = gradients.float()
        for what, tensor in (("activations", activations), ("gradients", gradients)):
            if not torch.isfinite(tensor).all():
                raise NonFiniteError(f"{what} of target layer {name!r} contain NaN or Inf")
        raw = F.relu(self.combine(activations, gradients))
        heatmaps = _upsample_and_scale(raw, images.shape[-2:])
        return CAMResult(heatmaps, raw, chosen, logits.detach().float(), name)

    def _prepare(self, images: Tensor) -> Tensor:
        if not isinstance(images, Tensor):
            raise TypeError(f"images must be a torch.Tensor, got {type(images).__name__}")
        if images.ndim != 4 or images.shape[0] == 0:
            raise XAICheckError(
                f"images must have shape (N, C, H, W) with N >= 1, got {tuple(images.shape)}"
            )
        param = next(self.model.parameters(), None)
        if param is not None:
            images = images.to(device=param.device, dtype=param.dtype)
        return images.clone() if images.is_inference() else images

    def _resolve(self, images: Tensor) -> tuple[str, nn.Module]:
        if self._layer is None:
            if self._requested_layer is None:
                self._layer = locate_spatial_layer(self.model, images[:1])
            else:
                self._layer = resolve_layer(self.model, self._requested_layer)
        return self._layer


def _check_target_shape(targets: Targets, n: int) -> Tensor | None:
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


def _resolve_targets(requested: Tensor | None, logits: Tensor) -> Tensor:
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


def _as_logits(output: object) -> Tensor:
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


def _upsample_and_scale(raw: Tensor, size: torch.Size) -> Tensor:
    """Bilinear upsampling to the input size, then per-map min-max scaling to [0, 1]."""
    maps = F.interpolate(raw.unsqueeze(1), size=tuple(size), mode="bilinear", align_corners=False)
    maps = maps.squeeze(1)
    low = maps.amin(dim=(1, 2), keepdim=True)
    span = maps.amax(dim=(1, 2), keepdim=True) - low
    return torch.where(span > 0, (maps - low) / span.clamp_min(torch.finfo(maps.dtype).tiny), 0.0)
