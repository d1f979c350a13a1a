"""Exceptions with messages that name the culprit (layer, target, shape).

All derive from ``ValueError`` so callers that only know the standard library
still catch them, and from :class:`XAICheckError` so a gate can tell "the
explanation could not be computed" apart from a bug.
"""

from __future__ import annotations

__all__ = ["NonFiniteError", "TargetLayerError", "XAICheckError"]


class XAICheckError(ValueError):
    """An explanation or score could not be computed from the given input."""


class TargetLayerError(XAICheckError):
    """The target layer does not exist, did not run, or has no spatial output."""


class NonFiniteError(XAICheckError):
    """Activations, gradients or heatmaps contain NaN or Inf: no score is trustworthy."""

    def __init__(self, message: str, *, index: int | None = None) -> None:
        super().__init__(message)
        self.index = index
        """The first offending input, when known, so callers can name its file and line."""
