"""Property-based tests: the metrics' invariants hold on generated maps and masks."""

from __future__ import annotations

import math
import warnings

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from xai_checks.metrics import (
    area_fraction,
    energy_pointing_game,
    enrichment,
    pointing_game,
    rank_accuracy,
    relevance_mass,
)

SIZES = st.tuples(st.integers(1, 3), st.integers(2, 9), st.integers(2, 9))


@st.composite
def maps_and_masks(draw):
    n, h, w = draw(SIZES)
    seed = draw(st.integers(0, 2**31 - 1))
    generator = torch.Generator().manual_seed(seed)
    heatmaps = torch.rand(n, h, w, generator=generator) * 2 - 0.5  # some negative values
    masks = torch.rand(n, h, w, generator=generator) < draw(st.floats(0.05, 0.95))
    masks[:, 0, 0] = True  # never empty: empty masks are NaN by design, tested elsewhere
    return heatmaps, masks


UNIT_METRICS = (relevance_mass, rank_accuracy, pointing_game, energy_pointing_game)


@settings(max_examples=60, deadline=None, derandomize=True)
@given(maps_and_masks())
def test_scores_stay_in_the_unit_interval_or_are_nan(pair):
    heatmaps, masks = pair
    for metric in UNIT_METRICS:
        values = metric(heatmaps, masks)
        finite = values[~values.isnan()]
        assert ((finite >= 0) & (finite <= 1 + 1e-6)).all(), metric.__name__


@settings(max_examples=60, deadline=None, derandomize=True)
@given(maps_and_masks(), st.floats(1e-3, 1e3))
def test_scores_do_not_depend_on_the_heatmap_scale(pair, scale):
    heatmaps, masks = pair
    for metric in (*UNIT_METRICS, enrichment):
        torch.testing.assert_close(
            metric(heatmaps * scale, masks),
            metric(heatmaps, masks),
            equal_nan=True,
            rtol=1e-4,
            atol=1e-6,
        )


@settings(max_examples=60, deadline=None, derandomize=True)
@given(maps_and_masks(), st.floats(0.01, 10))
def test_a_uniform_heatmap_puts_the_masks_area_inside_it(pair, level):
    _, masks = pair
    uniform = torch.full(masks.shape, level)
    torch.testing.assert_close(relevance_mass(uniform, masks), area_fraction(masks))
    torch.testing.assert_close(rank_accuracy(uniform, masks), area_fraction(masks))
    torch.testing.assert_close(enrichment(uniform, masks), torch.ones(masks.shape[0]))


@settings(max_examples=40, deadline=None, derandomize=True)
@given(st.integers(1, 2), st.integers(2, 6), st.integers(2, 6))
def test_empty_masks_are_nan_with_a_warning_never_a_number(n, h, w):
    heatmaps = torch.rand(n, h, w)
    masks = torch.zeros(n, h, w, dtype=torch.bool)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        values = relevance_mass(heatmaps, masks)
    assert all(math.isnan(v) for v in values.tolist())
    assert any("empty spurious mask" in str(w.message) for w in caught)
