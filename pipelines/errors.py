"""Errors the gate expects and explains: they end a run as ``error``, never ``passed``."""

from __future__ import annotations

__all__ = ["GateError", "ModelLoadError"]


class GateError(Exception):
    """A failure with a message that names its cause (file, line, column, layer).

    Callers show the message alone: a traceback would add nothing for the user.
    """


class ModelLoadError(GateError, RuntimeError):
    """The model version cannot be found or loaded as a torch module."""
