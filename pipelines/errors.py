"""Errors the gate expects and explains: they end a run as ``error``, never ``passed``."""

from __future__ import annotations

__all__ = ["GateError", "ModelLoadError", "describe_error", "is_expected"]


class GateError(Exception):
    """A failure with a message that names its cause (file, line, column, layer).

    Callers show the message alone: a traceback would add nothing for the user.
    """


class ModelLoadError(GateError, RuntimeError):
    """The model version cannot be found or loaded as a torch module."""


def is_expected(error: BaseException) -> bool:
    """Whether ``error``'s message says it all (reported without a traceback)."""
    from pydantic import ValidationError

    from xai_checks.errors import XAICheckError

    return isinstance(error, (GateError, XAICheckError, ValidationError))


def describe_error(error: BaseException) -> str:
    """One line per problem: pydantic's multi-line report becomes 'field: message'."""
    from pydantic import ValidationError

    if isinstance(error, ValidationError):
        problems = "; ".join(
            f"{'.'.join(str(part) for part in e['loc']) or 'options'}: {e['msg']}"
            for e in error.errors()
        )
        return f"invalid gate options: {problems}"
    if is_expected(error):
        return str(error)
    return f"{type(error).__name__}: {error}"
