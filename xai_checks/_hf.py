"""Hugging Face attention plumbing shared by text attention maps and ViT rollout.

Attention weights exist only with eager attention: fused SDPA / flash
kernels never form the matrix, so a model using one is refused before a
forward pass is wasted on it.

Models that went through pickle (MLflow's pickle format) need a repair:
transformers 5 collects ``output_attentions`` with forward hooks, driven by a
registry of each model class's capturable outputs that ``__init__`` fills.
Unpickling does not run ``__init__``, so in a fresh process the registry is
empty and a reloaded model silently returns no attentions; stale "hooks
installed" marks can outlive the hooks themselves the same way.
"""

from __future__ import annotations

import sys

from torch import Tensor, nn

from xai_checks.errors import XAICheckError

__all__ = ["require_eager_attention", "restore_output_capture", "returned_attentions"]

_HOW_TO_SWITCH = (
    'load it with from_pretrained(..., attn_implementation="eager") (text models: '
    "xai_checks.text_models.load_text_model does), or call "
    'model.set_attn_implementation("eager")'
)

_MARK = "_output_capturing_hooks_installed"
_HOOK_NAME = "output_capturing_hook"


def restore_output_capture(model: nn.Module) -> None:
    """Re-register every submodel's capturable outputs, and clear marks whose hooks are gone."""
    capturing = sys.modules.get("transformers.utils.output_capturing")
    if capturing is None:  # transformers never loaded: no Hugging Face model here
        return
    registry = getattr(capturing, "_CAN_RECORD_REGISTRY", None)
    if registry is None:  # a transformers release without this mechanism: nothing to repair
        return
    for module in model.modules():
        wanted = getattr(module, "_can_record_outputs", None)
        if wanted and not registry.get(module):
            registry[module] = wanted
    hooked = any(
        getattr(hook, "__name__", "") == _HOOK_NAME
        for module in model.modules()
        for hook in module._forward_hooks.values()
    )
    if not hooked:
        for module in model.modules():
            if getattr(module, _MARK, False):
                setattr(module, _MARK, False)


def require_eager_attention(model: nn.Module, needed_for: str) -> None:
    """Refuse a model whose config selects fused attention; ``needed_for`` names the check."""
    implementation = getattr(getattr(model, "config", None), "_attn_implementation", None)
    if implementation is not None and implementation != "eager":
        raise XAICheckError(
            f"the model uses {implementation!r} attention, which is fused and returns no "
            f"attention weights; eager attention is required for {needed_for}: {_HOW_TO_SWITCH}"
        )


def returned_attentions(output: object, needed_for: str) -> tuple[Tensor, ...]:
    """The per-layer attentions of a forward pass run with ``output_attentions=True``."""
    attentions = getattr(output, "attentions", None)
    if not attentions:
        raise XAICheckError(
            "the model returned no attention weights for output_attentions=True (fused "
            f"attention kernels return none); eager attention is required for {needed_for}: "
            f"{_HOW_TO_SWITCH}"
        )
    return tuple(attentions)
