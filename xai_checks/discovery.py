"""Unknown shortcuts: Spectral Relevance Analysis (SpRAy) run unattended.

A known spurious region can be masked and scored; the dangerous shortcut is the
one nobody thought to mask. SpRAy (Lapuschkin et al. 2019, Anders et al. 2022)
clusters the heatmaps of each class: a class explained in two distinct ways
has two prediction strategies, and one of them may be a Clever Hans. CoRelAy
and ViRelAy leave the clusters to a person; here every cluster gets a
suspicion score, the most suspicious ones become proposed spurious regions,
and the counterfactual fill tests each proposal, so a gate can act on it.

Steps, per class (the class each heatmap explains):

1. downsample every heatmap to ``resolution`` squared and normalise it to a
   relevance distribution; compare distributions by Hellinger distance
   (Euclidean distance between their square roots);
2. a symmetric k-nearest-neighbour affinity, its normalised Laplacian, and
   scikit-learn's spectral clustering;
3. the cluster count is the eigengap of that Laplacian: the largest jump
   between consecutive eigenvalues among the smallest ``max_clusters + 1``,
   below which every eigenvalue is near zero (nearly disconnected groups).

A cluster is suspicious when its mean heatmap lies *away* from where the
rest of its class looks, when it is *compact and separated* from them (its
mean silhouette against them), and when it also looks elsewhere than the
other classes do (which says which of two strategies is the usual one).
``suspicion = offset * separation * elsewhere``, in [0, 1].

That needs heterogeneity: a shortcut at the same place on every image (a
watermark, a scanner's frame) makes one cluster, nothing to compare it with.
:func:`region_evidence` therefore also reads the images under a strategy's
region (its hot region, minus where the rest of its class looks):

* **presence**: the region holds something on the strategy's images that the
  other classes' images lack at the same place. Measured as how much filling
  the region from its surroundings changes the pixels: ``1 - change(others) /
  change(members)``. A lesion is present in every class and scores low; a tag
  only on malignant images scores near 1.
* **texture**: the same comparison on the images' fine detail (each pixel
  minus the mean of its neighbourhood): ``1 - detail(others) / detail(members)``.
  A faint texture added over varying skin changes little when filled, since
  the fill error of the skin itself is of its size, but it is nearly all of
  the region's fine detail;
* **stereotypy**: the region's content is a copy, the same on every member
  (up to a small shift), while the rest of the image varies and the region
  has structure of its own: ``1 - median pairwise distance inside / min(the
  same outside, the region's own detail)``. A stamp scores high; a lesion,
  whose shape and colour vary, scores low or negative, and so does the
  near-uniform inside of a dark lesion, which is alike on every member
  without being a copy of anything.

The regions come from the heatmaps, and a heatmap may not point at the
shortcut (a faint texture read by early filters leaves the last layer's map on
the object). :func:`contrast_regions` proposes regions from the images alone:
the compact places where the strategy's images differ from the other classes'
at the same pixels (per-pixel Welch t of colour and of fine detail). A
shortcut that moves has no such place; one that sits still has, whatever the
heatmap says. Presence and texture then say whether it is suspicious
(stereotypy cannot: the members are alike there by the region's choice).

All three are only suspicions: a class defined by an object that the others lack
(a fracture) has presence too. :func:`confirm_proposal` tests the region
behaviourally: fill it on the members (does their prediction change?) and
paste it onto other classes' images (how far does P(class) rise?).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from xai_checks.counterfactual import fill_from_surroundings, insertion_test, removal_test
from xai_checks.errors import XAICheckError
from xai_checks.labels import class_labels

__all__ = [
    "Discovery",
    "Proposal",
    "RegionEvidence",
    "Strategy",
    "confirm_proposal",
    "contrast_regions",
    "discover_strategies",
    "eigengap",
    "propose_region",
    "region_evidence",
]

_SILHOUETTE_SAMPLE = 1000
"""At most this many heatmaps per side in a cluster's silhouette: its cost stays bounded."""
_EVIDENCE_SAMPLE = 64
"""Images per side read for a region's presence, and receivers of its paste test."""
_STEREOTYPY_SAMPLE = 24
"""Members compared pairwise for stereotypy (pairs x shifts stays small)."""
_EVIDENCE_SIDE = 64
"""Images are pooled to at most this side for presence, texture and stereotypy: fast at any
size."""
_CONTRAST_T = 5.0
"""Per-pixel |Welch t| above which a pixel differs between the strategy and the other classes.
Under no difference a 64 x 64 map of four statistics (three colours, fine detail) has a stray
pixel above it in under a tenth of audits (t with ~60 degrees of freedom)."""
_CONTRAST_MIN_PIXELS = 6
"""Smaller components of the pooled contrast map are specks, not regions: stray pixels of
noise are not six joined ones."""
_CONTRAST_MAX_AREA = 0.5
"""A region of more than half the image leaves too little to fill it from, or to compare."""


@dataclass(frozen=True)
class Strategy:
    """One cluster of heatmaps of one class: a way the model reaches that class."""

    class_index: int
    members: Tensor
    """(M,) indices of the cluster's heatmaps in the input, ascending."""
    mean_heatmap: Tensor
    """(r, r) mean relevance distribution of the members (sums to 1)."""
    reference_heatmap: Tensor
    """(r, r) mean distribution of the rest of its class (sums to 1)."""
    offset: float
    """1 - overlap with the rest of its class: 1 = it looks somewhere else entirely."""
    separation: float
    """Mean silhouette of the members against the rest of the class, clipped to [0, 1]."""
    elsewhere: float = 1.0
    """1 - overlap with where the *other classes* look (1 when there are none)."""
    alone: bool = False
    """The only strategy of its class: nothing within the class to compare it with."""

    @property
    def size(self) -> int:
        return int(self.members.numel())

    @property
    def suspicion(self) -> float:
        """The Clever-Hans suspicion in [0, 1]: looking elsewhere, and distinctly so.

        ``offset * separation`` within the class, times ``elsewhere``: of two
        strategies of a class each looks away from the other, and the one that
        looks where the other classes also look (the lesion) is the usual one.
        Zero for a class explained one way only: classes legitimately look at
        different evidence, so a difference between classes alone is no sign of
        a shortcut; one on every image of a class is for the known-region checks.
        """
        return 0.0 if self.alone else self.offset * self.separation * self.elsewhere


@dataclass(frozen=True)
class Discovery:
    """The strategies of every class, most suspicious first."""

    strategies: tuple[Strategy, ...]
    eigenvalues: dict[int, Tensor]
    """Per class, the smallest eigenvalues of the normalised Laplacian (the eigengap's input)."""
    resolution: int
    empty_maps: int = 0
    """Heatmaps with no relevance anywhere: they say nothing about where the model looks."""

    @property
    def cluster_counts(self) -> dict[int, int]:
        counts: dict[int, int] = {}
        for strategy in self.strategies:
            counts[strategy.class_index] = counts.get(strategy.class_index, 0) + 1
        return counts

    def table(self, class_names: Sequence[str] | None = None) -> pd.DataFrame:
        """One row per strategy, ranked: the reviewer's short list.

        ``class`` holds the class names, or the class indices when none are given.
        """
        classes = [s.class_index for s in self.strategies]
        return pd.DataFrame(
            {
                "rank": range(1, len(self.strategies) + 1),
                "class": class_labels(classes, class_names) if class_names else classes,
                "size": [s.size for s in self.strategies],
                "suspicion": [s.suspicion for s in self.strategies],
                "offset": [s.offset for s in self.strategies],
                "separation": [s.separation for s in self.strategies],
                "elsewhere": [s.elsewhere for s in self.strategies],
            }
        )


def discover_strategies(
    heatmaps: Tensor,
    labels: Tensor | Sequence[int],
    *,
    resolution: int = 16,
    n_neighbors: int = 10,
    max_clusters: int = 8,
    max_inside: float = 0.1,
    seed: int = 0,
) -> Discovery:
    """Cluster each class's heatmaps by spectral clustering; score every cluster.

    ``heatmaps`` (N, H, W) non-negative, at any resolution; ``labels`` (N,) the
    class each heatmap explains (usually the prediction). ``max_inside``
    bounds the eigenvalues below the gap (see :func:`eigengap`). Deterministic
    for a given ``seed``.
    """
    from scipy.sparse.csgraph import laplacian
    from sklearn.cluster import SpectralClustering
    from sklearn.neighbors import kneighbors_graph

    if resolution < 2 or n_neighbors < 1 or max_clusters < 1:
        raise XAICheckError(
            "resolution must be >= 2, n_neighbors and max_clusters >= 1; got "
            f"{resolution}, {n_neighbors}, {max_clusters}"
        )
    features, distributions, empty = _features(heatmaps, resolution)
    labels = _check_labels(labels, features.shape[0])
    clusters: list[tuple[int, np.ndarray]] = []
    eigenvalues: dict[int, Tensor] = {}
    for cls in sorted(set(labels.tolist())):
        index = np.flatnonzero(labels.numpy() == cls)
        if index.size < 3:  # too few for a neighbourhood graph: one strategy
            clusters.append((cls, index))
            continue
        try:
            graph = kneighbors_graph(features[index], _neighbours(index.size, n_neighbors))
            affinity = 0.5 * (graph + graph.T)
            values = _smallest_eigenvalues(laplacian(affinity, normed=True), max_clusters + 1)
            eigenvalues[cls] = torch.from_numpy(values)
            count = eigengap(values, max_inside=max_inside)
            if count == 1:
                clusters.append((cls, index))
                continue
            with warnings.catch_warnings():
                # Disconnected graphs are expected: distinct strategies are what we look for.
                warnings.filterwarnings("ignore", message="Graph is not fully connected")
                assignment = SpectralClustering(
                    n_clusters=count,
                    affinity="precomputed",
                    assign_labels="cluster_qr",
                    random_state=seed,
                ).fit_predict(affinity)
        except (ValueError, ArithmeticError, RuntimeError) as exc:  # scipy/sklearn numerics
            raise XAICheckError(
                f"clustering the {index.size} heatmaps of class {cls} failed: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        clusters += [(cls, index[assignment == k]) for k in np.unique(assignment)]

    strategies = [
        _score(cls, members, labels.numpy(), features, distributions, seed)
        for cls, members in clusters
    ]
    strategies.sort(key=lambda s: (-s.suspicion, -s.size, s.class_index, int(s.members[0])))
    return Discovery(tuple(strategies), eigenvalues, resolution, empty_maps=empty)


@dataclass(frozen=True)
class Proposal:
    """A strategy's proposed spurious region, and what filling it did to its members."""

    strategy: Strategy
    mask: Tensor
    """(H, W) bool at image resolution."""
    filled: Tensor
    """(H, W) bool: the region actually filled, the mask grown by a margin."""
    flipped: Tensor
    """(M,) whether each member's prediction changed when the region was filled; empty when
    the region is (nothing was filled)."""
    lift: Tensor = field(default_factory=lambda: torch.zeros(0))
    """(R,) per receiving image of another class: the rise in P(class) when the members'
    region is pasted in (its own region filled first). Empty when nothing received it."""

    @property
    def flip_rate(self) -> float:
        return float(self.flipped.float().mean()) if self.flipped.numel() else float("nan")

    @property
    def pull(self) -> float:
        """Mean rise in P(class) the pasted region causes: the behavioural effect, NaN if
        untested."""
        return float(self.lift.mean()) if self.lift.numel() else float("nan")

    @property
    def area(self) -> float:
        return float(self.mask.float().mean())


def propose_region(
    strategy: Strategy, size: tuple[int, int], *, threshold: float = 0.5, distinct: bool = True
) -> Tensor:
    """Where the cluster looks and the others do not: the proposed spurious mask.

    Both mean heatmaps are upsampled to the image ``size`` and thresholded at
    ``threshold`` times their maximum; the proposal is the cluster's region
    minus the region the rest of its class uses, so what the class's other
    strategies rely on (the lesion itself) is never proposed as spurious (the
    whole hot region for a strategy alone in its class). Not
    minus the other classes' region: evidence *against* a class may sit where
    a shortcut for it sits (a model predicting "benign" checks the borders for
    a ruler). May be empty. ``distinct=False``: the whole hot region, for when
    all of a class's strategies look at the same artifact.
    """
    if not 0.0 < threshold < 1.0:
        raise XAICheckError(f"threshold must lie in (0, 1), got {threshold}")
    ours = _hot(strategy.mean_heatmap, size, threshold)
    if strategy.alone or not distinct:  # nothing else in the class to leave out
        return ours
    theirs = _hot(strategy.reference_heatmap, size, threshold)
    return ours & ~theirs


def confirm_proposal(
    model: nn.Module,
    images: Tensor,
    strategy: Strategy,
    mask: Tensor,
    *,
    receivers: Tensor | None = None,
    margin: int | None = None,
    batch_size: int = 64,
    seed: int = 0,
) -> Proposal:
    """Fill the proposed region on the cluster's images and count changed predictions;
    paste it onto ``receivers`` and measure the rise in P(class).

    ``images`` is the whole set the heatmaps came from (a tensor or a lazy
    stack); members are read a batch at a time. The fill covers the region
    grown by ``margin`` pixels (default: half a heatmap cell), since the
    heatmap is coarser than the artifact's edge and a left-over edge keeps a
    shortcut alive. A proposal that flips the strategy's predictions is
    evidence that the region is needed. ``receivers`` (indices of images of
    other classes; at most 64 are used) get the members' region pasted in, as
    the labelled insertion test does with a known artifact: the mean rise in
    P(class), :attr:`Proposal.pull`, is the region's behavioural effect.
    """
    mask = mask.to(torch.bool).cpu()
    height, width = (int(v) for v in images.shape[-2:])
    if mask.ndim != 2 or tuple(mask.shape) != (height, width):
        raise XAICheckError(f"mask must be (H, W) = {(height, width)}, got {tuple(mask.shape)}")
    if not mask.any():  # nothing to fill: no evidence either way (flip rate NaN)
        return Proposal(strategy, mask, mask, torch.zeros(0, dtype=torch.bool))
    if margin is None:
        margin = math.ceil(max(height, width) / strategy.mean_heatmap.shape[-1] / 2)
    filled = _grow(mask, margin)
    if filled.all():
        raise XAICheckError(
            f"the proposed region of a class-{strategy.class_index} strategy, grown by "
            f"{margin} px, covers the whole image: nothing is left to fill it from"
        )
    flipped = []
    for start in range(0, strategy.size, batch_size):
        batch = images[strategy.members[start : start + batch_size]]
        masks = filled.expand(batch.shape[0], height, width)
        # The labels are the explained class: a flip is a change away from it.
        labels = torch.full((batch.shape[0],), strategy.class_index, dtype=torch.long)
        result = removal_test(model, batch, masks, labels, batch_size=batch_size)
        flipped.append(result.flipped)  # decisive flips only (MIN_FLIP_DROP)
    lift = torch.zeros(0)
    if receivers is not None and receivers.numel():
        lift = _paste_pull(model, images, strategy, filled, receivers, batch_size, seed)
    return Proposal(strategy, mask, filled, torch.cat(flipped), lift)


def _paste_pull(
    model: nn.Module,
    images: Tensor,
    strategy: Strategy,
    region: Tensor,
    receivers: Tensor,
    batch_size: int,
    seed: int,
) -> Tensor:
    """Per receiver, P(class) after the members' region is pasted in, minus before."""
    rng = torch.Generator().manual_seed(seed)
    receivers = _subsample(receivers.long().cpu(), _EVIDENCE_SAMPLE, rng)
    donors = _subsample(strategy.members, _EVIDENCE_SAMPLE, rng)
    index = torch.cat([donors, receivers])
    c = strategy.class_index
    # Receivers are labelled "not the class" whatever they are: the insertion test pastes
    # the class's region onto every image not labelled with it.
    labels = torch.cat([torch.full_like(donors, c), torch.full_like(receivers, c + 1)])
    masks = region.expand(index.numel(), *region.shape)
    result = insertion_test(model, images[index], masks, labels, c, batch_size=batch_size)
    return result.probability - result.baseline


@dataclass(frozen=True)
class RegionEvidence:
    """What the images show under a strategy's region (see the module's docstring)."""

    presence: float
    """1 - change(others) / change(members) when the region is filled, at most 1; NaN with
    no images of other classes to compare with."""
    stereotypy: float
    """1 - median pairwise distance inside / min(outside, the region's own detail), at most 1;
    NaN with fewer than three members, or nothing varying to compare with."""
    texture: float = float("nan")
    """1 - fine detail(others) / fine detail(members) in the region, at most 1; NaN as for
    presence."""


def region_evidence(
    images: Tensor, members: Tensor, others: Tensor, region: Tensor, *, seed: int = 0
) -> RegionEvidence:
    """Presence, texture and stereotypy of ``region`` (H, W) bool on a strategy's ``members``.

    ``others`` are indices of images of other classes (predicted, or labelled
    when the model predicts one class only). Reads at most 64 images of each,
    pooled to at most 64 px a side.
    """
    region = region.to(torch.bool).cpu()
    nan = float("nan")
    if not region.any() or region.all():
        return RegionEvidence(nan, nan)
    rng = torch.Generator().manual_seed(seed)
    members = _subsample(members.long().cpu(), _EVIDENCE_SAMPLE, rng)
    mine, small = _pooled(images[members], region)
    presence = texture = nan
    if others.numel():
        theirs, _ = _pooled(images[_subsample(others.long().cpu(), _EVIDENCE_SAMPLE, rng)], region)
        presence = _share_only_mine(_fill_change(mine, small), _fill_change(theirs, small))
        texture = _share_only_mine(_fine_detail(mine, small), _fine_detail(theirs, small))
    stereotypy = _stereotypy(mine[:_STEREOTYPY_SAMPLE], small) if mine.shape[0] >= 3 else nan
    return RegionEvidence(presence, stereotypy, texture)


def contrast_regions(
    images: Tensor,
    members: Tensor,
    others: Tensor,
    *,
    most: int = 3,
    seed: int = 0,
) -> list[Tensor]:
    """Where the members' images differ from the others' at the same pixels, with no heatmap.

    Per pooled pixel, the Welch t between members and ``others`` of each
    colour channel and of the fine detail's magnitude; pixels above
    ``_CONTRAST_T`` joined across one-pixel gaps, split into connected
    components. Returns the ``most`` strongest components (summed |t|), then
    their union when there are several (a shortcut in parts: four shaded
    corners), each (H, W) bool at image size; empty when nothing differs at a
    fixed place (a moving artifact, or no artifact).
    """
    from scipy import ndimage

    if members.numel() < 3 or others.numel() < 3:
        return []
    rng = torch.Generator().manual_seed(seed)
    height, width = (int(v) for v in images.shape[-2:])
    mine = _pooled_images(images[_subsample(members.long().cpu(), _EVIDENCE_SAMPLE, rng)])
    theirs = _pooled_images(images[_subsample(others.long().cpu(), _EVIDENCE_SAMPLE, rng)])
    colour = _welch_t(mine, theirs).abs().amax(dim=0)
    detail = _welch_t(
        _detail(mine).abs().mean(dim=1, keepdim=True),
        _detail(theirs).abs().mean(dim=1, keepdim=True),
    ).abs()[0]
    strength = torch.maximum(colour, detail)
    significant = strength > _CONTRAST_T
    joined = F.max_pool2d(significant[None, None].float(), 3, stride=1, padding=1)[0, 0] > 0
    labelled, count = ndimage.label(joined.numpy(), structure=np.ones((3, 3)))
    labelled = torch.from_numpy(labelled)
    pooled_area = float(significant.numel())
    factor = max(1, math.ceil(max(height, width) / _EVIDENCE_SIDE))  # as _pooled_images pools
    components = []
    for k in range(1, count + 1):
        part = (labelled == k) & significant
        size = int(part.sum())
        if size < _CONTRAST_MIN_PIXELS or size / pooled_area > _CONTRAST_MAX_AREA:
            continue
        # Each pooled pixel back to the block of pixels it was pooled from.
        region = part.repeat_interleave(factor, 0).repeat_interleave(factor, 1)[:height, :width]
        components.append((float(strength[part].sum()), region))
    components.sort(key=lambda c: -c[0])
    regions = [region for _, region in components[:most]]
    if len(regions) > 1:
        union = torch.stack(regions).any(dim=0)
        if float(union.float().mean()) <= _CONTRAST_MAX_AREA:
            regions.append(union)
    return regions


def _pooled_images(images: Tensor) -> Tensor:
    """Images at most ``_EVIDENCE_SIDE`` px a side, area-pooled, as float on the CPU."""
    images = images.detach().float().cpu()
    factor = max(1, math.ceil(max(images.shape[-2:]) / _EVIDENCE_SIDE))
    return images if factor == 1 else F.avg_pool2d(images, factor, ceil_mode=True)


def _welch_t(a: Tensor, b: Tensor) -> Tensor:
    """Per-position Welch t of two samples (N, ...) and (M, ...)."""
    spread = a.var(dim=0) / a.shape[0] + b.var(dim=0) / b.shape[0]
    return (a.mean(dim=0) - b.mean(dim=0)) / spread.clamp_min(1e-12).sqrt()


def _share_only_mine(mine: float, theirs: float) -> float:
    """1 - theirs / mine, at most 1: how much of the members' amount the others lack."""
    return min(1.0, 1.0 - theirs / mine) if mine > 0 else float("nan")


def _subsample(index: Tensor, most: int, rng: torch.Generator) -> Tensor:
    if index.numel() <= most:
        return index
    return index[torch.randperm(index.numel(), generator=rng)[:most]].sort().values


def _pooled(images: Tensor, region: Tensor) -> tuple[Tensor, Tensor]:
    """Images and region at most ``_EVIDENCE_SIDE`` px a side (area-pooled; region: any)."""
    factor = max(1, math.ceil(max(images.shape[-2:]) / _EVIDENCE_SIDE))
    if factor == 1:
        return _pooled_images(images), region
    pooled = F.max_pool2d(region[None, None].float(), factor, ceil_mode=True)[0, 0] > 0
    return _pooled_images(images), pooled


def _fill_change(images: Tensor, region: Tensor) -> float:
    """Mean absolute change inside ``region`` when it is filled from its surroundings."""
    filled = fill_from_surroundings(images, region.expand(images.shape[0], *region.shape))
    return float((images - filled).abs().mean(dim=1)[:, region].mean())


def _fine_detail(images: Tensor, region: Tensor) -> float:
    """Mean absolute fine detail inside ``region`` (see :func:`_detail`)."""
    return float(_detail(images).abs().mean(dim=1)[:, region].mean())


def _detail(images: Tensor) -> Tensor:
    """Each pixel minus its neighbourhood's mean (a box of about 1/12 of the side), so slow
    shading and colour drop out."""
    box = max(3, max(images.shape[-2:]) // 12 | 1)
    padded = F.pad(images, (box // 2,) * 4, mode="replicate")
    return images - F.avg_pool2d(padded, box, stride=1)


def _own_detail(images: Tensor, region: Tensor) -> float:
    """Mean absolute deviation of each image's region from its own mean colour there."""
    inside = images[:, :, region]  # (M, C, K)
    return float((inside - inside.mean(dim=-1, keepdim=True)).abs().mean())


def _stereotypy(images: Tensor, region: Tensor) -> float:
    """1 - (median pairwise distance inside the region) / min(the same outside it, the
    region's own detail).

    Each pair is compared at its best shift within 1/16 of the image side, so a
    copy placed with a little jitter still counts as a copy. Measured against
    the region's own detail too: a near-uniform patch (the inside of a dark
    lesion) differs little between images without holding any copied pattern.
    """
    m = images.shape[0]
    side = max(images.shape[-2:])
    reach = max(1, side // 16)
    step = max(1, reach // 2)
    inside, outside = region.float(), (~region).float()
    best_in = torch.full((m, m), math.inf)
    best_out = torch.full((m, m), math.inf)
    for dy in range(-reach, reach + 1, step):
        for dx in range(-reach, reach + 1, step):
            shifted = torch.roll(images, (dy, dx), dims=(2, 3))
            distance = (images[:, None] - shifted[None]).abs().mean(dim=2)  # (m, m, H, W)
            best_in = torch.minimum(best_in, (distance * inside).sum((2, 3)) / inside.sum())
            best_out = torch.minimum(best_out, (distance * outside).sum((2, 3)) / outside.sum())
    pairs = ~torch.eye(m, dtype=torch.bool)
    spread = min(float(best_out[pairs].median()), _own_detail(images, region))
    if spread <= 0:
        return float("nan")  # identical outside, or a flat region: nothing varies to compare
    return min(1.0, 1.0 - float(best_in[pairs].median()) / spread)


def _grow(mask: Tensor, margin: int) -> Tensor:
    if margin <= 0:
        return mask
    window = 2 * margin + 1
    return F.max_pool2d(mask[None, None].float(), window, stride=1, padding=margin)[0, 0] > 0


def eigengap(values: np.ndarray, *, max_inside: float = 0.1) -> int:
    """The cluster count: the largest gap after the ``k`` smallest eigenvalues.

    Only splits whose ``k`` eigenvalues are all at most ``max_inside`` count:
    near zero means nearly disconnected groups of heatmaps (for the normalised
    Laplacian, a small cut between them). A continuum of similar heatmaps has
    no such eigenvalues and stays one strategy, wherever its largest gap is.
    """
    values = np.asarray(values, dtype=float)
    best, count = -1.0, 1
    for k in range(1, values.size):
        if values[k - 1] > max_inside:
            break
        if values[k] - values[k - 1] > best:
            best, count = values[k] - values[k - 1], k
    return count


def _features(heatmaps: Tensor, resolution: int) -> tuple[np.ndarray, np.ndarray, int]:
    """(N, r*r) Hellinger features, (N, r*r) relevance distributions, and the empty maps."""
    if not isinstance(heatmaps, Tensor) or heatmaps.ndim != 3 or heatmaps.shape[0] == 0:
        shape = tuple(heatmaps.shape) if isinstance(heatmaps, Tensor) else type(heatmaps).__name__
        raise XAICheckError(f"heatmaps must be a (N, H, W) tensor with N >= 1, got {shape}")
    maps = heatmaps.detach().float().cpu()
    if not torch.isfinite(maps).all():
        raise XAICheckError("heatmaps contain NaN or Inf: nothing to cluster")
    small = F.adaptive_avg_pool2d(maps.clamp_min(0).unsqueeze(1), resolution).flatten(1)
    total = small.sum(dim=1, keepdim=True)
    # A heatmap with no relevance at all says nothing about where: spread it evenly.
    distributions = torch.where(total > 0, small / total.clamp_min(1e-12), 1.0 / small.shape[1])
    empty = int((total <= 0).sum())
    return distributions.sqrt().double().numpy(), distributions.double().numpy(), empty


def _check_labels(labels: Tensor | Sequence[int], n: int) -> Tensor:
    labels = torch.as_tensor(labels).cpu()
    if labels.shape != (n,) or labels.is_floating_point():
        raise XAICheckError(f"labels must be {n} integer class indices, got {tuple(labels.shape)}")
    return labels.long()


def _neighbours(n: int, most: int) -> int:
    """Neighbours per heatmap: ``most``, fewer for small classes (about sqrt(n)), so a
    strategy of a handful of images is not tied to the others by its neighbour count."""
    return max(1, min(most, n - 1, max(3, round(math.sqrt(n)))))


def _smallest_eigenvalues(matrix, count: int) -> np.ndarray:
    """The ``count`` smallest eigenvalues of a normalised Laplacian, ascending.

    Dense for small classes; for large ones the largest of ``2I - L`` by
    Lanczos, which converges fast where the smallest of ``L`` would not.
    """
    n = matrix.shape[0]
    count = min(count, n)
    if n <= 1500:
        return np.linalg.eigvalsh(matrix.toarray())[:count].clip(min=0.0)
    from scipy.sparse import identity
    from scipy.sparse.linalg import eigsh

    shifted = 2.0 * identity(n, format="csr") - matrix
    largest = eigsh(shifted, k=count, which="LA", return_eigenvectors=False, tol=1e-6)
    return np.sort(2.0 - largest).clip(min=0.0)


def _score(
    cls: int,
    members: np.ndarray,
    labels: np.ndarray,
    features: np.ndarray,
    distributions: np.ndarray,
    seed: int,
) -> Strategy:
    """Offset and separation against the rest of the class; elsewhere against other classes."""
    from sklearn.metrics import silhouette_samples

    side = round(distributions.shape[1] ** 0.5)
    mean = distributions[members].mean(axis=0)
    mates = labels == cls
    mates[members] = False
    reference = np.flatnonzero(mates)
    other_classes = np.flatnonzero(labels != cls)
    offset = separation = 0.0
    ref_mean = mean
    if reference.size:
        ref_mean = distributions[reference].mean(axis=0)
        offset = _apart(mean, ref_mean)
        rng = np.random.default_rng(seed)
        inside, outside = _sample(members, rng), _sample(reference, rng)
        if inside.size + outside.size >= 3:
            rows = np.concatenate([inside, outside])
            groups = np.r_[np.zeros(inside.size), np.ones(outside.size)]
            silhouette = silhouette_samples(features[rows], groups)[: inside.size]
            separation = float(np.clip(silhouette.mean(), 0.0, 1.0))
    others_mean = distributions[other_classes].mean(axis=0) if other_classes.size else None
    return Strategy(
        class_index=int(cls),
        members=torch.from_numpy(np.sort(members)).long(),
        mean_heatmap=_grid(mean, side),
        reference_heatmap=_grid(ref_mean, side),
        offset=offset,
        separation=separation,
        elsewhere=_apart(mean, others_mean) if others_mean is not None else 1.0,
        alone=reference.size == 0,
    )


def _sample(index: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """At most ``_SILHOUETTE_SAMPLE`` of ``index``: silhouettes cost quadratic memory."""
    if index.size <= _SILHOUETTE_SAMPLE:
        return index
    return np.sort(rng.choice(index, _SILHOUETTE_SAMPLE, replace=False))


def _apart(p: np.ndarray, q: np.ndarray) -> float:
    """1 - the overlap of two relevance distributions (histogram intersection), in [0, 1]."""
    return float(np.clip(1.0 - np.minimum(p, q).sum(), 0.0, 1.0))


def _grid(distribution: np.ndarray, side: int) -> Tensor:
    return torch.from_numpy(distribution.reshape(side, side)).float()


def _hot(distribution: Tensor, size: tuple[int, int], threshold: float) -> Tensor:
    upsampled = F.interpolate(
        distribution[None, None], size=size, mode="bilinear", align_corners=False
    )[0, 0]
    peak = upsampled.max()
    if peak <= 0:
        return torch.zeros(size, dtype=torch.bool)
    return upsampled >= threshold * peak
