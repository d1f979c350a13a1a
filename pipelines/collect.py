"""The gate's stages as plain functions (no Prefect), and all of them in one call.

The gate flow wraps each stage in a task; the MLflow evaluator and scripts
call :func:`collect_evidence`. Either way the same code reads the audit set
and runs the checks.
"""

from __future__ import annotations

from pipelines.audit import AuditResult, audit_images
from pipelines.audit_set import AuditSet, load_audit_set
from pipelines.audit_texts import TextAuditResult, TextAuditSet, audit_texts, is_text_manifest
from pipelines.audit_texts import load_text_audit_set as read_text_audit_set
from pipelines.counterfactual import (
    CounterfactualEvidence,
    counterfactual_audit,
    text_counterfactual_audit,
)
from pipelines.discovery import DiscoveryEvidence, discovery_audit
from pipelines.errors import GateError
from pipelines.evidence import GateEvidence, TextGateEvidence
from pipelines.gate_policy import GatePolicy
from pipelines.policy import AuditPlan, Thresholds
from pipelines.sanity import SanityEvidence, sanity_audit
from pipelines.tracking import LoadedModel

__all__ = [
    "cam_stage",
    "collect_evidence",
    "counterfactual_stage",
    "discovery_stage",
    "image_checks",
    "image_plan",
    "is_text_policy",
    "load_text_audit_set",
    "sanity_stage",
    "text_audit_stage",
    "text_counterfactual_stage",
]


def is_text_policy(policy: GatePolicy) -> bool:
    """Text when the policy says so, or (``auto``) when the CSV has a ``text`` column."""
    return policy.modality == "text" or (
        policy.modality == "auto" and is_text_manifest(policy.audit_set)
    )


def image_plan(data: AuditSet, plan: AuditPlan) -> AuditPlan:
    """The plan for this audit set: without spurious regions, only checks that need none.

    Such a set can only be gated by strategy discovery; without it the gate
    would check nothing, so that is an error naming the fix.
    """
    if data.has_regions:
        return plan
    if plan.discovery is None:
        raise GateError(
            f"audit set {data.manifest} has no spurious regions (no 'spurious_mask' or "
            "'spurious_box' column), so no heatmap or counterfactual check applies: enable "
            "checks.discovery in the policy to gate it on shortcuts nobody labelled"
        )
    return plan.model_copy(update={"counterfactual": False})


def image_checks(plan: AuditPlan, *, regions: bool) -> tuple[str, ...]:
    """The lines of evidence an image verdict rests on (the ``xai_gate.checks`` tag)."""
    return (
        *(plan.cam_methods if regions else ()),
        *(("counterfactual",) if plan.counterfactual else ()),
        *(("sanity",) if plan.sanity else ()),
        *(("discovery",) if plan.discovery is not None else ()),
    )


def cam_stage(
    model: LoadedModel, data: AuditSet, thresholds: Thresholds, plan: AuditPlan
) -> AuditResult:
    return audit_images(
        model.module,
        data.images,
        data.labels,
        data.masks,
        image_ids=data.image_ids,
        class_names=data.class_names,
        thresholds=thresholds,
        methods=plan.cam_methods,
        target_layer=list(plan.target_layers) or None,
        batch_size=plan.batch_size,
        regions=data.has_regions,
    )


def counterfactual_stage(
    model: LoadedModel, data: AuditSet, plan: AuditPlan
) -> CounterfactualEvidence:
    return counterfactual_audit(
        model.module,
        data.images,
        data.labels,
        data.masks,
        class_names=data.class_names,
        batch_size=plan.batch_size,
    )


def discovery_stage(
    model: LoadedModel, data: AuditSet, audit: AuditResult, thresholds: Thresholds, plan: AuditPlan
) -> DiscoveryEvidence | None:
    """Strategy discovery on the CAM stage's heatmaps; None when the plan leaves it out."""
    if plan.discovery is None:
        return None
    return discovery_audit(
        model.module,
        data.images,
        audit,
        plan.discovery,
        thresholds,
        class_names=data.class_names,
        batch_size=plan.batch_size,
    )


def sanity_stage(model: LoadedModel, data: AuditSet, plan: AuditPlan) -> SanityEvidence:
    return sanity_audit(
        model.module,
        data.images,
        image_ids=data.image_ids,
        method=plan.gating_method,
        target_layers=plan.target_layers,
        n_images=plan.sanity_images,
    )


def load_text_audit_set(model: LoadedModel, policy: GatePolicy) -> TextAuditSet:
    """The policy's text audit set, after checking the model can read text at all."""
    if policy.checks.discovery.enabled:
        raise GateError(
            "checks.discovery clusters image heatmaps and does not apply to the text audit set "
            f"{policy.audit_set}: disable it in this policy"
        )
    if model.tokenizer is None:
        raise GateError(
            f"{model.uri} has no tokenizer, so it cannot be gated on a text audit set: log it "
            "with metadata={'modality': 'text'} and its tokenizer files as extra_files"
        )
    return read_text_audit_set(policy.audit_set, class_names=model.class_names)


def text_audit_stage(
    model: LoadedModel, data: TextAuditSet, thresholds: Thresholds, plan: AuditPlan
) -> TextAuditResult:
    return audit_texts(
        model.module,
        model.tokenizer,
        data.texts,
        data.labels,
        data.spurious,
        text_ids=data.text_ids,
        class_names=data.class_names,
        thresholds=thresholds,
        manifest=data.manifest,
        batch_size=plan.batch_size,
    )


def text_counterfactual_stage(
    model: LoadedModel, data: TextAuditSet, plan: AuditPlan
) -> CounterfactualEvidence:
    return text_counterfactual_audit(
        model.module,
        model.tokenizer,
        data.texts,
        data.labels,
        data.spurious,
        class_names=data.class_names,
        batch_size=plan.batch_size,
    )


def collect_evidence(model: LoadedModel, policy: GatePolicy) -> GateEvidence | TextGateEvidence:
    """Run every check the policy asks for on its audit set."""
    thresholds, plan = policy.thresholds(), policy.plan()
    if is_text_policy(policy):
        texts = load_text_audit_set(model, policy)
        return TextGateEvidence(
            audit=text_audit_stage(model, texts, thresholds, plan),
            counterfactual=text_counterfactual_stage(model, texts, plan)
            if plan.counterfactual
            else None,
            class_names=texts.class_names,
        )
    images = load_audit_set(policy.audit_set, class_names=model.class_names)
    plan = image_plan(images, plan)
    audit = cam_stage(model, images, thresholds, plan)
    return GateEvidence(
        audit=audit,
        counterfactual=counterfactual_stage(model, images, plan) if plan.counterfactual else None,
        sanity=sanity_stage(model, images, plan) if plan.sanity else None,
        images=images.images,
        class_names=images.class_names,
        masks=images.masks,
        discovery=discovery_stage(model, images, audit, thresholds, plan),
        regions=images.has_regions,
    )
