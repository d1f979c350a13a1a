"""Grad-CAM speed: ours vs pytorch-grad-cam vs Captum vs the limit, in one run.

The limit is what any Grad-CAM must do: one forward pass with an autograd
graph and the backward pass from the class score to the target layer. Our
engine runs the layers below the target without a graph, so it may even beat
that limit. ResNet-18 with random weights (no download), 224x224, batch 32.

    python -m benchmarks.gradcam_speed [--quick]
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from functools import partial

import torch
import torch.nn.functional as F

from benchmarks._common import Row, interleaved_medians, print_rows

__all__ = ["CASES", "build", "run"]


def build(batch: int, size: int) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    """A random-weight ResNet-18 in eval mode, a batch of images and fixed target classes.

    The targets are fixed rather than predicted: a prediction pass here would
    set the process's peak memory before any case runs.
    """
    from torchvision.models import resnet18

    torch.manual_seed(0)
    model = resnet18(weights=None).eval()
    images = torch.rand(batch, 3, size, size)
    return model, images, torch.arange(batch) % 1000


def _limit(model: torch.nn.Module) -> Callable[[torch.Tensor, torch.Tensor], object]:
    kept: dict[str, torch.Tensor] = {}
    model.layer4.register_forward_hook(lambda _m, _i, out: kept.__setitem__("layer4", out))

    def run(images: torch.Tensor, targets: torch.Tensor) -> object:
        logits = model(images)
        score = logits.gather(1, targets[:, None]).sum()
        return torch.autograd.grad(score, kept.pop("layer4"))

    return run


def _ours(model: torch.nn.Module) -> Callable[[torch.Tensor, torch.Tensor], object]:
    from xai_checks import GradCAM

    cam = GradCAM(model, "layer4")
    return lambda images, targets: cam(images, targets)


def _pytorch_grad_cam(model: torch.nn.Module) -> Callable[[torch.Tensor, torch.Tensor], object]:
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    cam = GradCAM(model=model, target_layers=[model.layer4[-1]])
    return lambda images, targets: cam(
        input_tensor=images, targets=[ClassifierOutputTarget(int(t)) for t in targets]
    )


def _captum(model: torch.nn.Module) -> Callable[[torch.Tensor, torch.Tensor], object]:
    from captum.attr import LayerGradCam

    cam = LayerGradCam(model, model.layer4)

    def run(images: torch.Tensor, targets: torch.Tensor) -> object:
        maps = cam.attribute(images, target=targets)
        return F.interpolate(maps, size=images.shape[-2:], mode="bilinear", align_corners=False)

    return run


def _plain_forward(model: torch.nn.Module) -> Callable[[torch.Tensor, torch.Tensor], object]:
    def run(images: torch.Tensor, _targets: torch.Tensor) -> object:
        with torch.no_grad():
            return model(images)

    return run


CASES: dict[str, Callable[[torch.nn.Module], Callable[[torch.Tensor, torch.Tensor], object]]] = {
    "limit": _limit,
    "plain-forward": _plain_forward,
    "xai_checks.GradCAM": _ours,
    "pytorch_grad_cam.GradCAM": _pytorch_grad_cam,
    "captum.LayerGradCam": _captum,
}
"""Each case gets its own fresh model, so no case's hooks slow another's."""


def run(*, quick: bool = False) -> list[Row]:
    batch, size, repeats = (4, 64, 2) if quick else (32, 224, 9)
    runs = {}
    for name, make in CASES.items():
        model, images, targets = build(batch, size)  # a model each: no case sees another's hooks
        runs[name] = partial(make(model), images, targets)
    seconds = interleaved_medians(runs, repeats=repeats)
    limit, ours = seconds["limit"], seconds["xai_checks.GradCAM"]
    where = f"ResNet-18 {size}x{size}, batch {batch}"
    return [
        Row("gradcam_speed", f"limit ({where})", limit, "s/batch"),
        Row("gradcam_speed", "plain forward, no graph", seconds["plain-forward"], "s/batch",
            seconds["plain-forward"] / limit, "limit"),
        Row("gradcam_speed", "xai_checks GradCAM", ours, "s/batch", ours / limit, "limit",
            "<= 1.05x limit", ours / limit <= 1.05),
        Row("gradcam_speed", "pytorch-grad-cam", seconds["pytorch_grad_cam.GradCAM"], "s/batch",
            seconds["pytorch_grad_cam.GradCAM"] / ours, "ours", ">= 3x ours",
            seconds["pytorch_grad_cam.GradCAM"] / ours >= 3),
        Row("gradcam_speed", "Captum LayerGradCam + upsample", seconds["captum.LayerGradCam"],
            "s/batch", seconds["captum.LayerGradCam"] / ours, "ours", ">= 1x ours",
            seconds["captum.LayerGradCam"] / ours >= 1),
    ]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run")
    rows = run(quick=parser.parse_args().quick)
    print_rows(rows, "Grad-CAM speed")


if __name__ == "__main__":
    main()
