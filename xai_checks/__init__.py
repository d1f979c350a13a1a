"""Pure-torch explainability checks for images and text: CAMs, attention, saliency, more.

No MLOps imports here (mlflow, prefect, great_expectations): the layers above
build on this one, never the other way. Attributes load lazily, so
``import xai_checks`` is cheap and pulls in only what is used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from xai_checks import (
        attention,
        cam,
        counterfactual,
        errors,
        metrics,
        rollout,
        saliency,
        sanity,
        synthetic,
        synthetic_text,
        text_counterfactual,
        toy_models,
        toy_text_models,
    )
    from xai_checks.cam import (
        CAM_METHODS,
        CAMEngine,
        CAMResult,
        GradCAM,
        GradCAMPlusPlus,
        HiResCAM,
        LayerCAM,
    )
    from xai_checks.errors import NonFiniteError, TargetLayerError, XAICheckError
    from xai_checks.rollout import AttentionRollout, RolloutResult

_ATTRIBUTES = {
    "AttentionRollout": "xai_checks.rollout",
    "CAM_METHODS": "xai_checks.cam",
    "CAMEngine": "xai_checks.cam",
    "CAMResult": "xai_checks.cam",
    "GradCAM": "xai_checks.cam",
    "GradCAMPlusPlus": "xai_checks.cam",
    "HiResCAM": "xai_checks.cam",
    "LayerCAM": "xai_checks.cam",
    "RolloutResult": "xai_checks.rollout",
    "NonFiniteError": "xai_checks.errors",
    "TargetLayerError": "xai_checks.errors",
    "XAICheckError": "xai_checks.errors",
}
_SUBMODULES = {
    "attention",
    "cam",
    "counterfactual",
    "errors",
    "metrics",
    "rollout",
    "saliency",
    "sanity",
    "synthetic",
    "synthetic_text",
    "text_counterfactual",
    "toy_models",
    "toy_text_models",
}

__all__ = [
    "CAM_METHODS",
    "AttentionRollout",
    "CAMEngine",
    "CAMResult",
    "GradCAM",
    "GradCAMPlusPlus",
    "HiResCAM",
    "LayerCAM",
    "NonFiniteError",
    "RolloutResult",
    "TargetLayerError",
    "XAICheckError",
    "attention",
    "cam",
    "counterfactual",
    "errors",
    "metrics",
    "rollout",
    "saliency",
    "sanity",
    "synthetic",
    "synthetic_text",
    "text_counterfactual",
    "toy_models",
    "toy_text_models",
]


def __getattr__(name: str) -> Any:
    if name in _ATTRIBUTES:
        return getattr(importlib.import_module(_ATTRIBUTES[name]), name)
    if name in _SUBMODULES:
        return importlib.import_module(f"xai_checks.{name}")
    raise AttributeError(f"module 'xai_checks' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
