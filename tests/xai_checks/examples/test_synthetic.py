"""Synthetic lesions: determinism, exact ruler masks, the ρ correlation."""

from __future__ import annotations

import pytest
import torch

from xai_checks.examples.synthetic import _RULER_COLOUR, _TICK_COLOUR, make_lesions


def test_same_seed_same_batch_other_seed_other_batch():
    a = make_lesions(16, shortcut_strength=0.5, seed=7)
    b = make_lesions(16, shortcut_strength=0.5, seed=7)
    c = make_lesions(16, shortcut_strength=0.5, seed=8)
    for field in ("images", "labels", "masks", "has_ruler"):
        assert torch.equal(getattr(a, field), getattr(b, field))
    assert not torch.equal(a.images, c.images)


def test_generation_leaves_the_global_rng_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    make_lesions(4, seed=0)
    assert torch.equal(torch.rand(3), expected)


def test_shapes_ranges_and_balance():
    batch = make_lesions(40, seed=0, size=48)
    assert batch.images.shape == (40, 3, 48, 48)
    assert batch.masks.shape == (40, 48, 48) and batch.masks.dtype == torch.bool
    assert batch.images.min() >= 0.0 and batch.images.max() <= 1.0
    assert batch.labels.sum() == 20


def test_masks_cover_exactly_the_ruler_pixels():
    batch = make_lesions(20, ruler="always", seed=3)
    pixels = batch.images.permute(0, 2, 3, 1)
    strip = torch.tensor(_RULER_COLOUR)
    ticks = torch.tensor(_TICK_COLOUR)
    is_strip = torch.isclose(pixels, strip, atol=1e-6).all(-1)
    is_tick = torch.isclose(pixels, ticks, atol=1e-6).all(-1)
    assert torch.equal(is_strip | is_tick, batch.masks)
    assert bool(is_tick.any())
    # Each ruler sits at a border and covers a few percent of the image.
    area = batch.masks.flatten(1).float().mean(1)
    assert bool(((area > 0.04) & (area < 0.12)).all())
    borders = batch.masks[:, 1, :].any(1) | batch.masks[:, -2, :].any(1)
    borders |= batch.masks[:, :, 1].any(1) | batch.masks[:, :, -2].any(1)
    assert bool(borders.all())


def test_placements():
    never = make_lesions(30, ruler="never", seed=1)
    assert not never.masks.any() and not never.has_ruler.any()
    swapped = make_lesions(30, ruler="swapped", seed=1)
    assert torch.equal(swapped.has_ruler, swapped.labels == 0)
    assert torch.equal(swapped.masks.flatten(1).any(1), swapped.has_ruler)


@pytest.mark.parametrize(
    ("rho", "low", "high"), [(1.0, 1.0, 1.0), (0.0, 0.4, 0.6), (0.5, 0.65, 0.85)]
)
def test_shortcut_strength_sets_how_often_the_ruler_follows_the_label(rho, low, high):
    batch = make_lesions(2000, shortcut_strength=rho, seed=2)
    agreement = (batch.has_ruler == (batch.labels == 1)).float().mean().item()
    assert low <= agreement <= high


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n": 0}, "n must be"),
        ({"n": 4, "shortcut_strength": 1.5}, r"\[0, 1\]"),
        ({"n": 4, "ruler": "sometimes"}, "unknown ruler placement"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        make_lesions(**kwargs)
