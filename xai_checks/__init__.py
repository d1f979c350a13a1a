"""Pure-torch explainability checks for images and text: CAMs, attention, saliency, more.

No MLOps imports here (mlflow, prefect, great_expectations): the layers above
build on this one, never the other way. Attributes load lazily, so
``import xai_checks`` is cheap and pulls in only what is used.
"""

from __future__ import annotations

import importlib
from typing import Any

from xai_checks.compat import lazy_exports, redirect_moved_modules

_SUBMODULES = (
    "attention",
    "cam",
    "counterfactual",
    "discovery",
    "errors",
    "examples",
    "labels",
    "methods",
    "metrics",
    "precision",
    "precision_drift",
    "predict",
    "probes",
    "rollout",
    "saliency",
    "sanity",
    "text_counterfactual",
    "text_models",
    "words",
)

_EXPORTS = {
    **{name: f"{__name__}.{name}" for name in _SUBMODULES},
    **dict.fromkeys(("CAM_METHODS", "CAMEngine", "CAMResult"), "xai_checks.cam"),
    **dict.fromkeys(("GradCAM", "GradCAMPlusPlus", "HiResCAM", "LayerCAM"), "xai_checks.cam"),
    **dict.fromkeys(("NonFiniteError", "TargetLayerError", "XAICheckError"), "xai_checks.errors"),
    **dict.fromkeys(("AttentionRollout", "RolloutResult"), "xai_checks.rollout"),
}
"""Every public name, by the module that defines it (a submodule by itself)."""

MOVED_MODULES = {
    "xai_checks.synthetic": "xai_checks.examples.synthetic",
    "xai_checks.synthetic_text": "xai_checks.examples.synthetic_text",
    "xai_checks.toy_models": "xai_checks.examples.toy_models",
    "xai_checks.toy_text_models": "xai_checks.examples.toy_text_models",
}
"""Modules of release 0.1 and where they went; the old paths import, with a warning, until
the next release, so pickles that name the old modules still load."""

redirect_moved_modules(MOVED_MODULES)
__all__ = sorted(_EXPORTS)
_lazy_getattr, __dir__ = lazy_exports(__name__, _EXPORTS)


def __getattr__(name: str) -> Any:
    if f"{__name__}.{name}" in MOVED_MODULES:  # xai_checks.toy_models: the redirect warns
        return importlib.import_module(f"{__name__}.{name}")
    return _lazy_getattr(name)
