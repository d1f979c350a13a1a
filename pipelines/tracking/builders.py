"""Which code a weights-only model's metadata may name: an allow-list the operator sets.

Why: a model's metadata is written by the registrant. When the loader imported
whatever ``architecture`` named and called it with ``init_kwargs``,
``"os:system"`` with ``{"command": ...}`` ran a shell command as the gate's
user. Metadata now only *chooses* among builders the operator allowed:

* torchvision's model builders (``torchvision.models:resnet18``: any name in
  ``torchvision.models.list_models()``);
* transformers' model classes (``transformers:BertForSequenceClassification``):
  a ``PreTrainedModel`` subclass, built from its config class with ``init_kwargs``;
* whatever the policy's ``model_builders`` or ``XAI_GATE_MODEL_BUILDERS``
  (comma-separated) name: ``package.module:Name`` exactly, or ``package.module:*``
  for every public name of that module.

Nothing else is imported, let alone called: the check runs on the reference's
text before any import.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from pipelines.errors import GateError, ModelLoadError

__all__ = ["BUILDERS_ENV", "BuilderRefused", "allowed_patterns", "resolve_builder"]

BUILDERS_ENV = "XAI_GATE_MODEL_BUILDERS"
_REFERENCE = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*")
_PATTERN = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:([A-Za-z_]\w*|\*)")


class BuilderRefused(ModelLoadError):
    """The metadata names code the operator did not allow; names the key and the value."""


def allowed_patterns(extra: Sequence[str] = ()) -> tuple[str, ...]:
    """The operator's own builders: the policy's ``model_builders`` and the environment's."""
    from_env = [p.strip() for p in os.environ.get(BUILDERS_ENV, "").split(",") if p.strip()]
    patterns = (*extra, *from_env)
    for pattern in patterns:
        if not _PATTERN.fullmatch(pattern):
            raise GateError(
                f"model builder {pattern!r} (policy model_builders or {BUILDERS_ENV}) is not "
                "'package.module:Name' or 'package.module:*'"
            )
    return patterns


def resolve_builder(
    reference: object, init_kwargs: object, *, extra: Sequence[str] = (), where: str = ""
) -> Callable[[], Any]:
    """A zero-argument callable that builds the model, or :class:`BuilderRefused`.

    ``where`` prefixes the messages (the model URI).
    """
    prefix = f"{where}: " if where else ""
    if not isinstance(reference, str) or not _REFERENCE.fullmatch(reference):
        raise BuilderRefused(
            f"{prefix}metadata key 'architecture' = {reference!r} is not a builder reference "
            "('package.module:Name')"
        )
    kwargs = _plain_kwargs(init_kwargs, prefix)
    module_name, _, name = reference.partition(":")
    if _operator_allowed(module_name, name, allowed_patterns(extra)):
        return _operator_builder(module_name, name, kwargs, prefix, reference)
    if module_name == "torchvision.models":
        return _torchvision_builder(name, kwargs, prefix, reference)
    if module_name == "transformers":
        return _transformers_builder(name, kwargs, prefix, reference)
    raise BuilderRefused(
        f"{prefix}metadata key 'architecture' = {reference!r} is not an allowed model builder: "
        "allowed are torchvision.models:<builder>, transformers:<model class>, and what the "
        f"operator lists in the policy's model_builders or {BUILDERS_ENV}"
    )


def _operator_allowed(module_name: str, name: str, patterns: Sequence[str]) -> bool:
    for pattern in patterns:
        allowed_module, _, allowed_name = pattern.partition(":")
        if allowed_module == module_name and (
            allowed_name == name or (allowed_name == "*" and not name.startswith("_"))
        ):
            return True
    return False


def _plain_kwargs(init_kwargs: object, prefix: str) -> dict[str, Any]:
    """``init_kwargs`` as JSON data only: a mapping of names to numbers, text, lists, maps."""
    if init_kwargs is None:
        return {}
    if not isinstance(init_kwargs, Mapping) or not all(isinstance(k, str) for k in init_kwargs):
        raise BuilderRefused(
            f"{prefix}metadata key 'init_kwargs' = {init_kwargs!r} is not a mapping of names"
        )
    for key, value in init_kwargs.items():
        if not _is_plain(value):
            raise BuilderRefused(
                f"{prefix}metadata key 'init_kwargs.{key}' = {value!r} is not plain data"
            )
    return dict(init_kwargs)


def _is_plain(value: object) -> bool:
    if value is None or isinstance(value, bool | int | float | str):
        return True
    if isinstance(value, list | tuple):
        return all(_is_plain(item) for item in value)
    if isinstance(value, Mapping):
        return all(isinstance(k, str) and _is_plain(v) for k, v in value.items())
    return False


def _operator_builder(
    module_name: str, name: str, kwargs: dict[str, Any], prefix: str, reference: str
) -> Callable[[], Any]:
    import importlib

    try:
        factory = getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError):
        raise BuilderRefused(
            f"{prefix}architecture {reference!r} is not importable here "
            "(expected 'package.module:ClassOrFactory' of an installed package)"
        ) from None
    if not callable(factory):
        raise BuilderRefused(f"{prefix}architecture {reference!r} is not callable")
    return lambda: factory(**kwargs)


def _torchvision_builder(
    name: str, kwargs: dict[str, Any], prefix: str, reference: str
) -> Callable[[], Any]:
    import torchvision.models

    if name not in torchvision.models.list_models():
        raise BuilderRefused(
            f"{prefix}metadata key 'architecture' = {reference!r}: {name!r} is not one of "
            "torchvision's model builders (torchvision.models.list_models())"
        )
    if kwargs.get("weights") is not None:
        raise BuilderRefused(
            f"{prefix}metadata key 'init_kwargs.weights' = {kwargs['weights']!r}: the gate "
            "never downloads weights; they come from state_dict.pt"
        )
    builder = torchvision.models.get_model_builder(name)
    return lambda: builder(**{**kwargs, "weights": None})


def _transformers_builder(
    name: str, kwargs: dict[str, Any], prefix: str, reference: str
) -> Callable[[], Any]:
    import transformers

    cls = getattr(transformers, name, None) if not name.startswith("_") else None
    if not (isinstance(cls, type) and issubclass(cls, transformers.PreTrainedModel)):
        raise BuilderRefused(
            f"{prefix}metadata key 'architecture' = {reference!r}: {name!r} is not a "
            "transformers model class (a PreTrainedModel subclass)"
        )
    return lambda: cls(cls.config_class(**kwargs))
