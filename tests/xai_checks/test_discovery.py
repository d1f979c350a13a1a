"""Strategy discovery (SpRAy): clusters, eigengap, suspicion, proposals and their fill test."""

from __future__ import annotations

import math

import pytest
import torch
from sklearn.cluster import SpectralClustering
from sklearn.neighbors import kneighbors_graph

from xai_checks.cam import GradCAM
from xai_checks.discovery import (
    _neighbours,
    confirm_proposal,
    contrast_regions,
    discover_strategies,
    propose_region,
    region_evidence,
)
from xai_checks.errors import XAICheckError
from xai_checks.examples.synthetic import make_lesions

FLIP_THRESHOLD = 0.5
"""The policy's default max_discovery_flip_rate."""


def _blobs(n: int, centre: tuple[float, float], seed: int, size: int = 32) -> torch.Tensor:
    """``n`` Gaussian heatmaps around ``centre`` (fractions of the side), jittered a little."""
    gen = torch.Generator().manual_seed(seed)
    coords = torch.arange(size) + 0.5
    yy, xx = torch.meshgrid(coords, coords, indexing="ij")
    jitter = (torch.rand(n, 2, generator=gen) - 0.5) * 2.0
    cy = centre[0] * size + jitter[:, 0:1, None]
    cx = centre[1] * size + jitter[:, 1:2, None]
    return torch.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * 2.5**2))


@pytest.fixture
def two_strategies():
    """Class 0 looks at the centre; class 1 at the centre for 20 images, at a corner for 12."""
    heatmaps = torch.cat(
        [
            _blobs(24, (0.5, 0.5), seed=0),
            _blobs(20, (0.5, 0.5), seed=1),
            _blobs(12, (0.12, 0.85), seed=2),
        ]
    )
    labels = torch.tensor([0] * 24 + [1] * 32)
    return heatmaps, labels


def test_a_second_strategy_is_found_ranked_first_and_proposed(two_strategies):
    heatmaps, labels = two_strategies
    found = discover_strategies(heatmaps, labels, resolution=16)
    # Class 1's two ways of looking are two strategies. (A small homogeneous class may
    # split in two on a sparse neighbour graph: alike halves, which are never suspicious.)
    assert found.cluster_counts[1] == 2
    assert all(s.suspicion < 0.2 for s in found.strategies if s.class_index == 0)
    top = found.strategies[0]
    assert top.class_index == 1 and top.members.tolist() == list(range(44, 56))
    assert top.suspicion > 0.8 and top.offset > 0.9
    # The others look where most heatmaps look: below the policy's default bound of 0.5.
    assert all(s.suspicion < 0.5 for s in found.strategies[1:])
    # The eigengap: as many (near-)zero eigenvalues as strategies, then a jump.
    values = found.eigenvalues[1]
    assert values[:2].max() < 1e-6 and values[2] > 0.05
    region = propose_region(top, (32, 32))
    ys, xs = region.nonzero(as_tuple=True)
    assert region.any() and ys.float().mean() < 8 and xs.float().mean() > 22  # the corner
    assert not region[16, 16]  # never the region every strategy uses

    table = found.table(("cat", "dog"))
    assert list(table.columns) == [
        "rank",
        "class",
        "size",
        "suspicion",
        "offset",
        "separation",
        "elsewhere",
    ]
    assert table["class"].tolist()[0] == "dog" and table["size"].tolist()[0] == 12
    assert table["suspicion"].is_monotonic_decreasing
    assert found.table()["class"].tolist()[0] == 1  # without names: the class indices
    assert found.table(("cat",))["class"].tolist()[0] == "1"  # an unnamed class: its index


@pytest.mark.filterwarnings("ignore:Graph is not fully connected")
def test_clusters_are_scikit_learns_spectral_clustering_on_the_knn_graph(two_strategies):
    heatmaps, labels = two_strategies
    found = discover_strategies(heatmaps, labels, resolution=16)
    index = (labels == 1).nonzero().flatten()
    pooled = torch.nn.functional.adaptive_avg_pool2d(heatmaps[index].unsqueeze(1), 16).flatten(1)
    features = (pooled / pooled.sum(dim=1, keepdim=True)).sqrt().double().numpy()
    graph = kneighbors_graph(features, _neighbours(index.numel(), 10))
    reference = SpectralClustering(
        n_clusters=2, affinity="precomputed", assign_labels="cluster_qr", random_state=0
    ).fit_predict(0.5 * (graph + graph.T))
    ours = {tuple(s.members.tolist()) for s in found.strategies if s.class_index == 1}
    theirs = {tuple(index[reference == k].tolist()) for k in (0, 1)}
    assert ours == theirs


def test_one_strategy_everywhere_is_not_suspicious():
    heatmaps = torch.cat([_blobs(20, (0.5, 0.5), seed=3), _blobs(20, (0.5, 0.5), seed=4)])
    found = discover_strategies(heatmaps, torch.tensor([0] * 20 + [1] * 20))
    assert found.cluster_counts[1] == 1 and found.strategies[-1].suspicion == 0.0  # alone
    assert max(s.suspicion for s in found.strategies) < 0.2
    # Alone in its class, its proposal is its whole hot region: only what the images hold
    # there (region_evidence) can make it suspicious.
    alone = next(s for s in found.strategies if s.class_index == 1)
    region = propose_region(alone, (32, 32))
    assert alone.alone and region[16, 16] and 0 < region.float().mean() < 0.3


def test_discovery_is_deterministic(two_strategies):
    heatmaps, labels = two_strategies
    first = discover_strategies(heatmaps, labels)
    second = discover_strategies(heatmaps, labels)
    assert [s.members.tolist() for s in first.strategies] == [
        s.members.tolist() for s in second.strategies
    ]
    assert [s.suspicion for s in first.strategies] == [s.suspicion for s in second.strategies]


def test_bad_inputs_are_clear_errors(two_strategies):
    heatmaps, labels = two_strategies
    with pytest.raises(XAICheckError, match=r"heatmaps must be a \(N, H, W\) tensor"):
        discover_strategies(heatmaps[0], labels)
    with pytest.raises(XAICheckError, match="labels must be 56 integer class indices"):
        discover_strategies(heatmaps, labels[:3])
    poisoned = heatmaps.clone()
    poisoned[5, 0, 0] = float("nan")
    with pytest.raises(XAICheckError, match="heatmaps contain NaN or Inf"):
        discover_strategies(poisoned, labels)
    with pytest.raises(XAICheckError, match="resolution must be >= 2"):
        discover_strategies(heatmaps, labels, resolution=1)
    found = discover_strategies(heatmaps, labels)
    with pytest.raises(XAICheckError, match="threshold must lie in"):
        propose_region(found.strategies[0], (32, 32), threshold=1.0)


def test_an_empty_proposal_is_no_evidence_and_a_full_one_an_error(two_strategies):
    heatmaps, labels = two_strategies
    top = discover_strategies(heatmaps, labels).strategies[0]
    images = torch.rand(len(labels), 3, 32, 32)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, 2))
    empty = confirm_proposal(model, images, top, torch.zeros(32, 32, dtype=torch.bool))
    assert empty.flipped.numel() == 0 and math.isnan(empty.flip_rate) and empty.area == 0.0
    almost = torch.ones(32, 32, dtype=torch.bool)
    almost[0, 0] = False  # grown by its margin, it covers everything
    with pytest.raises(XAICheckError, match="covers the whole image"):
        confirm_proposal(model, images, top, almost)


def test_heatmaps_without_relevance_are_counted(two_strategies):
    heatmaps, labels = two_strategies
    dead = heatmaps.clone()
    dead[:5] = 0
    assert discover_strategies(dead, labels).empty_maps == 5
    assert discover_strategies(heatmaps, labels).empty_maps == 0


def _iou(proposal: torch.Tensor, masks: torch.Tensor) -> float:
    inter = (masks & proposal).flatten(1).sum(dim=1).float()
    union = (masks | proposal).flatten(1).sum(dim=1).float()
    return float((inter / union).mean())


def _discover(model, batch):
    """Discovery as the gate runs it: Grad-CAM of the predicted class, no masks involved."""
    result = GradCAM(model).explain(batch.images)
    return discover_strategies(result.heatmaps, result.predictions)


@pytest.mark.slow
def test_the_ruler_of_the_shortcut_model_is_found_without_masks(trained_pair):
    audit = make_lesions(128, ruler="always", seed=100)
    found = _discover(trained_pair.shortcut, audit)
    top = found.strategies[0]
    assert top.suspicion > 0.5 and top.size >= 5
    region = propose_region(top, (64, 64))
    # The proposal is the ruler: IoU with each member's true (never supplied) ruler mask.
    assert _iou(region, audit.masks[top.members]) >= 0.5
    proposal = confirm_proposal(trained_pair.shortcut, audit.images, top, region)
    assert proposal.flip_rate > FLIP_THRESHOLD
    assert proposal.filled.sum() > region.sum()  # filled with a margin around it


@pytest.mark.slow
def test_no_proposal_of_the_clean_model_flips_predictions(trained_pair):
    audit = make_lesions(128, ruler="always", seed=100)
    clean = _discover(trained_pair.clean, audit)
    shortcut = _discover(trained_pair.shortcut, audit)
    assert clean.strategies[0].suspicion < 0.5 < shortcut.strategies[0].suspicion
    # Every strategy, suspicious or not, has its proposal tested: none flips.
    for strategy in clean.strategies:
        region = propose_region(strategy, (64, 64))
        proposal = confirm_proposal(trained_pair.clean, audit.images, strategy, region)
        assert proposal.flip_rate <= FLIP_THRESHOLD, (strategy.class_index, strategy.size)


@pytest.mark.slow
def test_a_hospital_tag_in_a_corner_is_found_too(trained_tag_model):
    """A different artifact: a dark label box near a corner, not a strip along a border."""
    audit = make_lesions(128, ruler="always", artifact="tag", seed=100)
    found = _discover(trained_tag_model, audit)
    top = found.strategies[0]
    assert top.suspicion > 0.5
    region = propose_region(top, (64, 64))
    assert _iou(region, audit.masks[top.members]) >= 0.5
    # A compact box near a corner, not a strip along a border.
    assert region.float().mean() < 0.1
    proposal = confirm_proposal(trained_tag_model, audit.images, top, region)
    assert proposal.flip_rate > FLIP_THRESHOLD


def _backgrounds(n: int, seed: int, size: int = 32, grain: float = 0.05) -> torch.Tensor:
    """Varying images: smooth random shading plus grain, no two alike."""
    gen = torch.Generator().manual_seed(seed)
    shade = torch.nn.functional.interpolate(
        torch.rand(n, 3, 4, 4, generator=gen), size=(size, size), mode="bilinear"
    )
    return (0.3 + 0.4 * shade + grain * torch.randn(n, 3, size, size, generator=gen)).clamp(0, 1)


def test_region_evidence_tells_a_stamp_from_an_object_every_class_has():
    n, corner = 24, torch.zeros(32, 32, dtype=torch.bool)
    corner[2:9, 2:9] = True
    members, others = _backgrounds(n, seed=1), _backgrounds(n, seed=2)
    stamped = members.clone()
    stamped[:, :, 2:9, 2:9] = torch.tensor([0.95, 0.9, 0.2]).view(1, 3, 1, 1)  # the same copy
    stamped[:, :, 4:7, 4:7] = 0.05
    images = torch.cat([stamped, others])
    index = torch.arange(n)
    stamp = region_evidence(images, index, index + n, corner)
    assert stamp.presence > 0.8 and stamp.stereotypy > 0.8

    # An "object" in every image of both classes, different each time: neither present only
    # in the members, nor a copy.
    gen = torch.Generator().manual_seed(3)
    varied = torch.cat([members, others]).clone()
    varied[:, :, 2:9, 2:9] = torch.rand(2 * n, 3, 7, 7, generator=gen)
    varied_evidence = region_evidence(varied, index, index + n, corner)
    assert varied_evidence.presence < 0.3 and varied_evidence.stereotypy < 0.3


def test_region_evidence_tolerates_a_little_jitter_and_says_nan_without_comparison():
    n, region = 16, torch.zeros(32, 32, dtype=torch.bool)
    region[2:12, 2:12] = True
    images = _backgrounds(n, seed=4)
    gen = torch.Generator().manual_seed(5)
    for i, (dy, dx) in enumerate(torch.randint(0, 3, (n, 2), generator=gen).tolist()):
        images[i, :, 2 + dy : 10 + dy, 2 + dx : 10 + dx] = 0.95  # the same tag, jittered
    evidence = region_evidence(images, torch.arange(n), torch.empty(0, dtype=torch.long), region)
    assert math.isnan(evidence.presence)  # no other class to compare with
    assert evidence.stereotypy > 0.5
    empty = region_evidence(images, torch.arange(n), torch.arange(0), torch.zeros_like(region))
    assert math.isnan(empty.presence) and math.isnan(empty.stereotypy)
    assert math.isnan(empty.texture)


def _mottled(n: int, seed: int, size: int) -> torch.Tensor:
    """Skin-like images: shading, grain and a mottling that a smooth fill cannot rebuild."""
    gen = torch.Generator().manual_seed(seed + 100)
    mottling = torch.nn.functional.interpolate(
        torch.randn(n, 1, 8, 8, generator=gen), size=(size, size), mode="bicubic"
    )
    return _backgrounds(n, seed=seed, size=size, grain=0.02) + 0.035 * mottling


def test_texture_sees_a_faint_grating_that_filling_barely_changes():
    """A texture of contrast 0.06 added over mottled skin: filling it changes the pixels
    little more than filling the mottling does, but it is most of the fine detail."""
    n, size = 32, 64
    corner = torch.zeros(size, size, dtype=torch.bool)
    corner[4:24, 4:24] = True
    coords = torch.arange(size)
    grating = 0.06 * torch.cos(2 * math.pi * (coords.view(-1, 1) + coords.view(1, -1)) / 4)
    members = _mottled(n, seed=6, size=size)
    members[:, :, corner] += grating[corner]
    others = _mottled(n, seed=7, size=size)
    index = torch.arange(n)
    evidence = region_evidence(torch.cat([members, others]), index, index + n, corner)
    assert evidence.texture > 0.5 > evidence.presence

    # The same region without the grating: the members' detail is the others' detail.
    plain = torch.cat([_mottled(n, seed=6, size=size), others])
    assert abs(region_evidence(plain, index, index + n, corner).texture) < 0.15


def test_a_flat_patch_alike_on_every_member_is_no_copy():
    """The inside of a dark lesion: near-uniform, a slightly different colour on each image.
    Its members differ less there than elsewhere, yet nothing in it is copied: its own
    detail is as small as the differences between members."""
    n, size = 24, 32
    region = torch.zeros(size, size, dtype=torch.bool)
    region[10:22, 10:22] = True
    gen = torch.Generator().manual_seed(8)
    images = _backgrounds(n, seed=9, size=size, grain=0.02)
    colour = 0.25 + 0.1 * torch.rand(n, 3, 1, 1, generator=gen)
    blotches = 1 + 0.08 * torch.randn(n, 1, 12, 12, generator=gen)
    images[:, :, 10:22, 10:22] = colour * blotches
    evidence = region_evidence(images, torch.arange(n), torch.empty(0, dtype=torch.long), region)
    assert evidence.stereotypy < 0.2

    # The same patch with a copied pattern in it (dark dashes) is a copy.
    dashed = images.clone()
    dashed[:, :, 14:18, 10:22:3] = 0.9
    copied = region_evidence(dashed, torch.arange(n), torch.empty(0, dtype=torch.long), region)
    assert copied.stereotypy > 0.5


def _checker_strip(size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A strip along the right edge and a faint 2-pixel checkerboard (contrast 0.14) in it."""
    strip = torch.zeros(size, size, dtype=torch.bool)
    strip[2 : size - 2, size - 10 : size - 2] = True
    coords = torch.arange(size)
    checker = 0.07 * (1 - 2 * ((coords.view(-1, 1) + coords.view(1, -1)) % 2)).float()
    return strip, checker


def test_contrast_regions_find_a_faint_texture_that_sits_still_without_any_heatmap():
    """The members carry a faint checkerboard at the same place, and a darker centre (what
    the classes legitimately differ by): both are places where they differ, found apart."""
    n, size = 48, 64
    strip, checker = _checker_strip(size)
    members, others = _mottled(n, seed=10, size=size), _mottled(n, seed=11, size=size)
    members[:, :, strip] += checker[strip]
    centre = torch.zeros(size, size, dtype=torch.bool)
    centre[24:40, 24:40] = True
    members[:, :, centre] -= 0.15
    index = torch.arange(n)
    regions = contrast_regions(torch.cat([members, others]), index, index + n)
    assert all(r.shape == (size, size) and r.dtype == torch.bool for r in regions)
    assert len(regions) == 3, "the strip, the centre, and their union"
    for truth in (strip, centre):
        region = max(regions[:2], key=lambda r: float((r & truth).sum()))
        assert (region & truth).sum() >= 0.95 * truth.sum()
        # The region is the place plus at most a rim where its edge changes the fine detail.
        assert region.sum() < 1.8 * truth.sum()
    assert torch.equal(regions[2], regions[0] | regions[1])
    # Its evidence: the fine detail there is the members' own, and filling it changes them.
    strip_region = max(regions[:2], key=lambda r: float((r & strip).sum()))
    evidence = region_evidence(torch.cat([members, others]), index, index + n, strip_region)
    assert evidence.texture > 0.5 and evidence.presence > 0.5


def test_contrast_regions_find_nothing_that_moves_or_is_absent():
    n, size = 48, 64
    strip, checker = _checker_strip(size)
    members, others = _mottled(n, seed=12, size=size), _mottled(n, seed=13, size=size)
    index = torch.arange(n)
    assert contrast_regions(torch.cat([members, others]), index, index + n) == []
    # The same textured patch on every member, somewhere else on each: no fixed place.
    moving = members.clone()
    gen = torch.Generator().manual_seed(16)
    for i, (top, left) in enumerate(torch.randint(0, size - 12, (n, 2), generator=gen).tolist()):
        moving[i, :, top : top + 12, left : left + 12] += checker[:12, :12]
    assert contrast_regions(torch.cat([moving, others]), index, index + n) == []
    # And the same texture on both classes alike is no difference either.
    both = torch.cat([members, others])
    both[:, :, strip] += checker[strip]
    assert contrast_regions(both, index, index + n) == []
    # Too few images on a side to estimate a spread: nothing.
    assert contrast_regions(both, index[:2], index + n) == []


@pytest.mark.parametrize("size", [256, 250])
def test_contrast_regions_read_large_images_pooled(size):
    n = 32
    members, others = _mottled(n, seed=14, size=size), _mottled(n, seed=15, size=size)
    corner = torch.zeros(size, size, dtype=torch.bool)
    corner[:48, :48] = True
    members[:, :, corner] = 0.95  # a light tag in one corner
    index = torch.arange(n)
    regions = contrast_regions(torch.cat([members, others]), index, index + n)
    assert len(regions) == 1 and regions[0].shape == (size, size)
    assert (regions[0] & corner).sum() == corner.sum() and regions[0].sum() < 1.5 * corner.sum()
