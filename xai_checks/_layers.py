"""Finding the layer to explain: by name, by module, or by a probe pass."""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable

import torch
from torch import Tensor, nn

from xai_checks.errors import TargetLayerError
from xai_checks.precision import forward

__all__ = ["locate_target_layer", "resolve_layer"]


def resolve_layer(model: nn.Module, layer: str | nn.Module) -> tuple[str, nn.Module]:
    """Return ``(dotted_name, module)`` for a layer given by name or by object."""
    named = dict(model.named_modules())
    if isinstance(layer, nn.Module):
        for name, module in named.items():
            if module is layer and name:
                return name, module
        raise TargetLayerError(
            f"target layer {type(layer).__name__} is not a submodule of {type(model).__name__}"
        )
    if layer in named and layer:
        return layer, named[layer]
    close = difflib.get_close_matches(layer, [n for n in named if n], n=3)
    hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    raise TargetLayerError(f"target layer {layer!r} does not exist in {type(model).__name__}{hint}")


def _is_feature_map(shape: torch.Size | None) -> bool:
    return shape is not None and len(shape) == 4 and shape[-2] * shape[-1] > 1


def _is_tokens(shape: torch.Size | None) -> bool:
    return shape is not None and len(shape) == 3 and shape[1] > 1


_ATTENTION_NAME = re.compile(r"(?:^|[._])(?:self_)?(?:attention|attn)$", re.IGNORECASE)


def _is_attention(name: str, module: nn.Module) -> bool:
    """By type, or by name where the type is gone (an unflattened ``torch.export`` program
    keeps the names, ``self_attention``, but makes every module an ``InterpreterModule``)."""
    return (
        isinstance(module, nn.MultiheadAttention)
        or type(module).__name__.endswith("Attention")
        or bool(_ATTENTION_NAME.search(name))
    )


def locate_target_layer(model: nn.Module, probe: Tensor) -> tuple[str, nn.Module]:
    """The layer a CAM should explain by default, found by one probe pass.

    CNNs: the last module, in execution order, whose output is a spatial map
    (N, C, h, w); for a ResNet that is ``layer4`` (the block finishes after its
    children, and the pooled 1x1 output does not count).

    Vision Transformers (attention after the last spatial map, which is the
    patch embedding): the last module with a token output
    (N, T, D) that finishes before the last attention module starts, i.e. the
    input norm of the last block (``ln_1``, ``layernorm_before``). Later token
    outputs are useless: after the last attention only the CLS token reaches
    the head, so every patch gradient there is zero.

    One forward pass of ``probe`` (a single image suffices) under ``no_grad``
    with hooks on every submodule; the hooks are gone when this returns, also
    when the forward pass raises.
    """
    events: list[tuple[str, str, object]] = []  # ("start" | "end", name, output shape)
    handles = []

    def on_start(name: str) -> Callable[[nn.Module, object], None]:
        def hook(_module: nn.Module, _inputs: object) -> None:
            events.append(("start", name, None))

        return hook

    def on_end(name: str) -> Callable[[nn.Module, object, object], None]:
        def hook(_module: nn.Module, _inputs: object, output: object) -> None:
            events.append(("end", name, output.shape if isinstance(output, Tensor) else None))

        return hook

    modules = dict(model.named_modules())
    try:
        for name, module in modules.items():
            if name:
                handles.append(module.register_forward_pre_hook(on_start(name)))
                handles.append(module.register_forward_hook(on_end(name)))
        with torch.no_grad():
            forward(model, probe)
    finally:
        for handle in handles:
            handle.remove()

    ends = [(i, name, shape) for i, (kind, name, shape) in enumerate(events) if kind == "end"]
    spatial = [(i, name) for i, name, shape in ends if _is_feature_map(shape)]
    attention_starts = [
        i
        for i, (kind, name, _) in enumerate(events)
        if kind == "start" and _is_attention(name, modules[name])
    ]
    tokens = []
    if attention_starts:
        last_start = attention_starts[-1]
        tokens = [(i, name) for i, name, shape in ends if i < last_start and _is_tokens(shape)]
    # A ViT's patch embedding is a conv map too, but attention runs after it.
    candidates = sorted(spatial[-1:] + tokens[-1:])
    if candidates:
        name = candidates[-1][1]
        return name, modules[name]
    raise TargetLayerError(
        f"{type(model).__name__} has no layer with a spatial output (N, C, h, w) with "
        "h*w > 1 and no attention block with token inputs (N, T, D); Grad-CAM needs a "
        "feature map. Pass target_layer= explicitly."
    )
