"""The engine under stress: half precision, and no leak over a thousand calls."""

from __future__ import annotations

import gc
import resource
import tracemalloc

import pytest
import torch
from torchvision.models import resnet18

from xai_checks import GradCAM
from xai_checks.toy_models import SmallCNN


def test_half_precision_weights_give_the_float_maps():
    torch.manual_seed(0)
    model = resnet18(weights=None).eval()
    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    full = GradCAM(model, "layer4")(images, targets=[3, 7])
    half = GradCAM(model.to(torch.bfloat16), "layer4")(images, targets=[3, 7])
    assert half.dtype == torch.float32  # maps are computed in float32 whatever the weights
    assert torch.corrcoef(torch.stack([full.flatten(), half.flatten()]))[0, 1] > 0.98
    assert next(model.parameters()).dtype == torch.bfloat16  # the model is left as it was


@pytest.mark.slow
def test_a_thousand_calls_leak_no_memory_hooks_or_graphs():
    torch.manual_seed(0)
    model = SmallCNN(width=8).eval()
    cam = GradCAM(model)
    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    for _ in range(50):  # warm-up: allocator caches, lazy imports
        cam(images)
    gc.collect()
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB, tensors included
    tracemalloc.start()
    before, _ = tracemalloc.get_traced_memory()
    for _ in range(1000):
        cam(images)
    gc.collect()
    after, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    # Python objects: a leaked hook, result or closure per call would add far more.
    assert after - before < 200_000, f"Python heap grew by {after - before} bytes"
    # Tensor memory (not seen by tracemalloc): keeping one 8 KiB map per call would add 8 MiB.
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_rss
    assert grown < 4096, f"peak RSS grew by {grown} KiB"
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())
    assert all(p.grad is None for p in model.parameters())
