"""The engine under stress: half precision, and no leak over a thousand calls."""

from __future__ import annotations

import gc
import os
import tracemalloc

import pytest
import torch
from torchvision.models import resnet18

from xai_checks import GradCAM
from xai_checks.examples.toy_models import SmallCNN


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bfloat16", "float16"])
def test_half_precision_weights_give_the_float_maps(dtype: torch.dtype):
    """Half weights must give float32 maps close to the full-precision ones, not an error.

    CPU torch runs conv2d and its backward in both half types (float16 too, as
    of torch 2.x), so neither dtype is skipped.
    """
    torch.manual_seed(0)
    model = resnet18(weights=None).eval()
    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    full = GradCAM(model, "layer4")(images, targets=[3, 7])
    half = GradCAM(model.to(dtype), "layer4")(images, targets=[3, 7])
    assert half.dtype == torch.float32  # maps are computed in float32 whatever the weights
    assert torch.isfinite(half).all()  # float16's narrow range must not overflow to Inf
    assert torch.corrcoef(torch.stack([full.flatten(), half.flatten()]))[0, 1] > 0.98
    assert next(model.parameters()).dtype == dtype  # the model is left as it was


def _current_rss() -> int:
    """Resident set size of this process now, in bytes (not the peak, unlike ru_maxrss)."""
    with open("/proc/self/statm") as handle:
        resident_pages = int(handle.read().split()[1])
    return resident_pages * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs Linux /proc for RSS")
def test_a_thousand_calls_leak_no_memory_hooks_or_graphs():
    torch.manual_seed(0)
    model = SmallCNN(width=8).eval()
    cam = GradCAM(model)
    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    for _ in range(50):  # warm-up: allocator caches, lazy imports
        cam(images)
    tracemalloc.start()
    gc.collect()
    # Current RSS, not the peak: a leak below an earlier test's peak still shows.
    rss_before = _current_rss()  # after tracemalloc.start, so its own tables are counted
    before, _ = tracemalloc.get_traced_memory()
    for _ in range(1000):
        cam(images)
    gc.collect()
    after, _ = tracemalloc.get_traced_memory()
    rss_grown = _current_rss() - rss_before
    tracemalloc.stop()
    # Python objects: a leaked hook, result or closure per call would add far more.
    assert after - before < 200_000, f"Python heap grew by {after - before} bytes"
    # Tensor memory (not seen by tracemalloc): keeping only the (2, 32, 32) float32 heatmap
    # of each call adds 8 KiB of data (measured: ~11 MiB over 1000 calls with the tensor
    # objects), and keeping a graph or the layer maps more. Allocator and tracemalloc noise
    # measured well under 1 MiB, so 4 MiB sits between the noise and the smallest leak.
    assert rss_grown < 4 * 2**20, f"resident memory grew by {rss_grown / 2**10:.0f} KiB"
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())
    assert all(p.grad is None for p in model.parameters())
