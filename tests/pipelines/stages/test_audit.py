"""audit_images on the trained toy models: the table, the summary, the worst cases."""

from __future__ import annotations

import itertools

import pandas as pd
import pytest
import torch

from pipelines.evidence.columns import SCORE_COLUMNS
from pipelines.stages.cam import audit_images, merge_audits, shard_bounds
from xai_checks import GradCAM, LayerCAM
from xai_checks.examples.synthetic import CLASS_NAMES, make_lesions
from xai_checks.metrics import relevance_mass

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
        flag_mass=0.1,
    )
    top = result.scores["spurious_mass"].nlargest(4)
    worst, samples = result.gating.worst, result.gating.samples
    assert worst.rows["spurious_mass"].tolist() == pytest.approx(top.tolist())
    assert torch.equal(worst.images[0], audit_batch.images[top.index[0]])
    assert worst.heatmaps.shape == (4, 64, 64)
    assert result.scores["flagged"].tolist() == (result.scores["spurious_mass"] > 0.1).tolist()
    # Samples are the first images in order, across batch boundaries (batch_size 7).
    assert samples.rows["image_id"].tolist() == ["0", "1", "2", "3"]
    expected = GradCAM(trained_pair.clean)(audit_batch.images[:4])
    torch.testing.assert_close(samples.heatmaps, expected, rtol=1e-4, atol=1e-5)
    # Every image keeps its heatmap pooled to 16 x 16 (4 x 4 pixel cells here).
    pooled = expected.unflatten(1, (16, 4)).unflatten(3, (16, 4)).mean(dim=(2, 4))
    torch.testing.assert_close(result.gating.low_res[:4], pooled, rtol=1e-4, atol=1e-5)
    assert result.gating.low_res.shape == (len(audit_batch), 16, 16)


def test_metrics_separate_shortcut_from_clean(trained_pair, audit_batch):
    args = (audit_batch.images, audit_batch.labels, audit_batch.masks)
    shortcut = audit_images(trained_pair.shortcut, *args).metrics()
    clean = audit_images(trained_pair.clean, *args).metrics()
    per_image = ("spurious_mass", "enrichment", "rank_accuracy", "pointing_game")
    expected = {
        f"gradcam.{m}{end}"
        for m in (*per_image, "energy_pointing_game")
        for end in ("", "_ci_low", "_ci_high")
    }
    assert set(shortcut) == expected | {
        "gradcam.flagged_fraction",
        "gradcam.chance_mass",
        "accuracy",
    }
    for metrics in (shortcut, clean):
        for m in per_image:
            low, mean, high = (metrics[f"gradcam.{m}{e}"] for e in ("_ci_low", "", "_ci_high"))
            assert low < mean < high or low == mean == high
    assert shortcut["gradcam.spurious_mass"] > 0.3 > clean["gradcam.spurious_mass"]
    assert shortcut["gradcam.spurious_mass_ci_low"] > clean["gradcam.spurious_mass_ci_high"]
    assert shortcut["gradcam.enrichment"] > 3 * clean["gradcam.enrichment"]
    assert shortcut["gradcam.rank_accuracy"] > 0.5 > clean["gradcam.rank_accuracy"]
    # The clean model peaks on the ruler about a third of the time (0.325 with this seed):
    # the ruler is a strong edge. The shortcut model always does.
    assert shortcut["gradcam.pointing_game"] > 0.9 and clean["gradcam.pointing_game"] < 0.5
    # Chance: the ruler covers about 7 x 46 of 64 x 64 pixels.
    assert shortcut["gradcam.chance_mass"] == pytest.approx(0.08, abs=0.02)


def test_every_method_is_scored_and_only_the_first_one_gates(trained_pair, audit_batch):
    args = (audit_batch.images, audit_batch.labels, audit_batch.masks)
    result = audit_images(trained_pair.shortcut, *args, methods=("layercam", "gradcam"))
    assert list(result.methods) == ["layercam", "gradcam"]
    assert result.summary["method"] == "layercam"
    layercam = LayerCAM(trained_pair.shortcut)(audit_batch.images)
    expected = relevance_mass(layercam, audit_batch.masks)
    assert result.scores["spurious_mass"].tolist() == pytest.approx(expected.tolist(), abs=1e-5)
    gradcam = relevance_mass(GradCAM(trained_pair.shortcut)(audit_batch.images), audit_batch.masks)
    assert result.scores["gradcam_spurious_mass"].tolist() == pytest.approx(
        gradcam.tolist(), abs=1e-5
    )
    metrics = result.metrics()
    assert metrics["layercam.spurious_mass"] == pytest.approx(float(expected.mean()), abs=1e-6)
    assert metrics["gradcam.spurious_mass"] == pytest.approx(float(gradcam.mean()), abs=1e-6)
    with pytest.raises(ValueError, match="unknown method 'scorecam'"):
        audit_images(trained_pair.shortcut, *args, methods=("gradcam", "scorecam"))


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


def test_attention_rollout_maps_go_through_the_same_metrics():
    from torchvision.models import VisionTransformer

    from xai_checks.rollout import AttentionRollout

    torch.manual_seed(0)
    vit = VisionTransformer(
        image_size=32,
        patch_size=8,
        num_layers=2,
        num_heads=2,
        hidden_dim=32,
        mlp_dim=64,
        num_classes=2,
    )
    torch.nn.init.normal_(vit.heads.head.weight, std=0.5)  # torchvision zero-initialises it
    images = torch.rand(6, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    masks = torch.zeros(6, 32, 32, dtype=torch.bool)
    masks[:, :8, :] = True  # the top row of patches
    result = audit_images(vit, images, [0, 1] * 3, masks, methods=("rollout", "gradcam"))
    expected = relevance_mass(AttentionRollout(vit)(images), masks)
    assert result.scores["spurious_mass"].tolist() == pytest.approx(expected.tolist(), abs=1e-6)
    assert result.methods["rollout"].layers == ()
    assert result.metrics()["rollout.chance_mass"] == pytest.approx(0.25)


def test_the_policy_and_the_cli_offer_exactly_the_registry_methods():
    from pipelines.policy import HeatmapChecks, policy_options
    from xai_checks.methods import method_names

    (methods,) = [option for option in policy_options() if option.name == "cam_methods"]
    assert methods.choices == tuple(method_names())
    for name in method_names():
        assert HeatmapChecks(methods=(name,)).methods == (name,)
    with pytest.raises(ValueError, match="unknown method"):
        HeatmapChecks(methods=("scorecam",))


def test_shard_bounds_cut_on_batch_edges_and_cover_everything():
    assert shard_bounds(40, 2, 8) == [(0, 24), (24, 40)]
    assert shard_bounds(40, 3, 8) == [(0, 16), (16, 32), (32, 40)]
    assert shard_bounds(5, 4, 8) == [(0, 5)]  # one batch cannot be split
    assert shard_bounds(0, 2, 8) == [(0, 0)]
    for n, shards, batch in [(97, 3, 8), (64, 2, 32), (10, 10, 1)]:
        bounds = shard_bounds(n, shards, batch)
        assert bounds[0][0] == 0 and bounds[-1][1] == n and len(bounds) <= shards
        assert all(a[1] == b[0] for a, b in itertools.pairwise(bounds))
        assert all(start % batch == 0 for start, _ in bounds)


def test_merged_shards_equal_the_whole_audit_exactly(trained_pair, audit_batch):
    args = (trained_pair.shortcut, audit_batch.images, audit_batch.labels, audit_batch.masks)
    options = {
        "class_names": CLASS_NAMES,
        "methods": ("gradcam", "layercam"),
        "batch_size": 8,
        "keep_worst": 6,
        "image_ids": [f"img-{i}" for i in range(40)],
    }
    whole = audit_images(*args, **options)
    parts = []
    for start, stop in shard_bounds(40, 3, 8):
        part_args = (trained_pair.shortcut, *(t[start:stop] for t in args[1:]))
        ids = options["image_ids"][start:stop]
        parts.append(audit_images(*part_args, **(options | {"image_ids": ids})))
    merged = merge_audits(parts, keep_worst=6)
    pd.testing.assert_frame_equal(merged.scores, whole.scores)
    assert merged.metrics() == whole.metrics()
    assert merged.summary == whole.summary
    assert torch.equal(merged.predictions, whole.predictions)
    for method in ("gradcam", "layercam"):
        low_res = whole.methods[method].low_res
        assert low_res.shape == (40, 16, 16) and torch.equal(
            merged.methods[method].low_res, low_res
        )
        for name in ("worst", "samples"):
            got, want = getattr(merged.methods[method], name), getattr(whole.methods[method], name)
            pd.testing.assert_frame_equal(got.rows, want.rows)
            assert torch.equal(got.heatmaps, want.heatmaps)
            assert torch.equal(got.images, want.images) and torch.equal(got.masks, want.masks)
