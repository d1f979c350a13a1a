"""The evidence of a text gate run: saliency, attention and word removal and insertion."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import pandas as pd

from pipelines.evidence.base import EvidenceValidation, settle_attribution
from pipelines.evidence.columns import TEXT_SCORE_COLUMNS
from pipelines.evidence.expectations import score_checks
from pipelines.evidence.gx import run_checks
from pipelines.evidence.informative import class_count, uninformative_reasons
from pipelines.stages.counterfactual import CounterfactualEvidence
from pipelines.stages.precision import PrecisionEvidence
from pipelines.stages.text import TextAuditResult

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from pipelines.policy.schema import AuditRules

__all__ = ["TextEvidence"]


@dataclass(frozen=True)
class TextEvidence:
    """The text audit and its counterfactual stage, with the same interface as the images'."""

    audit: TextAuditResult
    counterfactual: CounterfactualEvidence | None = None
    class_names: tuple[str, ...] | None = None
    evidence_lines: tuple[str, ...] = ()
    """The checks the verdict rests on (the ``xai_gate.checks`` tag)."""
    modality: Literal["text"] = "text"
    precision: PrecisionEvidence | None = None
    """The precision probe, when the policy asked for bf16 or fp16."""
    sanity: None = None  # the randomisation check is defined for image heatmaps only
    regions: bool = True  # every text names its spurious words

    @property
    def summary(self) -> dict[str, float | int | str]:
        return self.audit.summary

    def score_table(self) -> pd.DataFrame:
        if self.counterfactual is None:
            return self.audit.scores
        return pd.concat([self.audit.scores, self.counterfactual.columns], axis=1)

    def validate(self, rules: AuditRules) -> EvidenceValidation:
        checks = score_checks(
            rules,
            counterfactual=self.counterfactual is not None,
            required=TEXT_SCORE_COLUMNS,
        )
        scores = run_checks(self.score_table(), checks, suite="xai-gate-text-scores")
        scores, notes = settle_attribution(
            scores, rules, behaviour_ran=self.counterfactual is not None
        )
        table = self.audit.scores
        uninformative = uninformative_reasons(
            table["label"], table["prediction"], n_classes=class_count(self.class_names, table)
        )
        return EvidenceValidation(scores, None, notes=notes, uninformative=tuple(uninformative))

    def metrics(self) -> dict[str, float]:
        out = self.audit.metrics()
        for stage in (self.counterfactual, self.precision):
            if stage is not None:
                out |= stage.metrics()
        return out

    def warnings(self) -> list[str]:
        """A refused reduced precision, the one finding of a text gate that does not block."""
        return self.precision.warnings() if self.precision is not None else []

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
        from pipelines.report.attention_html import attention_html_multi

        if not self.audit.worst:
            return {}
        texts = [(e.text_id, e.tokens, e.attention) for e in self.audit.worst]
        return {
            "xai/attention.html": attention_html_multi(texts, title="Attention of audited texts")
        }

    def figures(self, rules: AuditRules, title: str) -> dict[str, Callable[[], Figure]]:
        from pipelines.report import attention_plots

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
