"""The evidence of an image gate run: CAM audit, counterfactuals, sanity and discovery."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import pandas as pd

from pipelines.evidence.base import EvidenceValidation, settle_attribution
from pipelines.evidence.columns import UNSCORED_COLUMNS
from pipelines.evidence.expectations import discovery_checks, sanity_checks, score_checks
from pipelines.evidence.gx import run_checks
from pipelines.evidence.informative import class_count, uninformative_reasons
from pipelines.stages.cam import AuditResult
from pipelines.stages.counterfactual import CounterfactualEvidence
from pipelines.stages.discovery import DiscoveryEvidence
from pipelines.stages.precision import PrecisionEvidence
from pipelines.stages.sanity import SanityEvidence
from xai_checks.labels import class_label

if TYPE_CHECKING:
    from matplotlib.figure import Figure
    from torch import Tensor

    from pipelines.policy.schema import AuditRules

__all__ = ["ImageEvidence"]


@dataclass(frozen=True)
class ImageEvidence:
    """The CAM audit, plus the counterfactual, sanity and discovery stages when they ran.

    ``regions`` is False for an audit set without spurious masks: the CAM
    scores then measure nothing and only feed discovery, so they are neither
    gated nor logged.

    ``images``, ``class_names`` and ``masks`` are the audit set's, for the
    review figures; images and masks may be lazy stacks of files.
    """

    audit: AuditResult
    counterfactual: CounterfactualEvidence | None = None
    sanity: SanityEvidence | None = None
    images: Tensor | None = None
    class_names: tuple[str, ...] | None = None
    masks: Tensor | None = None
    discovery: DiscoveryEvidence | None = None
    regions: bool = True
    evidence_lines: tuple[str, ...] = ()
    """The checks the verdict rests on (the ``xai_gate.checks`` tag)."""
    modality: Literal["image"] = "image"
    precision: PrecisionEvidence | None = None
    """The precision probe, when the policy asked for bf16 or fp16."""

    @property
    def summary(self) -> dict[str, float | int | str]:
        return self.audit.summary

    def pages(self) -> dict[str, str]:
        """HTML artifacts: none for images."""
        return {}

    def score_table(self) -> pd.DataFrame:
        """One row per image: CAM scores, then counterfactual columns."""
        if not self.regions:
            return self.audit.scores[list(UNSCORED_COLUMNS)]
        if self.counterfactual is None:
            return self.audit.scores
        return pd.concat([self.audit.scores, self.counterfactual.columns], axis=1)

    def validate(self, rules: AuditRules) -> EvidenceValidation:
        scores = run_checks(
            self.score_table(),
            score_checks(rules, counterfactual=self.counterfactual is not None)
            if self.regions
            else score_checks(rules, regions=False, required=UNSCORED_COLUMNS),
            suite="xai-gate-scores",
        )
        scores, notes = settle_attribution(
            scores, rules, behaviour_ran=self.regions and self.counterfactual is not None
        )
        sanity = None
        if self.sanity is not None:
            steps = len(self.sanity.result.layers)
            checks = sanity_checks(rules, steps=steps)
            sanity = run_checks(self.sanity.table, checks, suite="xai-gate-sanity")
        discovery = None
        if self.discovery is not None:
            table = self.discovery.table
            checks = discovery_checks(rules, table)
            discovery = run_checks(table, checks, suite="xai-gate-discovery")
        table = self.audit.scores
        uninformative = uninformative_reasons(
            table["label"],
            table["prediction"],
            n_classes=class_count(self.class_names, table),
            pixel_spread=self.audit.pixel_spread.tolist() or None,
            ids=table["image_id"].tolist(),
        )
        return EvidenceValidation(scores, sanity, discovery, notes, tuple(uninformative))

    def metrics(self) -> dict[str, float]:
        out = (
            self.audit.metrics() if self.regions else {"accuracy": self.audit.metrics()["accuracy"]}
        )
        for stage in (self.counterfactual, self.sanity, self.discovery, self.precision):
            if stage is not None:
                out |= stage.metrics()
        return out

    def warnings(self) -> list[str]:
        """Findings shown in the report that do not block: unconfirmed suspicious strategies,
        a refused reduced precision."""
        return [
            *(self.discovery.warnings() if self.discovery is not None else []),
            *(self.precision.warnings() if self.precision is not None else []),
        ]

    def report_tables(self) -> dict[str, pd.DataFrame]:
        """Short tables the report shows under a heading."""
        if self.discovery is None:
            return {}
        return {"Discovered strategies (most suspicious first)": self.discovery.table}

    def series(self) -> dict[str, list[float]]:
        return self.sanity.series() if self.sanity is not None else {}

    def tables(self) -> dict[str, pd.DataFrame]:
        tables = {"xai/scores.csv": self.score_table()}
        if self.sanity is not None:
            tables["xai/sanity.csv"] = self.sanity.table
        if self.discovery is not None:
            tables["xai/discovery.csv"] = self.discovery.table
        return tables

    def figures(self, rules: AuditRules, title: str) -> dict[str, Callable[[], Figure]]:
        """Figure builders by artifact path; drawn only when logged."""
        from pipelines.report import plots

        class_names, images, masks = self.class_names, self.images, self.masks

        def name(index: Any) -> str:
            return class_label(int(index), class_names)

        figures: dict[str, Callable[[], Figure]] = {}
        for method, result in self.audit.methods.items():
            # Without regions nothing is "worst": only the first images are shown.
            worst = (
                (("overlays", result.worst, "worst spurious mass first"),) if self.regions else ()
            )
            for kind, cases, subtitle in (
                *worst,
                ("samples", result.samples, "first images of the audit set"),
            ):
                if len(cases.rows):
                    figures[f"xai/{method}_{kind}.png"] = lambda c=cases, m=method, s=subtitle: (
                        plots.overlay_grid(c, title=f"{title}: {m} ({s})")
                    )
        if self.counterfactual is not None and images is not None and masks is not None:
            cf = self.counterfactual
            figures["xai/counterfactual_removal.png"] = lambda: plots.removal_grid(
                cf, images, masks, name, title=title
            )
            figures["xai/counterfactual_insertion.png"] = lambda: plots.insertion_grid(
                cf, images, masks, name, title=title
            )
        if self.sanity is not None:
            sanity = self.sanity
            figures["xai/sanity.png"] = lambda: plots.sanity_figure(
                sanity, threshold=rules.sanity.max_correlation, title=title
            )
        if self.discovery is not None and images is not None:
            figures |= _discovery_figures(self.discovery, images, title)
        return figures


def _discovery_figures(
    discovery: DiscoveryEvidence, images: Tensor, title: str
) -> dict[str, Callable[[], Figure]]:
    from pipelines.report import discovery_plots

    size = (int(images.shape[-2]), int(images.shape[-1]))
    figures: dict[str, Callable[[], Figure]] = {
        "xai/discovery_clusters.png": lambda: discovery_plots.cluster_grid(
            discovery, size, title=title
        ),
        "xai/discovery_samples.png": lambda: discovery_plots.cluster_samples(
            discovery, images, title=title
        ),
    }
    if any(proposal.mask.any() for proposal in discovery.proposals.values()):
        figures["xai/discovery_proposals.png"] = lambda: discovery_plots.proposal_figure(
            discovery, images, title=title
        )
    return figures
