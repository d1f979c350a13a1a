"""Grad-CAM peak memory: each method in its own process, against a plain forward pass.

Peak resident memory (``ru_maxrss``) of one call at batch 64 on ResNet-18,
224x224. Our engine keeps no autograd graph below the target layer, so its
peak should be close to a plain forward pass; methods that backpropagate
through the whole network keep every activation below it alive.

    python -m benchmarks.gradcam_memory [--quick]
"""

from __future__ import annotations

import argparse
import json

from benchmarks._common import Row, current_peak_mb, peak_rss_mb, print_rows
from benchmarks.gradcam_speed import CASES, build

__all__ = ["run"]

LABELS = {
    "plain-forward": "plain forward, no graph",
    "limit": "forward with graph + backward to layer4",
    "xai_checks.GradCAM": "xai_checks GradCAM",
    "pytorch_grad_cam.GradCAM": "pytorch-grad-cam",
    "captum.LayerGradCam": "Captum LayerGradCam + upsample",
}


def measure_one(case: str, batch: int, size: int) -> dict[str, float]:
    """In this (fresh) process: set up, note the peak, run the case once, note the peak."""
    import torch

    torch.set_num_threads(max(1, torch.get_num_threads()))
    model, images, targets = build(batch, size)
    call = CASES[case](model)
    baseline = current_peak_mb()
    call(images, targets)
    return {"baseline_mb": baseline, "peak_mb": current_peak_mb()}


def run(*, quick: bool = False) -> list[Row]:
    batch, size = (4, 64) if quick else (64, 224)
    peaks = {
        case: peak_rss_mb(
            "benchmarks.gradcam_memory", "--case", case, "--batch", str(batch), "--size", str(size)
        )
        for case in LABELS
    }
    plain = peaks["plain-forward"]["peak_mb"]
    rows = [Row("gradcam_memory", f"{LABELS['plain-forward']} (batch {batch}, {size}x{size})",
                plain, "MB peak RSS")]  # fmt: skip
    for case in ("limit", "xai_checks.GradCAM", "pytorch_grad_cam.GradCAM", "captum.LayerGradCam"):
        peak = peaks[case]["peak_mb"]
        goal = "<= 1.1x plain forward" if case == "xai_checks.GradCAM" else ""
        met = peak / plain <= 1.1 if goal else None
        rows.append(
            Row(
                "gradcam_memory",
                LABELS[case],
                peak,
                "MB peak RSS",
                peak / plain,
                "plain",
                goal,
                met,
            )
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run")
    parser.add_argument("--case", choices=sorted(LABELS), help="measure one case in this process")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--size", type=int, default=224)
    args = parser.parse_args()
    if args.case:
        print(json.dumps(measure_one(args.case, args.batch, args.size)))
        return
    print_rows(run(quick=args.quick), "Grad-CAM peak memory")


if __name__ == "__main__":
    main()
