"""Policy, validation, MLflow logging and the registry gate, over ``xai_checks``.

Imports no Prefect: the flows build on this layer. Attributes load lazily so
that the CLI starts fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pipelines.audit import AuditResult, audit_images
    from pipelines.audit_set import AuditSet, AuditSetError, load_audit_set, write_audit_set
    from pipelines.counterfactual import CounterfactualEvidence, counterfactual_audit
    from pipelines.evidence import GateEvidence, Validation
    from pipelines.gate import GateDecision, Verdict, decide, record_verdict
    from pipelines.policy import AuditPlan, Thresholds
    from pipelines.sanity import SanityEvidence, sanity_audit

_ATTRIBUTES = {
    "AuditResult": "pipelines.audit",
    "audit_images": "pipelines.audit",
    "AuditSet": "pipelines.audit_set",
    "AuditSetError": "pipelines.audit_set",
    "load_audit_set": "pipelines.audit_set",
    "write_audit_set": "pipelines.audit_set",
    "GateDecision": "pipelines.gate",
    "Verdict": "pipelines.gate",
    "decide": "pipelines.gate",
    "record_verdict": "pipelines.gate",
    "AuditPlan": "pipelines.policy",
    "Thresholds": "pipelines.policy",
    "CounterfactualEvidence": "pipelines.counterfactual",
    "counterfactual_audit": "pipelines.counterfactual",
    "GateEvidence": "pipelines.evidence",
    "Validation": "pipelines.evidence",
    "SanityEvidence": "pipelines.sanity",
    "sanity_audit": "pipelines.sanity",
}

__all__ = [
    "AuditPlan",
    "AuditResult",
    "AuditSet",
    "AuditSetError",
    "CounterfactualEvidence",
    "GateDecision",
    "GateEvidence",
    "SanityEvidence",
    "Thresholds",
    "Validation",
    "Verdict",
    "audit_images",
    "counterfactual_audit",
    "decide",
    "load_audit_set",
    "record_verdict",
    "sanity_audit",
    "write_audit_set",
]


def __getattr__(name: str) -> Any:
    if name in _ATTRIBUTES:
        return getattr(importlib.import_module(_ATTRIBUTES[name]), name)
    raise AttributeError(f"module 'pipelines' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
