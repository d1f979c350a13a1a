"""Policy files: YAML in, a validated :class:`GatePolicy` out, errors with file, key and line.

``policy.yaml:7 checks.heatmaps.max_spurious_mass: Input should be less than or equal to 1``
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from pipelines.errors import GateError
from pipelines.policy.schema import GatePolicy

__all__ = ["PolicyError", "load_policy", "write_policy"]


class PolicyError(GateError, ValueError):
    """The policy file is missing, not YAML, or breaks the schema; names the key and line."""


def load_policy(path: str | Path) -> GatePolicy:
    """Read and validate a policy YAML; ``audit_set`` becomes absolute (relative to the file)."""
    path = Path(path)
    if not path.is_file():
        raise PolicyError(f"policy file not found: {path}")
    text = path.read_text(encoding="utf-8")
    try:
        node = yaml.compose(text)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise PolicyError(f"{path.name}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise PolicyError(f"{path.name}: a policy is a mapping of keys (model, audit_set, ...)")
    _refuse_non_decimal_numbers(node, path)
    try:
        policy = GatePolicy.model_validate(data)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            location = [str(part) for part in error["loc"]]
            line = _line_of(node, location)
            where = f"{path.name}:{line}" if line else path.name
            problems.append(f"{where} {'.'.join(location) or '(top level)'}: {error['msg']}")
        raise PolicyError("invalid policy: " + "; ".join(problems)) from None
    audit_set = policy.audit_set
    if not audit_set.is_absolute():
        audit_set = (path.parent / audit_set).resolve()
    return policy.model_copy(update={"audit_set": audit_set})


_DECIMAL = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|[-+]?\.(?:inf|Inf|INF)")
_NUMBER_TAGS = ("tag:yaml.org,2002:int", "tag:yaml.org,2002:float")


def _refuse_non_decimal_numbers(node: Any, path: Path) -> None:
    """YAML 1.1 reads ``0x1``, ``0o7``, ``017``, ``1_000`` and ``1:30`` as numbers (1, 7, 15,
    1000, 90): a threshold is written as a decimal number, or it is refused with its line."""
    if isinstance(node, yaml.ScalarNode):
        if node.tag in _NUMBER_TAGS and not _DECIMAL.fullmatch(node.value):
            raise PolicyError(
                f"invalid policy: {path.name}:{node.start_mark.line + 1} {node.value!r} is not a "
                "decimal number (write thresholds as 0.3, 1 or 1e-3)"
            )
        if node.tag in _NUMBER_TAGS and re.fullmatch(r"[-+]?0\d+", node.value):  # octal
            raise PolicyError(
                f"invalid policy: {path.name}:{node.start_mark.line + 1} {node.value!r} is an "
                "octal number in YAML: write it without the leading zero"
            )
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            _refuse_non_decimal_numbers(item, path)
    elif isinstance(node, yaml.MappingNode):
        for _, value in node.value:
            _refuse_non_decimal_numbers(value, path)


def _line_of(node: Any, location: list[str]) -> int | None:
    """1-based line of the deepest YAML node on ``location`` (a key's line if it is unknown)."""
    line = None
    for part in location:
        if node is None or not hasattr(node, "value"):
            break
        if isinstance(node.value, list) and node.value and isinstance(node.value[0], tuple):
            match = next((pair for pair in node.value if pair[0].value == part), None)
            if match is None:
                break
            line = match[0].start_mark.line + 1
            node = match[1]
        elif isinstance(node.value, list) and part.isdigit() and int(part) < len(node.value):
            node = node.value[int(part)]
            line = node.start_mark.line + 1
        else:
            break
    return line


def write_policy(policy: GatePolicy, path: str | Path) -> Path:
    """Write ``policy`` as YAML that :func:`load_policy` reads back equal.

    The audit set is written relative to the file's folder when it lies
    below it, so the policy and its audit set can move together.
    """

    path = Path(path)
    data = policy.model_dump(mode="json")
    audit_set = Path(policy.audit_set)
    if audit_set.is_absolute() and audit_set.is_relative_to(path.parent.absolute()):
        data["audit_set"] = str(audit_set.relative_to(path.parent.absolute()))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path
