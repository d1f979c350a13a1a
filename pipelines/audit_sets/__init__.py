"""Audit sets on disk: image manifests (with spurious masks or boxes) and text CSVs.

Every file is checked with Great Expectations before any model runs; errors
name the file, the line and the column. Images stay on disk and are decoded
batch by batch.
"""

from __future__ import annotations

from xai_checks.compat import lazy_exports

_EXPORTS = {
    **dict.fromkeys(
        ("AuditSet", "AuditSetError", "load_audit_set", "write_audit_set"),
        "pipelines.audit_sets.images",
    ),
    **dict.fromkeys(
        ("TextAuditSet", "is_text_manifest", "load_text_audit_set", "write_text_audit_set"),
        "pipelines.audit_sets.texts",
    ),
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
