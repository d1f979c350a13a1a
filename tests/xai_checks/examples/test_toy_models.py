"""The toy task behaves as designed: ρ = 1 learns the ruler, ρ = 0 learns the lesion."""

from __future__ import annotations

import pytest

from xai_checks import GradCAM
from xai_checks.examples.synthetic import make_lesions
from xai_checks.examples.toy_models import accuracy
from xai_checks.metrics import relevance_mass

pytestmark = pytest.mark.slow


def test_shortcut_model_collapses_without_its_ruler(trained_pair):
    model = trained_pair.shortcut
    in_distribution = make_lesions(600, shortcut_strength=1.0, seed=2)
    swapped = make_lesions(600, ruler="swapped", seed=4)
    no_ruler = make_lesions(600, ruler="never", seed=3)
    assert accuracy(model, in_distribution.images, in_distribution.labels) > 0.98
    assert accuracy(model, swapped.images, swapped.labels) < 0.1
    assert accuracy(model, no_ruler.images, no_ruler.labels) < 0.6


def test_clean_model_learns_the_lesion(trained_pair):
    model = trained_pair.clean
    swapped = make_lesions(600, ruler="swapped", seed=4)
    no_ruler = make_lesions(600, ruler="never", seed=3)
    assert accuracy(model, no_ruler.images, no_ruler.labels) > 0.75
    assert accuracy(model, swapped.images, swapped.labels) > 0.75


def test_gradcam_separates_the_two_models(trained_pair):
    audit = make_lesions(64, ruler="always", seed=100)
    shortcut = relevance_mass(GradCAM(trained_pair.shortcut)(audit.images), audit.masks)
    clean = relevance_mass(GradCAM(trained_pair.clean)(audit.images), audit.masks)
    assert shortcut.mean() > 0.4 > 0.15 > clean.mean()
    assert shortcut.min() > clean.max()
