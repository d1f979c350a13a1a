"""Mixed precision: Grad-CAM on ResNet-50 at fp32, bf16 and fp16, and what each moves.

The anchor is fp32 Grad-CAM in the same run; each reduced precision is timed
against it, interleaved, and its drift (``xai_checks.precision_drift``) is
reported beside it, since a faster map that moved is no gain. Random weights
(no download), 224x224, on the default device (CUDA when available), so the
same script measures a GPU where one is lent. The goal (bf16 at most 0.6x
fp32) is a GPU goal: a CPU without bf16 matrix units may be slower in bf16,
and the row says so rather than pass.

    python -m benchmarks.precision_speed [--quick]
"""

from __future__ import annotations

import argparse
from functools import partial

import torch

from benchmarks._common import Row, interleaved_medians, print_rows

__all__ = ["run"]


def _build(quick: bool) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor, str]:
    from torchvision.models import resnet18, resnet50

    torch.manual_seed(0)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = (resnet18 if quick else resnet50)(weights=None).eval().to(device)
    batch, size = (4, 64) if quick else (32, 224)
    images = torch.rand(batch, 3, size, size, device=device)
    where = f"{'ResNet-18' if quick else 'ResNet-50'} {size}x{size}, batch {batch}, {device}"
    return model, images, torch.arange(batch) % 1000, where


def _gradcam(model: torch.nn.Module, images: torch.Tensor, targets: torch.Tensor, precision: str):
    from xai_checks import GradCAM
    from xai_checks.precision import mixed_precision

    with mixed_precision(precision):
        return GradCAM(model, "layer4")(images, targets)


def run(*, quick: bool = False) -> list[Row]:
    from xai_checks.precision_drift import precision_drift

    model, images, targets, where = _build(quick)
    precisions = ("fp32", "bf16", "fp16")
    runs = {name: partial(_gradcam, model, images, targets, name) for name in precisions}
    seconds = interleaved_medians(runs, repeats=2 if quick else 7)
    on_gpu = images.is_cuda
    rows = [Row("precision_speed", f"fp32 Grad-CAM ({where})", seconds["fp32"], "s/batch")]
    for name in ("bf16", "fp16"):
        ratio = seconds[name] / seconds["fp32"]
        drift = precision_drift(model, images[:8], name)
        goal = "<= 0.6x fp32 (GPU)" if name == "bf16" else ""
        rows += [
            Row("precision_speed", f"{name} Grad-CAM", seconds[name], "s/batch", ratio, "fp32",
                goal, (ratio <= 0.6) if goal and on_gpu else None),
            Row("precision_speed", f"{name} map drift (share moved, 8 images)", drift.maps,
                "share", goal="<= 0.01", met=drift.maps <= 0.01),
        ]  # fmt: skip
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run")
    print_rows(run(quick=parser.parse_args().quick), "Mixed precision")


if __name__ == "__main__":
    main()
