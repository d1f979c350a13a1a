"""The sanity stage: do the gate's heatmaps depend on the model at all?"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd
from torch import Tensor, nn

from pipelines.evidence.columns import SANITY_COLUMNS
from xai_checks.metrics import bootstrap_ci
from xai_checks.sanity import SanityResult, cascading_randomization, method_explainer

__all__ = ["SanityEvidence", "sanity_audit"]

PREFIX = "sanity"


@dataclass(frozen=True)
class SanityEvidence:
    result: SanityResult
    images: Tensor
    table: pd.DataFrame
    """``SANITY_COLUMNS``: each image's Spearman correlation after the full cascade."""
    method: str

    def metrics(self) -> dict[str, float]:
        out = bootstrap_ci(self.result.spearman[-1]).as_dict(f"{PREFIX}.final_spearman")
        out[f"{PREFIX}.steps"] = float(len(self.result.layers))
        return out

    def series(self) -> dict[str, list[float]]:
        """Mean Spearman after each cascade step: an MLflow metric with steps 1..k."""
        return {f"{PREFIX}.spearman_by_step": self.result.mean_spearman.tolist()}


def sanity_audit(
    model: nn.Module,
    images: Tensor,
    *,
    image_ids: Sequence[str],
    method: str = "gradcam",
    target_layers: Sequence[str] = (),
    n_images: int = 16,
    seed: int = 0,
    batch_size: int | None = None,
) -> SanityEvidence:
    """Cascading randomisation on the first ``n_images`` audit images, with the gating method.

    A handful of images suffices: the statistic is a mean rank correlation,
    and each cascade step costs one explanation pass per image.
    """
    subset = images[:n_images]
    explainer = method_explainer(method, tuple(target_layers) or None)
    result = cascading_randomization(model, subset, explainer, seed=seed, batch_size=batch_size)
    table = pd.DataFrame(
        {"image_id": list(image_ids)[: len(subset)], "spearman": result.spearman[-1].numpy()},
        columns=list(SANITY_COLUMNS),
    )
    return SanityEvidence(result, subset.detach().cpu(), table, method)
