"""Every line of evidence for one model, as plain function calls (no Prefect).

The gate flow runs the same stages as separate tasks; the MLflow evaluator
and scripts call :func:`collect_evidence` in one go.
"""

from __future__ import annotations

from pipelines.audit import audit_images
from pipelines.audit_set import load_audit_set
from pipelines.audit_texts import audit_texts, is_text_manifest, load_text_audit_set
from pipelines.counterfactual import counterfactual_audit, text_counterfactual_audit
from pipelines.errors import GateError
from pipelines.evidence import GateEvidence, TextGateEvidence
from pipelines.gate_policy import GatePolicy
from pipelines.sanity import sanity_audit
from pipelines.tracking import LoadedModel

__all__ = ["collect_evidence", "is_text_policy"]


def is_text_policy(policy: GatePolicy) -> bool:
    return policy.modality == "text" or (
        policy.modality == "auto" and is_text_manifest(policy.audit_set)
    )


def collect_evidence(model: LoadedModel, policy: GatePolicy) -> GateEvidence | TextGateEvidence:
    """Run every check the policy asks for on its audit set."""
    thresholds, plan = policy.thresholds(), policy.plan()
    if is_text_policy(policy):
        if model.tokenizer is None:
            raise GateError(f"{model.uri} has no tokenizer, so it cannot be audited on texts")
        data = load_text_audit_set(policy.audit_set, class_names=model.class_names)
        args = (model.module, model.tokenizer, data.texts, data.labels, data.spurious)
        return TextGateEvidence(
            audit=audit_texts(
                *args,
                text_ids=data.text_ids,
                class_names=data.class_names,
                thresholds=thresholds,
                batch_size=plan.batch_size,
            ),
            counterfactual=text_counterfactual_audit(
                *args, class_names=data.class_names, batch_size=plan.batch_size
            )
            if plan.counterfactual
            else None,
            class_names=data.class_names,
        )
    images = load_audit_set(policy.audit_set, class_names=model.class_names)
    args = (model.module, images.images, images.labels, images.masks)
    return GateEvidence(
        audit=audit_images(
            *args,
            image_ids=images.image_ids,
            class_names=images.class_names,
            thresholds=thresholds,
            methods=plan.cam_methods,
            target_layer=list(plan.target_layers) or None,
            batch_size=plan.batch_size,
        ),
        counterfactual=counterfactual_audit(
            *args, class_names=images.class_names, batch_size=plan.batch_size
        )
        if plan.counterfactual
        else None,
        sanity=sanity_audit(
            model.module,
            images.images,
            image_ids=images.image_ids,
            method=plan.gating_method,
            target_layers=plan.target_layers,
            n_images=plan.sanity_images,
        )
        if plan.sanity
        else None,
        images=images.images,
        class_names=images.class_names,
    )
