"""The counterfactual stage: artifact removal and insertion as gate evidence."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd
import torch
from torch import Tensor, nn

from pipelines.policy import COUNTERFACTUAL_COLUMNS
from xai_checks.counterfactual import (
    InsertionResult,
    RemovalResult,
    insertion_test,
    removal_test,
)
from xai_checks.metrics import bootstrap_ci

__all__ = ["CounterfactualEvidence", "counterfactual_audit"]

PREFIX = "counterfactual"


@dataclass(frozen=True)
class CounterfactualEvidence:
    removal: RemovalResult
    insertion: InsertionResult
    columns: pd.DataFrame
    """``COUNTERFACTUAL_COLUMNS``, one row per audit image, in audit-set order."""
    artifact_class_name: str

    def metrics(self) -> dict[str, float]:
        removal, insertion = self.removal, self.insertion
        flips = removal.flipped[removal.has_artifact].float()
        out = bootstrap_ci(flips).as_dict(f"{PREFIX}.removal_flip_rate")
        out |= bootstrap_ci(insertion.probability).as_dict(f"{PREFIX}.spurious_score")
        out |= {
            f"{PREFIX}.accuracy_with_artifact": removal.accuracy_with,
            f"{PREFIX}.accuracy_without_artifact": removal.accuracy_without,
            f"{PREFIX}.spurious_lift": insertion.lift,
            f"{PREFIX}.insertion_flip_rate": insertion.flip_rate,
            f"{PREFIX}.artifact_class": float(insertion.artifact_class),
        }
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
    labels = torch.as_tensor(labels, dtype=torch.long)
    removal = removal_test(model, images, masks, labels, batch_size=batch_size)
    insertion = insertion_test(model, images, masks, labels, batch_size=batch_size)
    n = labels.shape[0]
    probability = torch.full((n,), float("nan"), dtype=torch.float64)
    probability[insertion.target_index] = insertion.probability.double()
    flipped = pd.array(removal.flipped.tolist(), dtype="boolean")
    flipped[~removal.has_artifact.numpy()] = pd.NA
    names = list(class_names) if class_names is not None else None
    columns = pd.DataFrame(
        {
            "prediction_without_artifact": _names(removal.predictions_without, names),
            "flipped_on_removal": flipped,
            "artifact_class_probability": probability.numpy(),
        },
        columns=list(COUNTERFACTUAL_COLUMNS),
    )
    artifact = insertion.artifact_class
    artifact_name = names[artifact] if names and artifact < len(names) else str(artifact)
    return CounterfactualEvidence(removal, insertion, columns, artifact_name)


def _names(indices: Tensor, names: list[str] | None) -> list:
    values = indices.tolist()
    return [names[i] for i in values] if names else values
