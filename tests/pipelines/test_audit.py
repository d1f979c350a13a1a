"""audit_images on the trained toy models: the table, the summary, the worst cases."""

from __future__ import annotations

import pytest
import torch

from pipelines.audit import audit_images
from pipelines.policy import SCORE_COLUMNS, Thresholds
from xai_checks import GradCAM
from xai_checks.metrics import relevance_mass
from xai_checks.synthetic import CLASS_NAMES, make_lesions

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def audit_batch():
    return make_lesions(40, ruler="always", seed=100)


def test_score_table_columns_and_values(trained_pair, audit_batch):
    result = audit_images(
        trained_pair.shortcut,
        audit_batch.images,
        audit_batch.labels,
        audit_batch.masks,
        class_names=CLASS_NAMES,
        batch_size=16,
        keep_worst=5,
    )
    scores = result.scores
    assert list(scores.columns) == list(SCORE_COLUMNS)
    assert len(scores) == 40 and scores["image_id"].tolist()[:2] == ["0", "1"]
    assert set(scores["label"]) == set(CLASS_NAMES)
    # Same numbers as calling the pieces directly, whatever the batching.
    expected = relevance_mass(GradCAM(trained_pair.shortcut)(audit_batch.images), audit_batch.masks)
    assert scores["spurious_mass"].tolist() == pytest.approx(expected.tolist(), abs=1e-5)
    assert scores["flagged"].tolist() == (expected > 0.5).tolist()
    assert result.summary["target_layer"] == "features"
    assert result.summary["flagged_fraction"] == pytest.approx(scores["flagged"].mean())
    # The shortcut model calls everything with a ruler malignant.
    assert result.summary["accuracy"] == pytest.approx(0.5, abs=0.05)
    assert (scores["prediction"] == "malignant").all()


def test_worst_cases_are_the_highest_mass_images(trained_pair, audit_batch):
    result = audit_images(
        trained_pair.clean,
        audit_batch.images,
        audit_batch.labels,
        audit_batch.masks,
        batch_size=7,
        keep_worst=4,
        thresholds=Thresholds(flag_mass=0.1),
    )
    top = result.scores["spurious_mass"].nlargest(4)
    assert result.worst.rows["spurious_mass"].tolist() == pytest.approx(top.tolist())
    assert torch.equal(result.worst.images[0], audit_batch.images[top.index[0]])
    assert result.worst.heatmaps.shape == (4, 64, 64)
    assert result.scores["flagged"].tolist() == (result.scores["spurious_mass"] > 0.1).tolist()
    # Samples are the first images in order, across batch boundaries (batch_size 7).
    assert result.samples.rows["image_id"].tolist() == ["0", "1", "2", "3"]
    expected = GradCAM(trained_pair.clean)(audit_batch.images[:4])
    torch.testing.assert_close(result.samples.heatmaps, expected, rtol=1e-4, atol=1e-5)


def test_metrics_separate_shortcut_from_clean(trained_pair, audit_batch):
    args = (audit_batch.images, audit_batch.labels, audit_batch.masks)
    shortcut = audit_images(trained_pair.shortcut, *args).metrics()
    clean = audit_images(trained_pair.clean, *args).metrics()
    assert set(shortcut) == {
        "gradcam.spurious_mass",
        "gradcam.enrichment",
        "gradcam.flagged_fraction",
        "accuracy",
    }
    assert shortcut["gradcam.spurious_mass"] > 0.3 > clean["gradcam.spurious_mass"]
    assert shortcut["gradcam.enrichment"] > 3 * clean["gradcam.enrichment"]


def test_inconsistent_inputs_are_rejected(trained_pair, audit_batch):
    with pytest.raises(ValueError, match=r"labels must have shape \(40,\)"):
        audit_images(trained_pair.clean, audit_batch.images, [0, 1], audit_batch.masks)
    with pytest.raises(ValueError, match="one id per image"):
        audit_images(
            trained_pair.clean,
            audit_batch.images,
            audit_batch.labels,
            audit_batch.masks,
            image_ids=["a"],
        )
