"""Class-activation maps on one engine."""

from xai_checks.cam.core import CAMEngine, CAMResult, Targets
from xai_checks.cam.methods import GradCAM

__all__ = ["CAMEngine", "CAMResult", "GradCAM", "Targets"]
