"""A workaround for Hugging Face models that went through pickle (MLflow's pickle format).

transformers 5 collects ``output_attentions`` with forward hooks, driven by a
registry of each model class's capturable outputs that ``__init__`` fills.
Unpickling does not run ``__init__``, so in a fresh process the registry is
empty and a reloaded model silently returns no attentions; stale "hooks
installed" marks can outlive the hooks themselves the same way.
"""

from __future__ import annotations

import sys

from torch import nn

__all__ = ["restore_output_capture"]

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
