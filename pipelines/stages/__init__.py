"""The gate's stages (CAM audit, text audit, counterfactuals, sanity, discovery) and the one
function that assembles them (:func:`~pipelines.stages.assembly.collect_evidence`)."""

from __future__ import annotations

from xai_checks.compat import lazy_exports

_EXPORTS = {
    **dict.fromkeys(("INLINE", "StageRunner", "collect_evidence"), "pipelines.stages.assembly"),
    **dict.fromkeys(("AuditResult", "audit_images", "merge_audits"), "pipelines.stages.cam"),
    **dict.fromkeys(
        ("CounterfactualEvidence", "counterfactual_audit"), "pipelines.stages.counterfactual"
    ),
    **dict.fromkeys(("DiscoveryEvidence", "discovery_audit"), "pipelines.stages.discovery"),
    **dict.fromkeys(("SanityEvidence", "sanity_audit"), "pipelines.stages.sanity"),
    **dict.fromkeys(("TextAuditResult", "audit_texts"), "pipelines.stages.text"),
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
