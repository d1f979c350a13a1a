"""One engine for gradient-weighted class-activation maps.

The engine owns everything that is not a method's weighting rule: finding the
target layer, hooking it, running the model, picking targets, backpropagating,
upsampling and restoring the model. A method subclass only implements
:meth:`CAMEngine.combine`.

Memory: the forward pass runs under ``no_grad`` until the first target layer
to run, whose output is detached into a fresh leaf and gradients are switched
on from there. Layers below it therefore keep no autograd graph, and the cost
is a plain forward pass plus a backward pass through the head only.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from xai_checks._inputs import (
    Targets,
    as_logits,
    check_target_shape,
    prepare_images,
    resolve_targets,
    scale_maps,
    upsample_and_scale,
)
from xai_checks._layers import locate_target_layer, resolve_layer
from xai_checks._model_state import explanation_mode
from xai_checks._tokens import infer_token_grid, tokens_to_map
from xai_checks.errors import NonFiniteError, TargetLayerError, XAICheckError
from xai_checks.precision import forward

__all__ = ["CAMEngine", "CAMResult", "LayerSpec", "Targets"]


LayerSpec = str | nn.Module
"""A target layer: its dotted name in ``model.named_modules()`` or the module itself."""


@dataclass(frozen=True)
class CAMResult:
    """Everything one explanation pass produces, so no second forward pass is needed.

    ``heatmaps`` are (N, H, W) at the input resolution, each min-max scaled to
    [0, 1] (with several layers: the mean of the per-layer scaled maps, scaled
    again, as grad-cam does). ``layer_maps`` holds one ReLU'd, unscaled map per
    layer at that layer's own resolution (N, h, w); ``logits`` are the model's
    outputs (N, classes), detached.
    """

    heatmaps: Tensor
    layer_maps: tuple[Tensor, ...]
    targets: Tensor
    logits: Tensor
    layers: tuple[str, ...]

    @property
    def predictions(self) -> Tensor:
        return self.logits.argmax(dim=1)


class _LayerCapture:
    """Forward hooks that cut the graph at the first target layer and keep every output.

    The first target layer to run (with gradients still off) becomes a fresh
    leaf and switches gradients on, so nothing below it keeps a graph. Target
    layers that run later stay in that graph, so gradients reach the first one
    through them; one on a branch the cut does not feed becomes a leaf too.
    Each hook returns a clone, so an in-place op downstream (``ReLU(inplace=True)``)
    cannot modify the tensor we differentiate against.
    """

    def __init__(self, names: Sequence[str]) -> None:
        self.names = tuple(names)
        self.outputs: dict[str, Tensor] = {}

    def hook(self, name: str) -> Callable[[nn.Module, object, object], Tensor]:
        def capture(_module: nn.Module, _inputs: object, output: object) -> Tensor:
            if name in self.outputs:
                raise TargetLayerError(
                    f"target layer {name!r} ran more than once in one forward pass; "
                    "choose a layer that runs once (e.g. not a shared activation module)"
                )
            if not isinstance(output, Tensor) or output.ndim not in (3, 4):
                shape = tuple(output.shape) if isinstance(output, Tensor) else type(output).__name__
                raise TargetLayerError(
                    f"target layer {name!r} returned {shape}, expected a feature map "
                    "(N, C, h, w) or ViT tokens (N, T, D)"
                )
            if output.requires_grad and torch.is_grad_enabled():
                kept = output  # downstream of an earlier cut: gradients flow through it
            else:
                kept = output.detach().requires_grad_(True)
                torch.set_grad_enabled(True)  # build the graph from here on only
            self.outputs[name] = kept
            return kept.clone()

        return capture

    def gradients(self, score: Tensor) -> list[tuple[str, Tensor, Tensor]]:
        """``(name, activation, gradient)`` per layer; a layer the score ignores gets zeros."""
        missing = [name for name in self.names if name not in self.outputs]
        if missing:
            raise TargetLayerError(
                f"target layer {missing[0]!r} did not run during the forward pass"
            )
        kept = [self.outputs[name] for name in self.names]
        with torch.enable_grad():
            grads = torch.autograd.grad(score, kept, allow_unused=True)
        return [
            (name, act.detach(), torch.zeros_like(act) if grad is None else grad)
            for name, act, grad in zip(self.names, kept, grads, strict=True)
        ]


class CAMEngine(ABC):
    """Base class of the CAM methods: ``cam(images, targets)`` gives (N, H, W) heatmaps.

    ``target_layer`` is a dotted module name, a submodule, a sequence of them
    (their maps are averaged), or None for the default layer found by a
    one-image probe on first use, never in the constructor: the last spatial
    map of a CNN, or the input norm of a ViT's last block. Token outputs
    (N, T, D) are laid onto the patch grid inferred from T and the input's
    aspect ratio, prefix tokens (CLS, distillation, registers) dropped.

    The model's train/eval flags and every parameter's ``requires_grad`` are
    restored after each call, and the hooks are removed, also when the forward
    pass raises. Works under an outer ``torch.no_grad()`` or inference mode.
    """

    def __init__(
        self, model: nn.Module, target_layer: LayerSpec | Sequence[LayerSpec] | None = None
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        self.model = model
        if target_layer is None or isinstance(target_layer, LayerSpec):
            self._requested: tuple[LayerSpec, ...] | None = (
                None if target_layer is None else (target_layer,)
            )
        else:
            self._requested = tuple(target_layer)
            if not self._requested:
                raise TargetLayerError("target_layer is an empty sequence; name at least one layer")
        self._layers: tuple[tuple[str, nn.Module], ...] | None = None

    @abstractmethod
    def combine(self, activations: Tensor, gradients: Tensor) -> Tensor:
        """Map (N, C, h, w) activations and gradients to (N, h, w) class maps, before ReLU."""

    def __call__(self, images: Tensor, targets: Targets = None) -> Tensor:
        return self.explain(images, targets).heatmaps

    @property
    def target_layers(self) -> tuple[str, ...]:
        """The resolved layer names; empty until a default layer has been probed for."""
        if self._layers is None and self._requested is not None:
            self._layers = tuple(resolve_layer(self.model, layer) for layer in self._requested)
        return tuple(name for name, _ in self._layers or ())

    def explain(self, images: Tensor, targets: Targets = None) -> CAMResult:
        """Run one explanation pass and return heatmaps, raw maps, targets and logits."""
        # Leave any outer inference mode: its tensors cannot take part in autograd.
        with torch.inference_mode(False), explanation_mode(self.model):
            images = prepare_images(self.model, images)
            requested = check_target_shape(targets, images.shape[0])
            layers = self._resolve(images)
            capture = _LayerCapture([name for name, _ in layers])
            handles = [module.register_forward_hook(capture.hook(name)) for name, module in layers]
            try:
                with torch.no_grad():
                    output = forward(self.model, images)
            finally:
                for handle in handles:
                    handle.remove()
            logits = as_logits(output)
            chosen = resolve_targets(requested, logits)
            score = logits.gather(1, chosen.unsqueeze(1)).sum()
            captured = capture.gradients(score)
        size, rows = images.shape[-2:], images.shape[0]
        layer_maps, scaled = [], []
        for name, activations, gradients in captured:
            # A model that pads its batch (a static-batch export) runs its layers on more
            # rows than it was given: the rows past the input's are padding.
            activations = _feature_map(activations[:rows].float(), name, size)
            gradients = _feature_map(gradients[:rows].float(), name, size)
            for what, tensor in (("activations", activations), ("gradients", gradients)):
                if not torch.isfinite(tensor).all():
                    raise NonFiniteError(f"{what} of target layer {name!r} contain NaN or Inf")
            if not gradients.any():
                raise TargetLayerError(
                    f"the target scores do not depend on layer {name!r} at any position "
                    "(all gradients are zero), so its maps would be blank; choose a layer "
                    "the output depends on (for a ViT, one before the last attention block, "
                    "as the default is)"
                )
            raw = F.relu(self.combine(activations, gradients))
            layer_maps.append(raw)
            scaled.append(upsample_and_scale(raw, size))
        heatmaps = scaled[0] if len(scaled) == 1 else scale_maps(torch.stack(scaled).mean(dim=0))
        return CAMResult(
            heatmaps, tuple(layer_maps), chosen, logits.detach().float(), tuple(capture.names)
        )

    def _resolve(self, images: Tensor) -> tuple[tuple[str, nn.Module], ...]:
        if self._layers is None:
            if self._requested is None:
                self._layers = (locate_target_layer(self.model, images[:1]),)
            else:
                self._layers = tuple(resolve_layer(self.model, layer) for layer in self._requested)
        return self._layers


def _feature_map(tensor: Tensor, layer: str, image_size: torch.Size) -> Tensor:
    """(N, C, h, w) as is; ViT tokens (N, T, D) laid onto their patch grid."""
    if tensor.ndim == 4:
        return tensor
    try:
        grid = infer_token_grid(tensor.shape[1], (int(image_size[0]), int(image_size[1])))
    except XAICheckError as error:
        raise TargetLayerError(f"target layer {layer!r}: {error}") from None
    return tokens_to_map(tensor, grid)
