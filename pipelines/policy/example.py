"""The commented example policy (``xai-gate policy init``), generated from the schema.

Every key, default and comment comes from :mod:`pipelines.policy.schema`, so
the example cannot drift from the rules the gate applies.
"""

from __future__ import annotations

import textwrap
from typing import Any

from pydantic import BaseModel

from pipelines.policy.schema import AuditRules, GatePolicy

__all__ = ["EXAMPLE_POLICY", "example_policy"]

_HEADER = """\
# xai-gate policy: every rule that decides whether a model version may be promoted.
# Check it with `xai-gate policy check FILE`; gate with `xai-gate gate --policy FILE --version N`.
# Paths are relative to this file. Each comment is the rule's description in the schema.
"""
_WIDTH = 100


def example_policy(schema: type[GatePolicy] = GatePolicy) -> str:
    """The example policy text: the model and audit set first, then every rule at its default."""
    rules = [key for key in schema.model_fields if key in AuditRules.model_fields]
    identity = [key for key in schema.model_fields if key not in rules]
    lines = [*_HEADER.splitlines(), ""]
    lines += _fields(schema, identity, 0)
    for key in rules:
        lines += ["", *_fields(schema, [key], 0)]
    return "\n".join(lines) + "\n"


def _fields(model: type[BaseModel], keys: list[str], depth: int) -> list[str]:
    indent = "  " * depth
    lines: list[str] = []
    for key in keys:
        info = model.model_fields[key]
        annotation = info.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            lines += _line(indent, f"{key}:", info.description)
            lines += _fields(annotation, list(annotation.model_fields), depth + 1)
            continue
        value = info.examples[0] if info.is_required() and info.examples else info.default
        lines += _line(indent, f"{key}: {_yaml(value)}", info.description)
    return lines


def _line(indent: str, text: str, comment: str | None) -> list[str]:
    """``key: value  # comment``, or the comment on the lines above when it does not fit."""
    if not comment:
        return [indent + text]
    inline = f"{indent}{text}  # {comment}"
    if len(inline) <= _WIDTH:
        return [inline]
    wrapped = textwrap.wrap(comment, _WIDTH - len(indent) - 2)
    return [*(f"{indent}# {part}" for part in wrapped), indent + text]


def _yaml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple | list):
        return "[" + ", ".join(_yaml(item) for item in value) + "]"
    return str(value)


EXAMPLE_POLICY = example_policy()
