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

__all__ = ["DeviceError", "on_device", "resolve_device", "worker_device"]


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


def worker_device(spec: str, *, worker: int | None = None, gpus: int | None = None) -> str:
    """``spec`` as this process should read it: inside Dask worker ``i`` (``worker``, found
    when not given), ``auto`` and ``cuda`` become ``cuda:(i mod gpus)`` where CUDA exists.

    Anything with an index, ``cpu`` and ``mps`` stay as they are: the user chose them.
    """
    if spec not in ("auto", "cuda"):
        return spec
    worker = _dask_worker_index() if worker is None else worker
    gpus = (torch.cuda.device_count() if torch.cuda.is_available() else 0) if gpus is None else gpus
    if worker is None or gpus == 0:
        return spec
    return f"cuda:{worker % gpus}"


def _dask_worker_index() -> int | None:
    """This Dask worker's number (a local cluster names its workers 0, 1, ...), else None."""
    try:
        from distributed import get_worker
    except ImportError:  # no Dask installed: never a worker
        return None
    try:
        name = get_worker().name
    except ValueError:  # not inside a worker
        return None
    try:
        return int(name)
    except (TypeError, ValueError):  # a named worker of a remote cluster: a stable number
        import zlib

        return zlib.crc32(str(name).encode())


def on_device(model: LoadedModel, spec: str) -> LoadedModel:
    """The loaded model on ``spec``'s device (the same object when it is already there);
    in a Dask worker, on that worker's own GPU (:func:`worker_device`)."""
    device = resolve_device(worker_device(spec))
    parameter = next(model.module.parameters(), None)
    if parameter is None or parameter.device == device:
        return model
    return replace(model, module=model.module.to(device))
