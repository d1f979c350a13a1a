"""Class-activation maps on one engine: each method is only its weighting rule."""

from xai_checks._inputs import Targets
from xai_checks.cam.core import CAMEngine, CAMResult, LayerSpec
from xai_checks.cam.methods import GradCAM, GradCAMPlusPlus, HiResCAM, LayerCAM
from xai_checks.methods import CAM_METHOD_NAMES, METHODS

__all__ = [
    "CAM_METHODS",
    "CAMEngine",
    "CAMResult",
    "GradCAM",
    "GradCAMPlusPlus",
    "HiResCAM",
    "LayerCAM",
    "LayerSpec",
    "Targets",
]

CAM_METHODS: dict[str, type[CAMEngine]] = {name: METHODS[name].load() for name in CAM_METHOD_NAMES}
"""The CAM methods of :data:`xai_checks.methods.METHODS`, by name, as classes."""
