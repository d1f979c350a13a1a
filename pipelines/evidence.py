"""All lines of evidence of one gate run: what is validated, logged and drawn."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pandas as pd

from pipelines.audit import AuditResult
from pipelines.audit_texts import TextAuditResult
from pipelines.counterfactual import CounterfactualEvidence
from pipelines.discovery import DiscoveryEvidence
from pipelines.policy import (
    TEXT_SCORE_COLUMNS,
    UNSCORED_COLUMNS,
    Thresholds,
    discovery_checks,
    sanity_checks,
    score_checks,
)
from pipelines.sanity import SanityEvidence
from pipelines.validation import ValidationReport, run_checks

if TYPE_CHECKING:
    from matplotlib.figure import Figure
    from torch import Tensor

__all__ = ["GateEvidence", "TextGateEvidence", "Validation"]


@dataclass(frozen=True)
class Validation:
    scores: ValidationReport
    sanity: ValidationReport | None
    discovery: ValidationReport | None = None

    @property
    def gating(self) -> ValidationReport:
        """What decides passed or blocked: the score table's checks and the discovery table's."""
        if self.discovery is None:
            return self.scores
        return ValidationReport(
            success=self.scores.success and self.discovery.success,
            failures=[*self.scores.failures, *self.discovery.failures],
            result=self.scores.result,
        )

    @property
    def success(self) -> bool:
        return self.gating.success and (self.sanity is None or self.sanity.success)

    def documents(self) -> dict[str, Any]:
        docs = {"xai/validation.json": self.scores.result}
        if self.sanity is not None:
            docs["xai/validation_sanity.json"] = self.sanity.result
        if self.discovery is not None:
            docs["xai/validation_discovery.json"] = self.discovery.result
        return docs


@dataclass(frozen=True)
class GateEvidence:
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

    def validate(self, thresholds: Thresholds) -> Validation:
        scores = run_checks(
            self.score_table(),
            score_checks(thresholds, counterfactual=self.counterfactual is not None)
            if self.regions
            else score_checks(thresholds, regions=False, required=UNSCORED_COLUMNS),
            suite="xai-gate-scores",
        )
        sanity = None
        if self.sanity is not None:
            steps = len(self.sanity.result.layers)
            checks = sanity_checks(thresholds, steps=steps)
            sanity = run_checks(self.sanity.table, checks, suite="xai-gate-sanity")
        discovery = None
        if self.discovery is not None:
            table = self.discovery.table
            checks = discovery_checks(thresholds, table)
            discovery = run_checks(table, checks, suite="xai-gate-discovery")
        return Validation(scores, sanity, discovery)

    def metrics(self) -> dict[str, float]:
        out = (
            self.audit.metrics() if self.regions else {"accuracy": self.audit.metrics()["accuracy"]}
        )
        for stage in (self.counterfactual, self.sanity, self.discovery):
            if stage is not None:
                out |= stage.metrics()
        return out

    def warnings(self) -> list[str]:
        """Findings shown in the report that do not block: unconfirmed suspicious strategies."""
        return self.discovery.warnings() if self.discovery is not None else []

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

    def figures(self, thresholds: Thresholds, title: str) -> dict[str, Callable[[], Figure]]:
        """Figure builders by artifact path; drawn only when logged."""
        from pipelines import plots

        class_names, images, masks = self.class_names, self.images, self.masks

        def name(index: Any) -> str:
            i = int(index)
            return class_names[i] if class_names and 0 <= i < len(class_names) else str(i)

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
                sanity, threshold=thresholds.max_sanity_correlation, title=title
            )
        if self.discovery is not None and images is not None:
            figures |= _discovery_figures(self.discovery, images, title)
        return figures


def _discovery_figures(
    discovery: DiscoveryEvidence, images: Tensor, title: str
) -> dict[str, Callable[[], Figure]]:
    from pipelines import discovery_plots

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


@dataclass(frozen=True)
class TextGateEvidence:
    """The text audit and its counterfactual stage, with the same interface as the images'."""

    audit: TextAuditResult
    counterfactual: CounterfactualEvidence | None = None
    class_names: tuple[str, ...] | None = None
    sanity: None = None  # the randomisation check is defined for image heatmaps only

    @property
    def summary(self) -> dict[str, float | int | str]:
        return self.audit.summary

    def score_table(self) -> pd.DataFrame:
        if self.counterfactual is None:
            return self.audit.scores
        return pd.concat([self.audit.scores, self.counterfactual.columns], axis=1)

    def validate(self, thresholds: Thresholds) -> Validation:
        checks = score_checks(
            thresholds,
            counterfactual=self.counterfactual is not None,
            required=TEXT_SCORE_COLUMNS,
        )
        return Validation(
            run_checks(self.score_table(), checks, suite="xai-gate-text-scores"), None
        )

    def metrics(self) -> dict[str, float]:
        out = self.audit.metrics()
        if self.counterfactual is not None:
            out |= self.counterfactual.metrics()
        return out

    def warnings(self) -> list[str]:
        return []

    def report_tables(self) -> dict[str, pd.DataFrame]:
        return {}

    def series(self) -> dict[str, list[float]]:
        return {}

    def tables(self) -> dict[str, pd.DataFrame]:
        rows = []
        for example in self.audit.worst:
            cls_row = example.attention[-1].mean(dim=0)[example.query]
            for position, token in enumerate(example.tokens):
                rows.append(
                    {
                        "text_id": example.text_id,
                        "position": position,
                        "token": token,
                        "saliency": float(example.saliency[position]),
                        "attention_from_classifier_token": float(cls_row[position]),
                        "spurious": bool(example.spurious_tokens[position]),
                    }
                )
        return {"xai/scores.csv": self.score_table(), "xai/saliency.csv": pd.DataFrame(rows)}

    def pages(self) -> dict[str, str]:
        """The interactive attention view of the most spurious texts."""
        from pipelines.attention_html import attention_html_multi

        if not self.audit.worst:
            return {}
        texts = [(e.text_id, e.tokens, e.attention) for e in self.audit.worst]
        return {
            "xai/attention.html": attention_html_multi(texts, title="Attention of audited texts")
        }

    def figures(self, thresholds: Thresholds, title: str) -> dict[str, Callable[[], Figure]]:
        from pipelines import attention_plots

        if not self.audit.worst:
            return {}
        worst = self.audit.worst[0]
        last = worst.attention[-1]
        mean_last = last.mean(dim=0)
        where = f"{title}: {worst.text_id}"
        return {
            "xai/attention_map.png": lambda: attention_plots.attention_map(
                worst.tokens, mean_last, title=f"{where}, last layer, heads averaged"
            ),
            "xai/attention_grid.png": lambda: attention_plots.attention_grid(
                worst.tokens, worst.attention, title=f"{where}, every layer and head"
            ),
            "xai/attention_from_cls.png": lambda: attention_plots.query_bars(
                worst.tokens,
                mean_last[worst.query],
                query=worst.tokens[worst.query],
                title=f"{where}, last layer, heads averaged",
            ),
            "xai/saliency.png": lambda: attention_plots.saliency_bars(
                worst.tokens, worst.saliency, worst.spurious_tokens.tolist(), title=where
            ),
        }
