"""The gate command's rule flags, generated from the policy schema.

Each leaf of :class:`~pipelines.policy.GatePolicy` becomes one flag
(``--max-spurious-mass``, ``--method``, ``--discovery/--no-discovery``), its
help the field's description with its default and bounds. A flag left unset
is ``None``, so the schema's default applies and nothing is written twice.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, get_origin

import typer

from pipelines.policy import GatePolicy, PolicyOption, policy_options

__all__ = ["RULES_PANEL", "with_policy_options"]

RULES_PANEL = "Policy rules (or all of them from --policy FILE)"


def with_policy_options(
    command: Callable[..., Any], *, schema: type[GatePolicy] = GatePolicy
) -> Callable[..., Any]:
    """Give a Typer command one keyword option per policy field; they reach it as ``**rules``.

    ``command`` declares ``**rules``; its own parameters come first in ``--help``.
    """
    signature = inspect.signature(command)
    own = [p for p in signature.parameters.values() if p.kind is not p.VAR_KEYWORD]
    options = policy_options(schema)
    generated = [
        inspect.Parameter(
            option.name,
            inspect.Parameter.KEYWORD_ONLY,
            default=_typer_option(option),
            annotation=_cli_type(option),
        )
        for option in options
    ]

    @functools.wraps(command)
    def wrapper(**kwargs: Any) -> Any:
        rules = {option.name: _from_cli(option, kwargs.pop(option.name)) for option in options}
        return command(**kwargs, **rules)

    wrapper.__signature__ = signature.replace(parameters=[*own, *generated])  # type: ignore[attr-defined]
    wrapper.__annotations__ = {
        **{p.name: p.annotation for p in own},
        **{p.name: p.annotation for p in generated},
    }
    return wrapper


def _cli_type(option: PolicyOption) -> Any:
    if option.is_sequence:
        return list[str] | None
    annotation = option.field.annotation
    if get_origin(annotation) is Literal:  # the schema validates it: one wording for all errors
        return str | None
    if annotation in (str, bool, int, float, Path):
        return annotation | None
    raise TypeError(f"policy option {option.key} has no CLI type for {annotation!r}")


def _typer_option(option: PolicyOption) -> Any:
    flag = option.flag
    declarations = [f"{flag}/--no-{flag[2:]}"] if option.field.annotation is bool else [flag]
    return typer.Option(
        None,
        *declarations,
        help=_help(option),
        metavar=_metavar(option),
        show_default=False,
        rich_help_panel=RULES_PANEL,
    )


def _metavar(option: PolicyOption) -> str | None:
    if option.is_sequence:
        return "NAME,..."
    if option.choices is not None:
        return "|".join(option.choices)
    annotation = option.field.annotation
    return None if annotation is bool else getattr(annotation, "__name__", "TEXT").upper()


def _help(option: PolicyOption) -> str:
    """The field's description, then where it sits in a policy file, its default and bounds."""
    facts = [f"policy key {option.key}"]
    if not option.required:
        default = option.default
        shown = ",".join(default) if isinstance(default, tuple) else default
        facts.append(f"default: {shown if shown not in ('', None) else 'none'}")
    if option.bounds:
        facts.append(option.bounds)
    if option.is_sequence:
        facts.append("repeatable or comma-separated")
    if option.is_sequence and option.choices:
        facts.append("one of " + ", ".join(option.choices))
    return f"{option.field.description} ({'; '.join(facts)})"


def _from_cli(option: PolicyOption, value: Any) -> Any:
    """An empty repeatable option is unset, not an empty tuple."""
    if option.is_sequence and not value:
        return None
    return value
