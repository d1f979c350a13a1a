"""Relevance mass and enrichment on hand-made maps."""

from __future__ import annotations

import math

import pytest
import torch

from xai_checks.errors import XAICheckError
from xai_checks.metrics import area_fraction, enrichment, relevance_mass


def _maps() -> tuple[torch.Tensor, torch.Tensor]:
    heatmaps = torch.zeros(3, 4, 4)
    masks = torch.zeros(3, 4, 4, dtype=torch.bool)
    # Image 0: all mass inside a 2x2 mask (a quarter of the image).
    heatmaps[0, :2, :2] = 1.0
    masks[0, :2, :2] = True
    # Image 1: flat heatmap, mask covers one row: mass = chance = 1/4.
    heatmaps[1] = 0.5
    masks[1, 0] = True
    # Image 2: 3 units inside, 1 outside, negative values ignored.
    heatmaps[2, 0, 0] = 3.0
    heatmaps[2, 3, 3] = 1.0
    heatmaps[2, 2, 2] = -5.0
    masks[2, 0, :2] = True
    return heatmaps, masks


def test_relevance_mass_is_the_positive_share_inside_the_mask():
    heatmaps, masks = _maps()
    assert relevance_mass(heatmaps, masks).tolist() == pytest.approx([1.0, 0.25, 0.75])


def test_enrichment_divides_by_the_area_fraction():
    heatmaps, masks = _maps()
    assert area_fraction(masks).tolist() == pytest.approx([0.25, 0.25, 2 / 16])
    assert enrichment(heatmaps, masks).tolist() == pytest.approx([4.0, 1.0, 6.0])


def test_empty_mask_gives_nan_and_a_warning_not_a_crash():
    heatmaps, masks = _maps()
    masks[1] = False
    with pytest.warns(RuntimeWarning, match=r"empty spurious mask for image\(s\) \[1\]"):
        mass = relevance_mass(heatmaps, masks)
    assert math.isnan(mass[1]) and mass[0] == 1.0
    with pytest.warns(RuntimeWarning):
        assert math.isnan(enrichment(heatmaps, masks)[1])


def test_zero_heatmap_has_no_mass_to_share():
    masks = torch.ones(1, 2, 2, dtype=torch.bool)
    assert math.isnan(relevance_mass(torch.zeros(1, 2, 2), masks)[0])


@pytest.mark.parametrize(
    ("heatmaps", "masks", "message"),
    [
        (
            torch.rand(2, 4, 4),
            torch.ones(2, 4, 5, dtype=torch.bool),
            "must have the heatmaps' shape",
        ),
        (torch.rand(2, 4, 4), torch.ones(4, 4, dtype=torch.bool), "must have the heatmaps' shape"),
        (
            torch.rand(4, 4),
            torch.ones(4, 4, dtype=torch.bool),
            r"heatmaps must have shape \(N, H, W\)",
        ),
        (torch.rand(2, 4, 4), torch.ones(2, 4, 4), "masks must be boolean"),
    ],
)
def test_bad_shapes_are_clear_errors(heatmaps, masks, message):
    with pytest.raises(XAICheckError, match=message):
        relevance_mass(heatmaps, masks)
    assert issubclass(XAICheckError, ValueError)
