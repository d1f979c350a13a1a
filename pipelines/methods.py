"""Names of the heatmap methods an audit can run, importable without torch.

The policy validates method names when a user's thresholds are parsed; that
must not load torch. ``tests/pipelines/test_audit.py`` checks that this list
matches the methods ``xai_checks`` implements.
"""

from __future__ import annotations

__all__ = ["AUDIT_METHODS", "CAM_METHOD_NAMES"]

CAM_METHOD_NAMES = ("gradcam", "gradcampp", "hirescam", "layercam")
AUDIT_METHODS = (*CAM_METHOD_NAMES, "rollout")
"""The CAM family, and attention rollout for ViTs (class-agnostic, no target layer)."""
