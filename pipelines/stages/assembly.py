"""The gate's stages, assembled once: a policy and a model in, the evidence out.

:func:`collect_evidence` is the only place that decides which stage runs,
on what, and in which order, for images and for text. *How* each stage runs
is the runner's business (:class:`StageRunner`): a plain call
(:data:`INLINE`, for the MLflow evaluator and scripts), or the judging
worker's recording runner (the gate flow, ``pipelines.judging.worker``), which
may submit to Dask, in which case the CAM audit is cut into shards submitted
side by side.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Generic, ParamSpec, Protocol, TypeVar, cast

from pipelines.audit_sets.images import AuditSet, load_audit_set
from pipelines.audit_sets.texts import TextAuditSet, is_text_manifest, load_text_audit_set
from pipelines.devices import on_device
from pipelines.errors import GateError
from pipelines.evidence.base import Evidence
from pipelines.evidence.images import ImageEvidence
from pipelines.evidence.texts import TextEvidence
from pipelines.policy.schema import AuditRules, GatePolicy
from pipelines.stages.cam import AuditResult, audit_images, merge_audits, shard_bounds
from pipelines.stages.counterfactual import (
    CounterfactualEvidence,
    counterfactual_audit,
    text_counterfactual_audit,
)
from pipelines.stages.discovery import DiscoveryEvidence, discovery_audit
from pipelines.stages.precision import (
    PrecisionEvidence,
    image_precision_probe,
    text_precision_probe,
)
from pipelines.stages.sanity import SanityEvidence, sanity_audit
from pipelines.stages.text import TextAuditResult, audit_texts
from pipelines.tracking.models import LoadedModel
from pipelines.verdict.evidence_digest import audit_set_digest
from xai_checks.precision import mixed_precision

__all__ = [
    "INLINE",
    "InlineRunner",
    "Pending",
    "StageRunner",
    "audit_set_stage",
    "cam_stage",
    "collect_evidence",
    "counterfactual_stage",
    "discover",
    "discovery_stage",
    "image_precision_stage",
    "is_text_policy",
    "rules_for_audit_set",
    "rules_for_batch",
    "rules_for_model",
    "sanity_stage",
    "text_audit_set_stage",
    "text_audit_stage",
    "text_counterfactual_stage",
    "text_precision_stage",
]

T = TypeVar("T")
P = ParamSpec("P")
T_co = TypeVar("T_co", covariant=True)


class Pending(Protocol[T_co]):
    """A stage submitted to run alongside others; ``result()`` waits for it."""

    def result(self) -> T_co: ...


class StageRunner(Protocol):
    """Runs one named stage: ``run`` in order, ``submit`` to run beside other submitted ones."""

    def run(self, stage: str, fn: Callable[..., T], *args: Any) -> T: ...

    def submit(self, stage: str, fn: Callable[..., T], *args: Any) -> Pending[T]: ...


@dataclass(frozen=True)
class _Done(Generic[T]):
    value: T

    def result(self) -> T:
        return self.value


class InlineRunner:
    """Plain calls in this process, one after the other."""

    def run(self, stage: str, fn: Callable[..., T], *args: Any) -> T:
        return fn(*args)

    def submit(self, stage: str, fn: Callable[..., T], *args: Any) -> Pending[T]:
        return _Done(fn(*args))


INLINE = InlineRunner()


def is_text_policy(policy: GatePolicy) -> bool:
    """Text when the policy says so, or (``auto``) when the CSV has a ``text`` column."""
    return policy.modality == "text" or (
        policy.modality == "auto" and is_text_manifest(policy.audit_set)
    )


def rules_for_audit_set(data: AuditSet, rules: AuditRules) -> AuditRules:
    """The rules for this audit set: without spurious regions, only checks that need none.

    Such a set can only be gated by strategy discovery; without it the gate
    would check nothing, so that is an error naming the fix.
    """
    if data.has_regions:
        return rules
    if not rules.checks.discovery.enabled:
        raise GateError(
            f"audit set {data.manifest} has no spurious regions (no 'spurious_mask' or "
            "'spurious_box' column), so no heatmap or counterfactual check applies: enable "
            "checks.discovery in the policy to gate it on shortcuts nobody labelled"
        )
    return rules.without_regions()


def discover(model: LoadedModel, policy: GatePolicy) -> tuple[AuditSet, DiscoveryEvidence]:
    """Strategy discovery alone, inline (``xai-gate discover``): the CAM audit, then discovery.

    Discovery runs whatever the policy says of it; the other checks do not run.
    """
    if is_text_policy(policy):
        raise GateError(
            f"discovery clusters image heatmaps; {policy.audit_set} is a text audit set"
        )
    rules = rules_for_model(model, policy.rules().with_options(discovery=True))
    model = on_device(model, rules.device)
    images = audit_set_stage(model, policy)
    rules = rules_for_audit_set(images, rules)
    _, rules = _probe_precision(INLINE, image_precision_stage, model, images, rules)
    audit = cam_stage(model, images, rules)
    return images, cast(DiscoveryEvidence, discovery_stage(model, images, audit, rules))


def collect_evidence(
    model: LoadedModel,
    policy: GatePolicy,
    *,
    runner: StageRunner = INLINE,
    shards: int = 1,
) -> Evidence:
    """Run every check the policy asks for on its audit set, each stage through ``runner``.

    ``shards > 1`` cuts the image CAM audit on batch edges into that many
    stages submitted beside the counterfactual and sanity stages (on Dask
    workers, with a Dask task runner), merged in order so the scores equal an
    unsharded run's.
    """
    rules = rules_for_model(model, policy.rules())
    model = on_device(model, rules.device)  # once: every stage moves its batches to it
    if is_text_policy(policy):
        texts = runner.run("load-text-audit-set", text_audit_set_stage, model, policy)
        precision, rules = _probe_precision(runner, text_precision_stage, model, texts, rules)
        audit = runner.run("text-audit", text_audit_stage, model, texts, rules)
        counterfactual = (
            runner.run("text-counterfactual-audit", text_counterfactual_stage, model, texts, rules)
            if rules.checks.counterfactual.enabled
            else None
        )
        return TextEvidence(
            audit=audit,
            counterfactual=counterfactual,
            class_names=texts.class_names,
            evidence_lines=rules.evidence_lines(text=True),
            precision=precision,
        )
    images = runner.run("load-audit-set", audit_set_stage, model, policy)
    rules = rules_for_audit_set(images, rules)
    precision, rules = _probe_precision(runner, image_precision_stage, model, images, rules)
    audit, counterfactual, sanity = _image_stages(model, images, rules, runner, shards)
    return ImageEvidence(
        audit=audit,
        counterfactual=counterfactual,
        sanity=sanity,
        images=images.images,
        class_names=images.class_names,
        masks=images.masks,
        discovery=runner.run("discover-strategies", discovery_stage, model, images, audit, rules),
        regions=images.has_regions,
        evidence_lines=rules.evidence_lines(regions=images.has_regions),
        precision=precision,
    )


def _probe_precision(
    runner: StageRunner,
    probe: Callable[[LoadedModel, Any, AuditRules], PrecisionEvidence],
    model: LoadedModel,
    data: AuditSet | TextAuditSet,
    rules: AuditRules,
) -> tuple[PrecisionEvidence | None, AuditRules]:
    """The probe's finding and the rules at the precision every later stage runs at: the
    asked one where the probe allows it, else fp32. Nothing to probe for fp32."""
    if rules.precision == "fp32":
        return None, rules
    found = runner.run("precision-probe", probe, model, data, rules)
    return found, rules.with_options(precision=found.used)


def _image_stages(
    model: LoadedModel, images: AuditSet, rules: AuditRules, runner: StageRunner, shards: int
) -> tuple[AuditResult, CounterfactualEvidence | None, SanityEvidence | None]:
    counterfactual_on, sanity_on = rules.checks.counterfactual.enabled, rules.sanity.enabled
    if shards <= 1:
        return (
            runner.run("cam-audit", cam_stage, model, images, rules),
            runner.run("counterfactual-audit", counterfactual_stage, model, images, rules)
            if counterfactual_on
            else None,
            runner.run("sanity-check", sanity_stage, model, images, rules) if sanity_on else None,
        )
    bounds = shard_bounds(len(images), shards, rules.batch_size)
    parts = [
        runner.submit("cam-audit", cam_stage, model, images.subset(a, b), rules) for a, b in bounds
    ]
    counterfactual = (
        runner.submit("counterfactual-audit", counterfactual_stage, model, images, rules)
        if counterfactual_on
        else None
    )
    sanity = (
        runner.submit("sanity-check", sanity_stage, model, images, rules) if sanity_on else None
    )
    audit = merge_audits(
        [part.result() for part in parts], flag_mass=rules.checks.heatmaps.flag_mass
    )
    return (
        audit,
        counterfactual.result() if counterfactual is not None else None,
        sanity.result() if sanity is not None else None,
    )


# The stages: each a plain function of the model, its data and the rules, so any runner
# can wrap it (a Prefect task shows and retries each on its own).


def _at_rules_precision(stage: Callable[P, T]) -> Callable[P, T]:
    """The stage with every forward pass of its model at ``rules.precision`` (``rules`` is
    the stage's last argument). Set inside the stage, so it holds in whichever thread or
    Dask worker the runner runs it."""

    @functools.wraps(stage)
    def at_precision(*args: P.args, **kwargs: P.kwargs) -> T:
        rules = cast(AuditRules, args[-1])
        with mixed_precision(rules.precision):
            return stage(*args, **kwargs)

    return at_precision


def image_precision_stage(
    model: LoadedModel, data: AuditSet, rules: AuditRules
) -> PrecisionEvidence:
    """May the stages run at ``rules.precision``? Measured on the first audit images."""
    return image_precision_probe(on_device(model, rules.device).module, data.images, rules)


def text_precision_stage(
    model: LoadedModel, data: TextAuditSet, rules: AuditRules
) -> PrecisionEvidence:
    """May the stages run at ``rules.precision``? Measured on the first audit texts."""
    return text_precision_probe(
        on_device(model, rules.device).module, model.tokenizer, list(data.texts), rules
    )


@_at_rules_precision
def cam_stage(model: LoadedModel, data: AuditSet, rules: AuditRules) -> AuditResult:
    heat = rules.checks.heatmaps
    return audit_images(
        on_device(model, rules.device).module,
        data.images,
        data.labels,
        data.masks,
        image_ids=data.image_ids,
        class_names=data.class_names,
        flag_mass=heat.flag_mass,
        methods=heat.methods,
        target_layer=list(heat.target_layers) or None,
        batch_size=rules.batch_size,
        regions=data.has_regions,
    )


@_at_rules_precision
def counterfactual_stage(
    model: LoadedModel, data: AuditSet, rules: AuditRules
) -> CounterfactualEvidence:
    return counterfactual_audit(
        on_device(model, rules.device).module,
        data.images,
        data.labels,
        data.masks,
        class_names=data.class_names,
        batch_size=rules.batch_size,
    )


@_at_rules_precision
def discovery_stage(
    model: LoadedModel, data: AuditSet, audit: AuditResult, rules: AuditRules
) -> DiscoveryEvidence | None:
    """Strategy discovery on the CAM stage's heatmaps; None when the rules leave it out."""
    if not rules.checks.discovery.enabled:
        return None
    return discovery_audit(
        on_device(model, rules.device).module,
        data.images,
        audit,
        rules.checks.discovery,
        labels=data.labels,
        class_names=data.class_names,
        batch_size=rules.batch_size,
    )


@_at_rules_precision
def sanity_stage(model: LoadedModel, data: AuditSet, rules: AuditRules) -> SanityEvidence:
    return sanity_audit(
        on_device(model, rules.device).module,
        data.images,
        image_ids=data.image_ids,
        method=rules.gating_method,
        target_layers=rules.checks.heatmaps.target_layers,
        n_images=rules.sanity.images,
        batch_size=rules.batch_size,
    )


def audit_set_stage(model: LoadedModel, policy: GatePolicy) -> AuditSet:
    """The policy's image audit set, labels checked against the model's class names, its
    image size against an exported model's static one (before any compute)."""
    data = _checked_once(load_audit_set, Path(policy.audit_set), model.class_names)
    if model.input_size is not None and data.images.size != model.input_size:
        raise GateError(
            f"{model.uri} was exported (pt2) for {model.input_size[1]}x{model.input_size[0]} "
            f"images, but the audit set {data.manifest} holds "
            f"{data.images.size[1]}x{data.images.size[0]} ones: resize the audit set, or log "
            "the model with a dynamic image size"
        )
    _check_runs_on(model, data)
    return data


def _check_runs_on(model: LoadedModel, data: AuditSet) -> None:
    """One forward pass on the first image, so a model that cannot take the audit set's
    images (too small for its pooling, too few channels) is one line naming both, not a
    torch error from deep inside the first stage. Eval mode, no gradients, mode restored."""
    import torch

    height, width = data.images.size
    image = data.images[:1]
    batch = image if model.max_batch is None else image.expand(model.max_batch, *image.shape[1:])
    module, training = model.module, model.module.training
    try:
        if training:  # an export may refuse the call even when it changes nothing
            module.eval()
        with torch.no_grad():
            module(batch)
    except (RuntimeError, ValueError, IndexError, TypeError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        raise GateError(
            f"{model.uri} cannot run on the audit set's {width}x{height} images "
            f"({data.manifest}): {first}; give it images of the size it was trained on"
        ) from None
    finally:
        if training:
            module.train()


def rules_for_model(model: LoadedModel, rules: AuditRules) -> AuditRules:
    """The rules as the model can run them (:func:`rules_for_batch` of its static batch)."""
    return rules_for_batch(model.max_batch, rules)


def rules_for_batch(max_batch: int | None, rules: AuditRules) -> AuditRules:
    """An export with a static batch runs exactly that many inputs at a time, in every
    stage (a last, shorter batch padded up to it)."""
    if max_batch is None or rules.batch_size == max_batch:
        return rules
    return rules.with_options(batch_size=max_batch)


def text_audit_set_stage(model: LoadedModel, policy: GatePolicy) -> TextAuditSet:
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
    return _checked_once(load_text_audit_set, Path(policy.audit_set), model.class_names)


AuditSetT = TypeVar("AuditSetT", AuditSet, TextAuditSet)

_CHECKED: dict[tuple[str, str, str, tuple[str, ...] | None], Any] = {}
_CHECKED_LOCK = threading.Lock()
"""Gates of one process may load from several threads (the listener's worker, task runners)."""
_CHECKED_MOST = 4
"""Audit sets kept checked per process (the listener and the sweeper gate version after
version on the same few)."""


def _checked_once(
    load: Callable[..., AuditSetT], manifest: Path, class_names: Sequence[str] | None
) -> AuditSetT:
    """``load(manifest)``, its Great Expectations checks run once per content in a process.

    A long-running gate (``xai-gate listen``, a sweep) gates version after version on one
    audit set; checking its manifest and every file again costs about 1.5 s a gate.
    Keyed by the audit set's content digest (the manifest and every file it names), so
    an edited set is checked again. Labels are copied: no gate sees another's tensor.
    """
    digest = audit_set_digest(manifest)
    if not digest:  # no manifest: let the loader say so
        return load(manifest, class_names=class_names)
    names = tuple(class_names) if class_names is not None else None
    key = (load.__name__, str(manifest.absolute()), digest, names)
    with _CHECKED_LOCK:
        cached = _CHECKED.get(key)
    if cached is None:
        cached = load(manifest, class_names=class_names)  # outside the lock: it takes seconds
        with _CHECKED_LOCK:
            while len(_CHECKED) >= _CHECKED_MOST:
                _CHECKED.pop(next(iter(_CHECKED)))
            _CHECKED[key] = cached
    return replace(cached, labels=cached.labels.clone())


@_at_rules_precision
def text_audit_stage(model: LoadedModel, data: TextAuditSet, rules: AuditRules) -> TextAuditResult:
    return audit_texts(
        on_device(model, rules.device).module,
        model.tokenizer,
        data.texts,
        data.labels,
        data.spurious,
        text_ids=data.text_ids,
        class_names=data.class_names,
        flag_mass=rules.checks.heatmaps.flag_mass,
        manifest=data.manifest,
        lines=data.lines,
        batch_size=rules.batch_size,
    )


@_at_rules_precision
def text_counterfactual_stage(
    model: LoadedModel, data: TextAuditSet, rules: AuditRules
) -> CounterfactualEvidence:
    return text_counterfactual_audit(
        on_device(model, rules.device).module,
        model.tokenizer,
        data.texts,
        data.labels,
        data.spurious,
        class_names=data.class_names,
        batch_size=rules.batch_size,
    )
