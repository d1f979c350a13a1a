"""The evidence of a gate run, its tables' columns, and the Great Expectations checks on them.

:class:`~pipelines.evidence.base.Evidence` is the one interface the flow,
the evaluator and the report read; images and text each implement it.
"""

from __future__ import annotations

from xai_checks.compat import lazy_exports

_EXPORTS = {
    "Evidence": "pipelines.evidence.base",
    "EvidenceValidation": "pipelines.evidence.base",
    "Check": "pipelines.evidence.gx",
    "SuiteResult": "pipelines.evidence.gx",
    "run_checks": "pipelines.evidence.gx",
    "ImageEvidence": "pipelines.evidence.images",
    "TextEvidence": "pipelines.evidence.texts",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(
    __name__,
    _EXPORTS,
    renamed={
        "ImageEvidence": "pipelines.evidence.images:ImageEvidence",
        "TextEvidence": "pipelines.evidence.texts:TextEvidence",
        "Validation": "pipelines.evidence.base:EvidenceValidation",
    },
)
