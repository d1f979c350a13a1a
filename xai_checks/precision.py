"""Mixed precision for the model's forward passes, and for nothing else.

On a GPU a bf16 or fp16 forward pass of a ResNet-50 or a ViT is several times
faster than fp32. Autocast runs the convolutions and matrix products at the
lower precision; everything a check computes from them stays float32: every
floating output of the model is cast back to float32, hooked activations and
gradients are read as float32, and backward passes run outside autocast.

It is switched on for a block of code (``with mixed_precision("bf16"): ...``),
not per call, so every check inside (CAM, rollout, attention, saliency,
counterfactuals, sanity, discovery) uses it without taking an argument. The
setting is a context variable: it holds in the thread (or task) that set it,
which is where a gate stage runs its checks.

Whether the scores stay within tolerance is measured, not assumed:
:mod:`xai_checks.precision_drift` compares a probe batch's probabilities and
maps with float32's.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, Literal

import torch
from torch import Tensor, nn
from torch.utils._pytree import tree_map

from xai_checks.errors import XAICheckError

__all__ = ["PRECISIONS", "Precision", "current_precision", "forward", "mixed_precision"]

Precision = Literal["fp32", "bf16", "fp16"]

PRECISIONS: dict[str, torch.dtype | None] = {
    "fp32": None,
    "bf16": torch.bfloat16,
    "fp16": torch.float16,
}
"""Each precision's autocast dtype; fp32 is no autocast at all."""

_FORWARD_DTYPE: ContextVar[torch.dtype | None] = ContextVar(
    "xai_checks_forward_dtype", default=None
)


def _dtype(precision: str | torch.dtype | None) -> torch.dtype | None:
    if precision is None or isinstance(precision, torch.dtype):
        dtype = precision
    elif precision in PRECISIONS:
        dtype = PRECISIONS[precision]
    else:
        raise XAICheckError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if dtype not in (None, torch.float32, torch.bfloat16, torch.float16):
        raise XAICheckError(f"precision must be float32, bfloat16 or float16, got {dtype}")
    return None if dtype == torch.float32 else dtype


@contextmanager
def mixed_precision(precision: Precision | torch.dtype | None) -> Iterator[None]:
    """Within the block, every model forward pass of a check runs under autocast at
    ``precision`` (``fp32`` or None: no autocast); the previous setting is restored on exit."""
    token = _FORWARD_DTYPE.set(_dtype(precision))
    try:
        yield
    finally:
        _FORWARD_DTYPE.reset(token)


def current_precision() -> torch.dtype | None:
    """The autocast dtype of forward passes here, or None for float32."""
    return _FORWARD_DTYPE.get()


def forward(model: nn.Module, *args: Any, **kwargs: Any) -> Any:
    """``model(*args, **kwargs)``, under autocast when :func:`mixed_precision` asks for it,
    with every half-precision tensor of the output cast to float32."""
    dtype = _FORWARD_DTYPE.get()
    if dtype is None:
        return model(*args, **kwargs)
    parameter = next(model.parameters(), None)
    device_type = parameter.device.type if parameter is not None else "cpu"
    if not torch.amp.is_autocast_available(device_type):
        raise XAICheckError(
            f"mixed precision ({dtype}) is not available on {device_type}: use fp32 there"
        )
    with torch.autocast(device_type, dtype=dtype):
        output = model(*args, **kwargs)
    return tree_map(_as_float32, output)


def _as_float32(value: object) -> object:
    """A half-precision tensor as float32; anything else (float64 included) as it is."""
    if isinstance(value, Tensor) and value.dtype in (torch.float16, torch.bfloat16):
        return value.float()
    return value
