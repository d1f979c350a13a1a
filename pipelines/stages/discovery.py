"""The discovery stage: unlabelled shortcuts found by clustering heatmaps (SpRAy).

Runs on the heatmaps the CAM stage already computed (``MethodAudit.low_res``
of the gating method, 16 x 16 per image), so it costs a clustering per class
plus, for each of the few most suspicious strategies, one fill-and-predict
pass over its images. Needs no spurious masks: on an audit set without any it
is the check that gates (with the sanity check beside it).

Contribution to the verdict: a strategy whose suspicion exceeds the policy's
bound is a *warning*; it *blocks* only when filling its proposed region
flips more than the allowed share of its predictions (``status`` confirmed).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd
from torch import Tensor, nn

from pipelines.errors import GateError
from pipelines.evidence.columns import DISCOVERY_COLUMNS
from pipelines.policy.schema import DiscoveryChecks
from pipelines.stages.cam import AuditResult
from xai_checks.discovery import (
    Discovery,
    Proposal,
    confirm_proposal,
    discover_strategies,
    propose_region,
)
from xai_checks.labels import class_label

__all__ = ["DiscoveryEvidence", "discovery_audit"]

PREFIX = "discovery"
RESOLUTION = 16
"""Side the heatmaps are pooled to before clustering: the CAM stage keeps 16 x 16 maps."""


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
        flips = table["flip_rate"].dropna()
        return {
            f"{PREFIX}.strategies": float(len(table)),
            f"{PREFIX}.top_suspicion": float(table["suspicion"].max()) if len(table) else 0.0,
            f"{PREFIX}.top_flip_rate": float(flips.max()) if len(flips) else math.nan,
            f"{PREFIX}.suspicious": float((table["status"] != "ok").sum()),
            f"{PREFIX}.confirmed": float((table["status"] == "confirmed").sum()),
        }

    def warnings(self) -> list[str]:
        """One line per suspicious strategy that filling did not confirm: shown, not blocking."""
        out = []
        for row in self.table.to_dict("records"):
            if row["status"] != "suspicious":
                continue
            if not math.isnan(row["flip_rate"]):
                tested = (
                    f"filling its proposed region flips {row['flip_rate']:.2f} of its predictions"
                )
            elif row["proposed_area"] == 0:
                tested = "its proposed region is empty (it looks where the rest of its class does)"
            else:
                tested = "its region was not tested (below min_cluster_size or max_proposals)"
            out.append(
                f"discovery: strategy #{row['rank']} of class {row['class']!r} ({row['size']} "
                f"images) looks away from the rest (suspicion {row['suspicion']:.2f}); {tested}: "
                "review xai/discovery_samples.png"
            )
        return out


def discovery_audit(
    model: nn.Module,
    images: Tensor,
    audit: AuditResult,
    rule: DiscoveryChecks,
    *,
    class_names: Sequence[str] | None = None,
    batch_size: int = 32,
) -> DiscoveryEvidence:
    """Cluster the gating method's heatmaps per predicted class; test the suspicious ones.

    ``images`` are the audit set's (tensor or lazy stack); ``audit`` the CAM
    stage's result on them, whose pooled heatmaps and predictions are used.
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
    proposals: dict[int, Proposal] = {}
    tested = 0
    for rank, strategy in enumerate(discovery.strategies, start=1):
        if tested >= rule.max_proposals:
            break
        if strategy.suspicion <= rule.max_suspicion:
            break  # ranked: no later strategy is suspicious either
        if strategy.size < rule.min_cluster_size:
            continue
        mask = propose_region(strategy, size, threshold=rule.mask_threshold)
        proposals[rank] = confirm_proposal(model, images, strategy, mask, batch_size=batch_size)
        tested += bool(mask.any())  # an empty region is listed, and its slot goes on
    names = tuple(class_names) if class_names is not None else None
    table = _table(discovery, proposals, rule, names)
    return DiscoveryEvidence(discovery, proposals, table, names, audit.gating.low_res)


def _table(
    discovery: Discovery,
    proposals: dict[int, Proposal],
    rule: DiscoveryChecks,
    class_names: tuple[str, ...] | None,
) -> pd.DataFrame:
    table = discovery.table(class_names)
    table["proposed_area"] = [
        proposals[r].area if r in proposals else math.nan for r in table["rank"]
    ]
    table["flip_rate"] = [
        proposals[r].flip_rate if r in proposals else math.nan for r in table["rank"]
    ]
    suspicious = table["suspicion"] > rule.max_suspicion
    confirmed = suspicious & (table["flip_rate"] > rule.max_flip_rate)
    table["status"] = ["ok"] * len(table)
    table.loc[suspicious, "status"] = "suspicious"
    table.loc[confirmed, "status"] = "confirmed"
    return table[list(DISCOVERY_COLUMNS)]
