"""Attention rollout (Abnar & Zuidema, 2020) for Vision Transformers.

Raw attention of one layer says little about which *input patches* reach the
CLS token, because every layer mixes tokens that were already mixed. Rollout
composes the layers: each layer's head-averaged attention, with the residual
connection added as an identity and rows renormalised, is multiplied through
the stack. The CLS row of the product is a class-agnostic saliency map over
the patches; no gradients are needed, so one forward pass suffices.

Weights come from torchvision's ``nn.MultiheadAttention`` (hooks switch on
``need_weights``, which torchvision turns off) or from a Hugging Face model's
``output_attentions`` (eager attention only: fused kernels never form them).
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from xai_checks._hf import require_eager_attention, restore_output_capture, returned_attentions
from xai_checks._inputs import as_logits, prepare_images, upsample_and_scale
from xai_checks._model_state import explanation_mode
from xai_checks._tokens import infer_token_grid
from xai_checks.errors import NonFiniteError, XAICheckError
from xai_checks.precision import forward

__all__ = ["AttentionRollout", "RolloutResult", "rollout"]


def rollout(attentions: Sequence[Tensor]) -> Tensor:
    """Compose per-layer attention (N, heads, T, T), first layer first, into (N, T, T).

    Per layer the heads are averaged, the residual connection is modelled as
    ``0.5 * A + 0.5 * I`` and rows are renormalised, so every row of the result
    is a distribution over input tokens. Layers may differ in head count, not in
    N or T. Computed in float32 (float64 if any input is float64) so the product
    of many layers does not lose precision in half-precision models.
    """
    if isinstance(attentions, Tensor) or len(attentions) == 0:
        raise XAICheckError(
            "rollout needs a non-empty sequence of per-layer attention tensors (N, heads, T, T)"
        )
    dtype = torch.float32
    for index, layer in enumerate(attentions):
        if not isinstance(layer, Tensor):
            raise TypeError(
                f"attention of layer {index} must be a Tensor, got {type(layer).__name__}"
            )
        if layer.dtype == torch.float64:
            dtype = torch.float64
        if layer.ndim != 4:
            raise XAICheckError(
                f"attention of layer {index} must have shape (N, heads, T, T), "
                f"got {tuple(layer.shape)}"
            )
        if layer.shape[-1] != layer.shape[-2]:
            raise XAICheckError(
                f"attention of layer {index} is not square over tokens: {tuple(layer.shape)}; "
                "rollout needs self-attention (T, T)"
            )
        first = attentions[0]
        if (layer.shape[0], layer.shape[-1]) != (first.shape[0], first.shape[-1]):
            raise XAICheckError(
                f"attention of layer {index} has shape {tuple(layer.shape)}, but layer 0 has "
                f"{tuple(first.shape)}: all layers must share N and T"
            )
        if not torch.isfinite(layer).all():
            raise NonFiniteError(f"attention of layer {index} contains NaN or Inf")

    n, _, tokens, _ = attentions[0].shape
    identity = torch.eye(tokens, dtype=dtype, device=attentions[0].device)
    result = identity.expand(n, tokens, tokens)
    for layer in attentions:
        a_hat = 0.5 * layer.to(dtype).mean(dim=1) + 0.5 * identity
        a_hat = a_hat / a_hat.sum(dim=-1, keepdim=True)
        result = a_hat @ result
    return result


@dataclass(frozen=True)
class RolloutResult:
    """One rollout pass: maps and the logits of the same forward pass.

    ``heatmaps`` are (N, H, W) at the input resolution, each min-max scaled to
    [0, 1]; ``raw`` are the CLS token's rollout rows on the patch grid (N, h, w),
    unscaled; ``logits`` are the model's outputs (N, classes), detached float.
    """

    heatmaps: Tensor
    raw: Tensor
    logits: Tensor

    @property
    def predictions(self) -> Tensor:
        return self.logits.argmax(dim=1)


class AttentionRollout:
    """Class-agnostic ViT saliency: ``AttentionRollout(model)(images)`` gives (N, H, W).

    Supports torchvision ViTs (any model built on ``nn.MultiheadAttention``) and
    Hugging Face models loaded with eager attention. The model's train/eval
    flags and every parameter's ``requires_grad`` are restored after each call,
    and hooks are removed, also when the forward pass raises.
    """

    def __init__(self, model: nn.Module) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        self.model = model

    def __call__(self, images: Tensor) -> Tensor:
        return self.explain(images).heatmaps

    def explain(self, images: Tensor) -> RolloutResult:
        """Run one forward pass and return heatmaps, raw CLS maps and logits."""
        # Leave any outer inference mode, as the CAM engine does, so both behave alike.
        with torch.inference_mode(False), explanation_mode(self.model):
            images = prepare_images(self.model, images)
            with torch.no_grad():
                if _is_hugging_face(self.model):
                    output, attentions = _hugging_face_attentions(self.model, images)
                else:
                    output, attentions = _multihead_attentions(self.model, images)
        logits = as_logits(output)
        joint = rollout(attentions)
        grid = infer_token_grid(joint.shape[-1], (images.shape[-2], images.shape[-1]))
        if grid.prefix == 0:
            raise XAICheckError(
                f"the {joint.shape[-1]} tokens tile the image with no CLS token in front; "
                "rollout reads the CLS token's row, so it needs a model with a CLS token"
            )
        raw = joint[:, 0, grid.prefix :].reshape(joint.shape[0], *grid.shape)
        heatmaps = upsample_and_scale(raw, images.shape[-2:])
        return RolloutResult(heatmaps, raw, logits.detach().float())


def _is_hugging_face(model: nn.Module) -> bool:
    """A ``config`` that is a transformers config; never imports transformers itself.

    If transformers was never imported, no model can carry one of its configs.
    Checking the config, not the model class, also accepts wrappers that forward
    attributes (``torch.compile``'s ``OptimizedModule``).
    """
    configuration_utils = sys.modules.get("transformers.configuration_utils")
    config = getattr(model, "config", None)
    return configuration_utils is not None and isinstance(
        config, configuration_utils.PretrainedConfig
    )


def _hugging_face_attentions(model: nn.Module, images: Tensor) -> tuple[object, list[Tensor]]:
    require_eager_attention(model, "rollout")
    restore_output_capture(model)
    output = forward(model, pixel_values=images, output_attentions=True, return_dict=True)
    return output, list(returned_attentions(output, "rollout"))


class _WeightsCapture:
    """Hooks that make an ``nn.MultiheadAttention`` return per-head weights and keep them.

    torchvision's EncoderBlock passes ``need_weights=False``; the pre-hook
    rebinds the call so the flags are set wherever the caller put them
    (positionally or by keyword). The attention output itself is unchanged.
    """

    def __init__(self) -> None:
        self.weights: list[Tensor | None] = []

    def pre_hook(
        self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        bound = inspect.signature(module.forward).bind(*args, **kwargs)
        bound.arguments["need_weights"] = True
        bound.arguments["average_attn_weights"] = False
        return bound.args, bound.kwargs

    def hook(
        self, _module: nn.Module, _inputs: object, output: tuple[Tensor, Tensor | None]
    ) -> None:
        self.weights.append(output[1])


def _multihead_attentions(model: nn.Module, images: Tensor) -> tuple[object, list[Tensor]]:
    layers = [module for module in model.modules() if isinstance(module, nn.MultiheadAttention)]
    if not layers:
        raise XAICheckError(
            f"{type(model).__name__} has no attention layers rollout can read: expected "
            "torch.nn.MultiheadAttention modules (torchvision ViT) or a Hugging Face model "
            "with eager attention"
        )
    capture = _WeightsCapture()
    handles: list[RemovableHandle] = []
    try:
        for layer in layers:
            handles.append(layer.register_forward_pre_hook(capture.pre_hook, with_kwargs=True))
            handles.append(layer.register_forward_hook(capture.hook))
        output = forward(model, images)
    finally:
        for handle in handles:
            handle.remove()
    if not capture.weights:
        raise XAICheckError("no torch.nn.MultiheadAttention layer ran during the forward pass")
    weights: list[Tensor] = []
    for index, layer_weights in enumerate(capture.weights):
        if layer_weights is None:
            raise XAICheckError(f"attention call {index} returned no weights despite need_weights")
        weights.append(layer_weights[: images.shape[0]])  # a padded batch's extra rows cut
    return output, weights
