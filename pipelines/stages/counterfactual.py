"""The counterfactual stage: artifact removal and insertion as gate evidence."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd
import torch
from torch import Tensor, nn

from pipelines.evidence.columns import COUNTERFACTUAL_COLUMNS
from xai_checks.counterfactual import (
    InsertionResult,
    RemovalResult,
    counterfactual_tests,
)
from xai_checks.labels import class_label, class_labels
from xai_checks.metrics import bootstrap_ci
from xai_checks.text_counterfactual import text_insertion_test, text_removal_test

__all__ = ["CounterfactualEvidence", "counterfactual_audit", "text_counterfactual_audit"]

PREFIX = "counterfactual"
TEXT_PREFIX = "text_counterfactual"


@dataclass(frozen=True)
class CounterfactualEvidence:
    removal: RemovalResult
    insertion: InsertionResult
    columns: pd.DataFrame
    """``COUNTERFACTUAL_COLUMNS``, one row per audit image, in audit-set order."""
    artifact_class_name: str
    prefix: str = PREFIX
    """Metric prefix: ``counterfactual`` for images, ``text_counterfactual`` for texts."""

    def metrics(self) -> dict[str, float]:
        removal, insertion = self.removal, self.insertion
        has = removal.has_artifact
        toward = insertion.predictions_after == insertion.artifact_class
        not_before = insertion.predictions_before != insertion.artifact_class
        rates = {
            "removal_flip_rate": removal.flipped[has],
            "accuracy_with_artifact": (removal.predictions == removal.labels)[has],
            "accuracy_without_artifact": (removal.predictions_without == removal.labels)[has],
            "spurious_score": insertion.probability,
            "spurious_lift": insertion.probability - insertion.baseline,
            "insertion_flip_rate": toward[not_before],
        }
        out: dict[str, float] = {}
        for name, values in rates.items():
            out |= bootstrap_ci(values.float()).as_dict(f"{self.prefix}.{name}")
        out[f"{self.prefix}.accuracy_change"] = removal.accuracy_without - removal.accuracy_with
        out[f"{self.prefix}.artifact_class"] = float(insertion.artifact_class)
        return out


def counterfactual_audit(
    model: nn.Module,
    images: Tensor,
    labels: Tensor,
    masks: Tensor,
    *,
    class_names: Sequence[str] | None = None,
    batch_size: int = 32,
) -> CounterfactualEvidence:
    """Remove every image's artifact, paste artifacts across classes, tabulate per image."""
    removal, insertion = counterfactual_tests(model, images, masks, labels, batch_size=batch_size)
    return _tabulate(removal, insertion, class_names, PREFIX)


def text_counterfactual_audit(
    model: nn.Module,
    tokenizer,
    texts: Sequence[str],
    labels: Tensor,
    spurious: Sequence[Sequence[str]],
    *,
    class_names: Sequence[str] | None = None,
    batch_size: int = 32,
) -> CounterfactualEvidence:
    """Delete every text's spurious words, add them to other classes' texts, tabulate per text."""
    labels = torch.as_tensor(labels, dtype=torch.long)
    removal = text_removal_test(model, tokenizer, texts, labels, spurious, batch_size=batch_size)
    insertion = text_insertion_test(
        model, tokenizer, texts, labels, spurious, batch_size=batch_size
    )
    return _tabulate(removal, insertion, class_names, TEXT_PREFIX)


def _tabulate(
    removal: RemovalResult,
    insertion: InsertionResult,
    class_names: Sequence[str] | None,
    prefix: str,
) -> CounterfactualEvidence:
    """Per-input columns, null where a check does not apply, in audit-set order."""
    n = removal.labels.shape[0]
    probability = torch.full((n,), float("nan"), dtype=torch.float64)
    probability[insertion.target_index] = insertion.probability.double()
    lift = torch.full((n,), float("nan"), dtype=torch.float64)
    lift[insertion.target_index] = (insertion.probability - insertion.baseline).double()
    flipped = pd.array(removal.flipped.tolist(), dtype="boolean")
    flipped[~removal.has_artifact.numpy()] = pd.NA
    names = list(class_names) if class_names is not None else None
    columns = pd.DataFrame(
        {
            "prediction_without_artifact": class_labels(removal.predictions_without, names),
            "flipped_on_removal": flipped,
            "artifact_class_probability": probability.numpy(),
            "artifact_class_lift": lift.numpy(),
        },
        columns=list(COUNTERFACTUAL_COLUMNS),
    )
    return CounterfactualEvidence(
        removal, insertion, columns, class_label(insertion.artifact_class, names), prefix
    )
