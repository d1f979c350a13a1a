"""Where the gate computes: ``device: auto | cpu | cuda | cuda:N | mps``.

The model is moved once, at the start; every stage then moves each batch to
the model's device (``xai_checks._inputs.prepare_images``) and keeps its
results there until the batch's scores are taken, so nothing travels per
image.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

import torch

from pipelines.errors import GateError

if TYPE_CHECKING:
    from pipelines.tracking.models import LoadedModel

__all__ = ["DeviceError", "on_device", "resolve_device"]


class DeviceError(GateError, RuntimeError):
    """The device asked for is not on this machine."""


def resolve_device(spec: str) -> torch.device:
    """``auto`` is CUDA when available, else the CPU; others must exist here."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(spec)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(f"device {spec!r}: CUDA is not available on this machine")
        index = device.index or 0
        if index >= torch.cuda.device_count():
            raise DeviceError(
                f"device {spec!r}: this machine has {torch.cuda.device_count()} CUDA device(s)"
            )
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise DeviceError(f"device {spec!r}: MPS is not available on this machine")
    return device


def on_device(model: LoadedModel, spec: str) -> LoadedModel:
    """The loaded model on ``spec``'s device (the same object when it is already there)."""
    device = resolve_device(spec)
    parameter = next(model.module.parameters(), None)
    if parameter is None or parameter.device == device:
        return model
    return replace(model, module=model.module.to(device))
