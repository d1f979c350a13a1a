"""All lines of evidence of one gate run: what is validated, logged and drawn."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pandas as pd

from pipelines.audit import AuditResult
from pipelines.counterfactual import CounterfactualEvidence
from pipelines.policy import Thresholds, sanity_checks, score_checks
from pipelines.sanity import SanityEvidence
from pipelines.validation import ValidationReport, run_checks

if TYPE_CHECKING:
    from matplotlib.figure import Figure
    from torch import Tensor

__all__ = ["GateEvidence", "Validation"]


@dataclass(frozen=True)
class Validation:
    scores: ValidationReport
    sanity: ValidationReport | None

    @property
    def success(self) -> bool:
        return self.scores.success and (self.sanity is None or self.sanity.success)

    def documents(self) -> dict[str, Any]:
        docs = {"xai/validation.json": self.scores.result}
        if self.sanity is not None:
            docs["xai/validation_sanity.json"] = self.sanity.result
        return docs


@dataclass(frozen=True)
class GateEvidence:
    """The CAM audit, plus the counterfactual and sanity stages when they ran."""

    audit: AuditResult
    counterfactual: CounterfactualEvidence | None = None
    sanity: SanityEvidence | None = None

    def score_table(self) -> pd.DataFrame:
        """One row per image: CAM scores, then counterfactual columns."""
        if self.counterfactual is None:
            return self.audit.scores
        return pd.concat([self.audit.scores, self.counterfactual.columns], axis=1)

    def validate(self, thresholds: Thresholds) -> Validation:
        scores = run_checks(
            self.score_table(),
            score_checks(thresholds, counterfactual=self.counterfactual is not None),
            suite="xai-gate-scores",
        )
        sanity = None
        if self.sanity is not None:
            steps = len(self.sanity.result.layers)
            checks = sanity_checks(thresholds, steps=steps)
            sanity = run_checks(self.sanity.table, checks, suite="xai-gate-sanity")
        return Validation(scores, sanity)

    def metrics(self) -> dict[str, float]:
        out = self.audit.metrics()
        for stage in (self.counterfactual, self.sanity):
            if stage is not None:
                out |= stage.metrics()
        return out

    def series(self) -> dict[str, list[float]]:
        return self.sanity.series() if self.sanity is not None else {}

    def tables(self) -> dict[str, pd.DataFrame]:
        tables = {"xai/scores.csv": self.score_table()}
        if self.sanity is not None:
            tables["xai/sanity.csv"] = self.sanity.table
        return tables

    def figures(
        self,
        images: Tensor,
        class_names: tuple[str, ...] | None,
        thresholds: Thresholds,
        title: str,
    ) -> dict[str, Callable[[], Figure]]:
        """Figure builders by artifact path; drawn only when logged."""
        from pipelines import plots

        def name(index: Any) -> str:
            i = int(index)
            return class_names[i] if class_names and 0 <= i < len(class_names) else str(i)

        figures: dict[str, Callable[[], Figure]] = {}
        for method, result in self.audit.methods.items():
            for kind, cases, subtitle in (
                ("overlays", result.worst, "worst spurious mass first"),
                ("samples", result.samples, "first images of the audit set"),
            ):
                if len(cases.rows):
                    figures[f"xai/{method}_{kind}.png"] = lambda c=cases, m=method, s=subtitle: (
                        plots.overlay_grid(c, title=f"{title}: {m} ({s})")
                    )
        if self.counterfactual is not None:
            cf = self.counterfactual
            figures["xai/counterfactual_removal.png"] = lambda: plots.removal_grid(
                cf, images, name, title=title
            )
            figures["xai/counterfactual_insertion.png"] = lambda: plots.insertion_grid(
                cf, name, title=title
            )
        if self.sanity is not None:
            sanity = self.sanity
            figures["xai/sanity.png"] = lambda: plots.sanity_figure(
                sanity, threshold=thresholds.max_sanity_correlation, title=title
            )
        return figures
