"""The names of the tags a verdict writes on a model version, besides the signed ones
(``pipelines.verdict.signing``): one place, so the decision and the description agree."""

from __future__ import annotations

__all__ = [
    "TAG_AUDIT_SET_HASH",
    "TAG_CHECKS",
    "TAG_HISTORY",
    "TAG_LAST_ERROR",
    "TAG_PROMOTION_ERROR",
    "TAG_REASON",
    "TAG_WARNINGS",
]

TAG_REASON = "xai_gate.reason"
TAG_CHECKS = "xai_gate.checks"
TAG_AUDIT_SET_HASH = "xai_gate.audit_set_sha256"
TAG_WARNINGS = "xai_gate.warnings"
TAG_LAST_ERROR = "xai_gate.last_error"
TAG_HISTORY = "xai_gate.history"
TAG_PROMOTION_ERROR = "xai_gate.promotion_error"
"""Why the registry refused the alias to a pass; removed once the alias is set."""
