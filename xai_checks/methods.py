"""The heatmap methods by the short names used in policies, metric prefixes and artifact names.

One table says what each method is and needs, so that a name is validated,
described and dispatched in one place. Importing this module loads no torch:
a gate policy validates its method names before any model is loaded, so each
explainer is named by its import path and loaded only by :meth:`MethodSpec.load`.
Adding a CAM method is one subclass in :mod:`xai_checks.cam.methods` and one
entry here.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal

from xai_checks.errors import XAICheckError

__all__ = [
    "AUDIT_METHODS",
    "CAM_METHOD_NAMES",
    "METHODS",
    "MethodKind",
    "MethodSpec",
    "get_method",
    "method_names",
]

MethodKind = Literal["cam", "attention"]
"""``cam``: gradients of the target class at a spatial or token layer, so the map is
class-specific and a target layer is needed. ``attention``: attention weights of
every layer, class-agnostic, no target layer."""

_KIND_NAMES: dict[MethodKind, str] = {"cam": "CAM", "attention": "attention"}


@dataclass(frozen=True)
class MethodSpec:
    """One heatmap method: its explainer class, what it needs, and a line to describe it."""

    explainer: str
    """``"module:Class"`` import path of the explainer, loaded by :meth:`load`."""
    kind: MethodKind
    description: str

    @property
    def class_specific(self) -> bool:
        """Whether the map explains one target class (else one map serves every class)."""
        return self.kind == "cam"

    @property
    def needs_target_layer(self) -> bool:
        """Whether the explainer takes a target layer (None probes for a default one)."""
        return self.kind == "cam"

    def load(self) -> type:
        """The explainer class; imports its module, and with it torch."""
        module, _, name = self.explainer.partition(":")
        return getattr(importlib.import_module(module), name)


METHODS: Mapping[str, MethodSpec] = MappingProxyType(
    {
        "gradcam": MethodSpec(
            "xai_checks.cam.methods:GradCAM",
            "cam",
            "Grad-CAM: channels weighted by their mean gradient",
        ),
        "gradcampp": MethodSpec(
            "xai_checks.cam.methods:GradCAMPlusPlus",
            "cam",
            "Grad-CAM++: positive gradients, pixel-weighted; several instances of a class",
        ),
        "hirescam": MethodSpec(
            "xai_checks.cam.methods:HiResCAM",
            "cam",
            "HiResCAM: gradient times activation per position, at the layer's full resolution",
        ),
        "layercam": MethodSpec(
            "xai_checks.cam.methods:LayerCAM",
            "cam",
            "LayerCAM: activations weighted by their positive gradient; early, fine layers",
        ),
        "rollout": MethodSpec(
            "xai_checks.rollout:AttentionRollout",
            "attention",
            "Attention rollout: the CLS token's attention composed over all ViT layers",
        ),
    }
)
"""Every method, in the order reports list them (the CAM family first)."""


def method_names(kind: MethodKind | None = None) -> tuple[str, ...]:
    """The names of every method, or of those of one ``kind``, in table order."""
    return tuple(name for name, spec in METHODS.items() if kind is None or spec.kind == kind)


CAM_METHOD_NAMES = method_names("cam")
AUDIT_METHODS = method_names()
"""Every method name: what ``pipelines.methods`` exported before the registry."""


def get_method(name: str, *, kind: MethodKind | None = None) -> MethodSpec:
    """The spec of method ``name``; an unknown name (or one of another kind) lists the known."""
    known = method_names(kind)
    if name not in known:
        what = "method" if kind is None else f"{_KIND_NAMES[kind]} method"
        listed = ", ".join(repr(known_name) for known_name in known)
        raise XAICheckError(f"unknown {what} {name!r}; known {what}s: {listed}")
    return METHODS[name]
