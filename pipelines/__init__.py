"""Policy, stages, evidence, MLflow and the registry gate, over ``xai_checks``.

Imports no Prefect: the flows build on this layer. Names load lazily, so the
CLI starts fast. The sub-packages:

* ``pipelines.policy``: the one schema of every rule, policy files, the example;
* ``pipelines.audit_sets``: image manifests and text CSVs on disk;
* ``pipelines.stages``: the gate's stages and their one assembly;
* ``pipelines.evidence``: what a run found, its columns and GX checks;
* ``pipelines.verdict``: deciding, signing and recording, the guarded registry;
* ``pipelines.tracking``: MLflow (tracking URI, model loading, logging, evaluator);
* ``pipelines.report``: figures, attention views, the HTML report.
"""

from __future__ import annotations

from xai_checks.compat import lazy_exports, redirect_moved_modules

_EXPORTS = {
    **dict.fromkeys(
        ("AuditSet", "AuditSetError", "load_audit_set", "write_audit_set"),
        "pipelines.audit_sets.images",
    ),
    "Evidence": "pipelines.evidence.base",
    "EvidenceValidation": "pipelines.evidence.base",
    "ImageEvidence": "pipelines.evidence.images",
    "TextEvidence": "pipelines.evidence.texts",
    **dict.fromkeys(("AuditRules", "GatePolicy", "load_policy"), "pipelines.policy"),
    "collect_evidence": "pipelines.stages.assembly",
    **dict.fromkeys(("AuditResult", "audit_images"), "pipelines.stages.cam"),
    **dict.fromkeys(
        ("CounterfactualEvidence", "counterfactual_audit"), "pipelines.stages.counterfactual"
    ),
    **dict.fromkeys(("SanityEvidence", "sanity_audit"), "pipelines.stages.sanity"),
    **dict.fromkeys(
        ("GateDecision", "Verdict", "decide", "record_verdict"), "pipelines.verdict.decision"
    ),
}

MOVED_MODULES = {
    "pipelines.audit": "pipelines.stages.cam",
    "pipelines.audit_set": "pipelines.audit_sets.images",
    "pipelines.audit_texts": ("pipelines.audit_sets.texts", "pipelines.stages.text"),
    "pipelines.attention_html": "pipelines.report.attention_html",
    "pipelines.attention_plots": "pipelines.report.attention_plots",
    "pipelines.collect": "pipelines.stages.assembly",
    "pipelines.counterfactual": "pipelines.stages.counterfactual",
    "pipelines.discovery": "pipelines.stages.discovery",
    "pipelines.discovery_plots": "pipelines.report.discovery_plots",
    "pipelines.gate": "pipelines.verdict.decision",
    "pipelines.gate_policy": "pipelines.policy",
    "pipelines.methods": "xai_checks.methods",
    "pipelines.mlflow_evaluator": "pipelines.tracking.evaluator",
    "pipelines.plots": "pipelines.report.plots",
    "pipelines.registry_guard": "pipelines.verdict.guard",
    "pipelines.sanity": "pipelines.stages.sanity",
    "pipelines.signing": "pipelines.verdict.signing",
    "pipelines.validation": "pipelines.evidence.gx",
}
"""Modules of release 0.1 and where they went; the old paths import, with a warning, until
the next release. (``pipelines.policy`` is now the policy package: its old contents, the
column schemas and GX builders, are in ``pipelines.evidence``; ``pipelines.report`` is a
package whose ``html`` module holds the old one.)"""

RENAMED = {
    "ImageEvidence": "pipelines.evidence.images:ImageEvidence",
    "TextEvidence": "pipelines.evidence.texts:TextEvidence",
    "Validation": "pipelines.evidence.base:EvidenceValidation",
}
"""Public names of release 0.1 that were renamed: old name -> ``module:new_name``."""

REMOVED = {
    name: "every rule, its default and bounds now live in pipelines.policy.GatePolicy; "
    "stages take pipelines.policy.AuditRules (AuditRules.from_options(max_spurious_mass=...))"
    for name in ("Thresholds", "AuditPlan", "DiscoveryPlan")
}

redirect_moved_modules(MOVED_MODULES)
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, renamed=RENAMED, removed=REMOVED)
