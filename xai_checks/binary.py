"""One-logit binary classifiers, read as two classes.

A model trained with ``BCEWithLogitsLoss`` outputs one logit ``z`` per input,
``p = sigmoid(z)`` for the positive class. Every check here reads a class
score per class, so such a model is viewed as the two logits ``(-z/2, z/2)``:
their softmax is exactly ``(1 - p, p)``, and the gradient of either class's
logit is that class's evidence (``±z/2``), so Grad-CAM of class 0 is not zero.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

__all__ = ["as_two_classes", "two_class_logits"]


def two_class_logits(logits: torch.Tensor) -> torch.Tensor:
    """``(N,)`` or ``(N, 1)`` logits as ``(N, 2)``; any other shape unchanged."""
    if logits.ndim == 1:
        logits = logits.unsqueeze(1)
    if logits.ndim != 2 or logits.shape[1] != 1:
        return logits
    half = logits / 2
    return torch.cat([-half, half], dim=1)


def _two_class_output(module: nn.Module, args: Any, output: Any) -> Any:
    if isinstance(output, torch.Tensor):
        return two_class_logits(output)
    logits = getattr(output, "logits", None)  # a transformers ModelOutput
    if isinstance(logits, torch.Tensor) and logits.ndim == 2 and logits.shape[1] == 1:
        output["logits"] = two_class_logits(logits)
    return output


def as_two_classes(module: nn.Module) -> RemovableHandle:
    """Make ``module`` answer two class logits where it answers one (a forward hook).

    Models with two or more outputs are untouched; the handle removes the view.
    """
    return module.register_forward_hook(_two_class_output)
