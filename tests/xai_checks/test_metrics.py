"""Localisation metrics and bootstrap intervals on hand-made maps."""

from __future__ import annotations

import math

import pytest
import torch

from xai_checks.errors import XAICheckError
from xai_checks.metrics import (
    area_fraction,
    bootstrap_ci,
    bounding_boxes,
    energy_pointing_game,
    enrichment,
    pointing_game,
    rank_accuracy,
    relevance_mass,
)


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
    for metric in (relevance_mass, rank_accuracy, pointing_game, energy_pointing_game):
        with pytest.raises(XAICheckError, match=message):
            metric(heatmaps, masks)
    assert issubclass(XAICheckError, ValueError)


def test_rank_accuracy_counts_the_top_mask_size_pixels_inside():
    heatmaps, masks = _maps()
    # Image 0: the 4 top pixels are the mask. Image 1: a flat map, 4 slots shared by
    # 16 tied pixels of which 4 inside: 4 * 4/16 / 4 = 1/4 (chance, not topk's luck).
    # Image 2: |mask| = 2; ranks 3.0 (inside), 1.0 (outside): 1/2.
    assert rank_accuracy(heatmaps, masks).tolist() == pytest.approx([1.0, 0.25, 0.5])


def test_rank_accuracy_shares_ties_at_the_cutoff():
    heatmap = torch.tensor([[[5.0, 2.0, 2.0, 2.0]]])
    mask = torch.tensor([[[True, True, False, False]]])
    # Top 2: 5.0 (inside) plus one of three tied 2.0s, one of which is inside: (1 + 1/3) / 2.
    assert rank_accuracy(heatmap, mask).item() == pytest.approx(2 / 3)


def test_pointing_game_hits_when_the_maximum_is_inside():
    heatmaps, masks = _maps()
    # Image 0: peak inside; image 1: flat, 4 of 16 maxima inside; image 2: 3.0 at (0, 0) inside.
    assert pointing_game(heatmaps, masks).tolist() == pytest.approx([1.0, 0.25, 1.0])
    heatmaps[2, 3, 3] = 9.0
    assert pointing_game(heatmaps, masks)[2].item() == 0.0
    assert math.isnan(pointing_game(torch.zeros(1, 2, 2), masks[:1, :2, :2])[0])


def test_energy_pointing_game_uses_the_masks_bounding_box():
    heatmap = torch.zeros(1, 4, 4)
    heatmap[0, 1, 1] = 1.0  # inside the box, outside the L-shaped mask
    heatmap[0, 0, 0] = 1.0  # inside both
    heatmap[0, 3, 3] = 2.0  # outside both
    mask = torch.zeros(1, 4, 4, dtype=torch.bool)
    mask[0, 0, :2] = True
    mask[0, :2, 0] = True
    box = bounding_boxes(mask)
    assert box[0, :2, :2].all() and box.sum() == 4
    assert energy_pointing_game(heatmap, mask).item() == pytest.approx(2 / 4)
    assert relevance_mass(heatmap, mask).item() == pytest.approx(1 / 4)
    assert torch.equal(bounding_boxes(box), box)  # a box is its own box


def test_bootstrap_interval_brackets_the_mean_and_narrows_with_n():
    generator = torch.Generator().manual_seed(0)
    small = torch.rand(20, generator=generator)
    large = torch.rand(2000, generator=generator)
    for values in (small, large):
        estimate = bootstrap_ci(values)
        assert estimate.mean == pytest.approx(float(values.double().mean()))
        assert estimate.low < estimate.mean < estimate.high
        assert estimate.n == values.numel()
    assert (bootstrap_ci(large).high - bootstrap_ci(large).low) < (
        bootstrap_ci(small).high - bootstrap_ci(small).low
    ) / 5
    # For the mean of U(0, 1) the 95 % half-width is about 1.96 * 0.2887 / sqrt(n).
    half_width = (bootstrap_ci(large).high - bootstrap_ci(large).low) / 2
    assert half_width == pytest.approx(1.96 * 0.2887 / math.sqrt(2000), rel=0.15)


def test_bootstrap_ignores_nans_is_deterministic_and_handles_degenerate_input():
    values = torch.tensor([0.1, float("nan"), 0.3, 0.5])
    assert bootstrap_ci(values) == bootstrap_ci(values)
    assert bootstrap_ci(values).n == 3
    assert bootstrap_ci(values).mean == pytest.approx(0.3)
    constant = bootstrap_ci(torch.full((5,), 0.4))
    assert (constant.low, constant.mean, constant.high) == pytest.approx((0.4, 0.4, 0.4))
    empty = bootstrap_ci(torch.tensor([float("nan")]))
    assert empty.n == 0 and math.isnan(empty.mean)
    with pytest.raises(XAICheckError, match="confidence"):
        bootstrap_ci(values, confidence=95)
