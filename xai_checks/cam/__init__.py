"""Class-activation maps on one engine: each method is only its weighting rule."""

from xai_checks._inputs import Targets
from xai_checks.cam.core import CAMEngine, CAMResult, LayerSpec
from xai_checks.cam.methods import GradCAM, GradCAMPlusPlus, HiResCAM, LayerCAM

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

CAM_METHODS: dict[str, type[CAMEngine]] = {
    "gradcam": GradCAM,
    "gradcampp": GradCAMPlusPlus,
    "hirescam": HiResCAM,
    "layercam": LayerCAM,
}
"""Methods by the short name used in policies, metric prefixes and artifact names."""
