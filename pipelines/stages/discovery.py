"""The discovery stage: unlabelled shortcuts found by clustering heatmaps (SpRAy).

Runs on the heatmaps the CAM stage already computed (``MethodAudit.low_res``
of the gating method, 16 x 16 per image), so it costs a clustering per class
plus, for each of the few most suspicious strategies, one fill-and-predict
pass over its images. Needs no spurious masks: on an audit set without any it
is the check that gates (with the sanity check beside it).

A strategy's suspicion is the largest of four lines of evidence, and the
table names the ones above the bound (``evidence``): ``clusters`` (SpRAy: it
looks elsewhere than the rest of its class, distinctly), ``presence`` (its
region holds something the other classes' images lack there), ``texture``
(the same for fine detail: a faint texture) and ``stereotypy`` (the same
copy on every member). The last three need no second cluster, so a shortcut
that sits at the same place on every image is found. They are read under the
strategy's heatmap region and, when nothing there is suspect, under the places
where its images differ from the other classes' at the same pixels: a heatmap
need not outline a faint texture the model uses (``evidence`` then says the
region came from the images).

Contribution to the verdict: a suspicious strategy is a *warning*; it
*blocks* (``status`` confirmed) only when its region is confirmed
behaviourally: filling it flips more than ``max_flip_rate`` of its
predictions, or pasting it onto other classes' images raises P(class) by
more than ``max_lift`` on average (``pull``, with a bootstrap CI). The table
also gives the share of the class's predictions the region decides
(``decided_share``, with a CI): for a partial shortcut, how much of the
class rides on it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import pandas as pd
import torch
from torch import Tensor, nn

from pipelines.errors import GateError
from pipelines.evidence.columns import DISCOVERY_COLUMNS
from pipelines.policy.schema import DiscoveryChecks
from pipelines.stages.cam import AuditResult
from xai_checks.discovery import (
    Discovery,
    Proposal,
    RegionEvidence,
    Strategy,
    confirm_proposal,
    contrast_regions,
    discover_strategies,
    propose_region,
    region_evidence,
)
from xai_checks.labels import class_label
from xai_checks.metrics import Estimate, bootstrap_ci

__all__ = ["DiscoveryEvidence", "discovery_audit"]

PREFIX = "discovery"
RESOLUTION = 16
"""Side the heatmaps are pooled to before clustering: the CAM stage keeps 16 x 16 maps."""
MIN_OTHERS = 3
"""Fewer images predicted as other classes than this: compare with the other *labels*."""


@dataclass(frozen=True)
class DiscoveryEvidence:
    discovery: Discovery
    proposals: dict[int, Proposal]
    """Tested proposals by rank (1-based), most suspicious first."""
    table: pd.DataFrame
    """``DISCOVERY_COLUMNS``, one row per strategy."""
    class_names: tuple[str, ...] | None
    low_res: Tensor
    """(N, r, r) every image's pooled heatmap, for the member overlays."""

    def class_name(self, index: int) -> str:
        return class_label(index, self.class_names)

    def metrics(self) -> dict[str, float]:
        table = self.table

        def top(column: str) -> float:
            values = table[column].dropna()
            return float(values.max()) if len(values) else math.nan

        return {
            f"{PREFIX}.strategies": float(len(table)),
            f"{PREFIX}.top_suspicion": float(table["suspicion"].max()) if len(table) else 0.0,
            f"{PREFIX}.top_flip_rate": top("flip_rate"),
            f"{PREFIX}.top_pull": top("pull"),
            f"{PREFIX}.top_decided_share": top("decided_share"),
            f"{PREFIX}.suspicious": float((table["status"] != "ok").sum()),
            f"{PREFIX}.confirmed": float((table["status"] == "confirmed").sum()),
        }

    def region_masks(self, ranks: Sequence[int] | None = None) -> tuple[Tensor, list[int]]:
        """(N, H, W) bool: each chosen strategy's filled region on its members' images.

        ``ranks`` pick strategies by rank (1-based); default: the confirmed ones.
        Every other image gets the union of the chosen regions, where the artifact
        would sit: a labelled audit set gives every row a region, and removal and
        insertion need images of the other classes to act on. Returns the masks
        and the ranks used: the labelled audit set a confirmed shortcut becomes,
        so later versions are gated on it exactly.
        """
        table = self.table
        if ranks is None:
            ranks = [int(r) for r in table.loc[table["status"] == "confirmed", "rank"]]
        untested = [r for r in ranks if r not in self.proposals or not self.proposals[r].mask.any()]
        if untested:
            tested = sorted(r for r, p in self.proposals.items() if p.mask.any())
            raise GateError(
                f"strategy rank(s) {untested} have no tested region; "
                f"tested ranks: {tested or 'none'}"
            )
        n = int(self.low_res.shape[0])
        masks: Tensor | None = None
        for rank in ranks:
            proposal = self.proposals[rank]
            if masks is None:
                masks = torch.zeros(n, *proposal.filled.shape, dtype=torch.bool)
            masks[proposal.strategy.members] |= proposal.filled
        if masks is None:
            raise GateError("no strategy to write: none was confirmed and none was named")
        unmarked = ~masks.flatten(1).any(dim=1)
        masks[unmarked] = masks.any(dim=0)
        return masks, list(ranks)

    def warnings(self) -> list[str]:
        """One line per suspicious strategy that filling did not confirm: shown, not blocking."""
        out = []
        for row in self.table.to_dict("records"):
            if row["status"] != "suspicious":
                continue
            if not math.isnan(row["flip_rate"]):
                tested = (
                    f"filling its proposed region flips {row['flip_rate']:.2f} of its predictions"
                    f" and pasting it raises P(class) by {_num(row['pull'])}"
                )
            elif row["proposed_area"] == 0:
                tested = "its proposed region is empty (it looks where the rest of its class does)"
            else:
                tested = "its region was not tested (below min_cluster_size or max_proposals)"
            out.append(
                f"discovery: strategy #{row['rank']} of class {row['class']!r} ({row['size']} "
                f"images) is suspicious by {row['evidence']} (suspicion "
                f"{row['suspicion']:.2f}); {tested}: review xai/discovery_samples.png"
            )
        return out


def _num(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.2f}"


def discovery_audit(
    model: nn.Module,
    images: Tensor,
    audit: AuditResult,
    rule: DiscoveryChecks,
    *,
    labels: Tensor | None = None,
    class_names: Sequence[str] | None = None,
    batch_size: int = 32,
) -> DiscoveryEvidence:
    """Cluster the gating method's heatmaps per predicted class; test the suspicious ones.

    ``images`` are the audit set's (tensor or lazy stack); ``audit`` the CAM
    stage's result on them, whose pooled heatmaps and predictions are used.
    ``labels``, when known, stand in for the other classes when the model
    predicts (nearly) every image as one class.
    """
    discovery = discover_strategies(
        audit.gating.low_res,
        audit.predictions,
        resolution=RESOLUTION,
        n_neighbors=rule.n_neighbors,
        max_clusters=rule.max_clusters,
    )
    total = int(audit.predictions.numel())
    if discovery.empty_maps * 2 > total:
        raise GateError(
            f"discovery: {discovery.empty_maps} of {total} heatmaps have no relevance anywhere, "
            "so where the model looks cannot be compared; check the target layer"
        )
    size = (int(images.shape[-2]), int(images.shape[-1]))
    predictions = audit.predictions.cpu()
    truth = torch.as_tensor(labels).cpu().long() if labels is not None else None
    examined = [
        _examine(images, strategy, _others(strategy.class_index, predictions, truth), size, rule)
        for strategy in discovery.strategies
    ]
    examined.sort(key=lambda e: -e.suspicion)
    discovery = replace(discovery, strategies=tuple(e.strategy for e in examined))

    proposals: dict[int, Proposal] = {}
    tested = 0
    for rank, item in enumerate(examined, start=1):
        if tested >= rule.max_proposals:
            break
        if item.suspicion <= rule.max_suspicion:
            break  # ranked: no later strategy is suspicious either
        if item.strategy.size < rule.min_cluster_size:
            continue
        proposals[rank] = confirm_proposal(
            model, images, item.strategy, item.region, receivers=item.others, batch_size=batch_size
        )
        tested += bool(item.region.any())  # an empty region is listed, and its slot goes on
    names = tuple(class_names) if class_names is not None else None
    table = _table(examined, proposals, predictions, rule, names)
    return DiscoveryEvidence(discovery, proposals, table, names, audit.gating.low_res)


@dataclass(frozen=True)
class _Examined:
    """A strategy with its proposed region and what the images show under it."""

    strategy: Strategy
    region: Tensor
    others: Tensor
    evidence: RegionEvidence
    from_heatmap: bool = True
    """False: the region is where the images differ from the other classes' (the heatmap
    did not point there)."""

    @property
    def lines(self) -> dict[str, float]:
        return {
            "clusters": self.strategy.suspicion,
            "presence": self.evidence.presence,
            "texture": self.evidence.texture,
            "stereotypy": self.evidence.stereotypy,
        }

    @property
    def suspicion(self) -> float:
        return max((v for v in self.lines.values() if not math.isnan(v)), default=0.0)

    @property
    def evidence_suspicion(self) -> float:
        """What the images under the region say, leaving the clusters aside."""
        evidence = self.evidence
        values = [v for v in (evidence.presence, evidence.texture, evidence.stereotypy) if v == v]
        return max(values, default=-math.inf)

    def evidence_above(self, bound: float) -> str:
        above = [f"{name} {value:.2f}" for name, value in self.lines.items() if value > bound]
        if not above:
            return "none"
        origin = "" if self.from_heatmap else " (region: where its images differ, not its heatmap)"
        return ", ".join(above) + origin


def _examine(
    images: Tensor, strategy: Strategy, others: Tensor, size: tuple[int, int], rule: DiscoveryChecks
) -> _Examined:
    """The strategy's region and its evidence: the part only it looks at; or, when that says
    less, its whole hot region (its whole class looks at the same artifact); or, when neither
    is suspect, a place where its images differ from the other classes' (its heatmap does not
    point at it, or not sharply)."""
    distinct = propose_region(strategy, size, threshold=rule.mask_threshold)
    if strategy.size < rule.min_cluster_size:
        return _Examined(strategy, distinct, others, RegionEvidence(math.nan, math.nan, math.nan))
    candidates = [
        _Examined(
            strategy, distinct, others, region_evidence(images, strategy.members, others, distinct)
        )
    ]
    whole = propose_region(strategy, size, threshold=rule.mask_threshold, distinct=False)
    if not torch.equal(whole, distinct):
        evidence = region_evidence(images, strategy.members, others, whole)
        candidates.append(_Examined(strategy, whole, others, evidence))
    best = max(candidates, key=lambda e: e.evidence_suspicion)
    if best.suspicion > rule.max_suspicion:
        # The heatmap's region is suspect: test it. The images' contrast is tighter than a
        # moving artifact (a ruler's ends vary), and filling part of one proves nothing.
        return best
    for region in contrast_regions(images, strategy.members, others):
        # Chosen because the members are alike there and unlike the others, such a region
        # holds no copy the others lack by that alone: presence and texture judge it.
        evidence = replace(
            region_evidence(images, strategy.members, others, region), stereotypy=math.nan
        )
        candidates.append(_Examined(strategy, region, others, evidence, from_heatmap=False))
    # Ties go to the heatmap's region (first): it is where the model says it looks.
    return max(candidates, key=lambda e: e.evidence_suspicion)


def _others(cls: int, predictions: Tensor, labels: Tensor | None) -> Tensor:
    """Images of other classes: predicted so, or labelled so when the model says one class."""
    predicted = (predictions != cls).nonzero().flatten()
    if predicted.numel() >= MIN_OTHERS or labels is None:
        return predicted
    return (labels != cls).nonzero().flatten()


def _table(
    examined: list[_Examined],
    proposals: dict[int, Proposal],
    predictions: Tensor,
    rule: DiscoveryChecks,
    class_names: tuple[str, ...] | None,
) -> pd.DataFrame:
    discovery = Discovery(tuple(e.strategy for e in examined), {}, RESOLUTION)
    table = discovery.table(class_names)
    table["clusters"] = table["suspicion"]
    table["suspicion"] = [e.suspicion for e in examined]
    table["evidence"] = [e.evidence_above(rule.max_suspicion) for e in examined]
    table["presence"] = [e.evidence.presence for e in examined]
    table["texture"] = [e.evidence.texture for e in examined]
    table["stereotypy"] = [e.evidence.stereotypy for e in examined]
    rows = []
    for rank in range(1, len(examined) + 1):
        proposal = proposals.get(rank)
        row = dict.fromkeys(_TESTED_COLUMNS, math.nan)
        if proposal is not None:
            row["proposed_area"] = proposal.area
            row["flip_rate"] = proposal.flip_rate
            pull = bootstrap_ci(proposal.lift)
            row |= {"pull": pull.mean, "pull_ci_low": pull.low, "pull_ci_high": pull.high}
            if proposal.flipped.numel():
                decided = _decided(proposal, predictions)
                row |= {
                    "decided_share": decided.mean,
                    "decided_ci_low": decided.low,
                    "decided_ci_high": decided.high,
                }
        rows.append(row)
    for column in _TESTED_COLUMNS:
        table[column] = [row[column] for row in rows]
    suspicious = table["suspicion"] > rule.max_suspicion
    confirmed = suspicious & (
        (table["flip_rate"] > rule.max_flip_rate) | (table["pull"] > rule.max_lift)
    )
    table["status"] = ["ok"] * len(table)
    table.loc[suspicious, "status"] = "suspicious"
    table.loc[confirmed, "status"] = "confirmed"
    return table[list(DISCOVERY_COLUMNS)]


_TESTED_COLUMNS = DISCOVERY_COLUMNS[DISCOVERY_COLUMNS.index("proposed_area") : -1]
"""What testing a region adds to a row (null where untested): the columns before ``status``."""


def _decided(proposal: Proposal, predictions: Tensor) -> Estimate:
    """Share of all the class's predictions that filling the region changes, with a CI."""
    cls = proposal.strategy.class_index
    of_class = (predictions == cls).nonzero().flatten()
    changed = torch.zeros(predictions.shape[0])
    changed[proposal.strategy.members] = proposal.flipped.float()
    return bootstrap_ci(changed[of_class])
