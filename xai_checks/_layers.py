"""Finding the layer to explain: by name, by module, or by a probe pass."""

from __future__ import annotations

import difflib

import torch
from torch import Tensor, nn

from xai_checks.errors import TargetLayerError

__all__ = ["locate_spatial_layer", "resolve_layer"]


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


def _is_spatial(output: object) -> bool:
    return (
        isinstance(output, Tensor) and output.ndim == 4 and output.shape[-2] * output.shape[-1] > 1
    )


def locate_spatial_layer(model: nn.Module, probe: Tensor) -> tuple[str, nn.Module]:
    """The last module, in execution order, whose output is a spatial map (N, C, h, w).

    One forward pass of ``probe`` (a single image suffices) under ``no_grad``
    with a hook on every submodule; the hooks are gone when this returns, also
    when the forward pass raises. For a ResNet this is ``layer4``: the block
    finishes after its children, and the pooled 1x1 output does not count.
    """
    finished: list[str] = []
    handles = []

    def record(name: str):
        def hook(_module: nn.Module, _inputs: object, output: object) -> None:
            if _is_spatial(output):
                finished.append(name)

        return hook

    try:
        for name, module in model.named_modules():
            if name:
                handles.append(module.register_forward_hook(record(name)))
        with torch.no_grad():
            model(probe)
    finally:
        for handle in handles:
            handle.remove()
    if not finished:
        raise TargetLayerError(
            f"{type(model).__name__} has no layer with a spatial output (N, C, h, w) "
            "with h*w > 1; Grad-CAM needs a convolutional feature map. "
            "Pass target_layer= explicitly if the model reshapes tokens into a grid."
        )
    name = finished[-1]
    return name, model.get_submodule(name)
