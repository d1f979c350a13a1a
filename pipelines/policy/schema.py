"""The gate policy: every rule, its default, its bounds and its description, in one place.

Everything that judges a model is derived from :class:`GatePolicy`, so no
default or bound is written anywhere else:

* the Great Expectations suites (``pipelines.evidence.expectations``);
* the MLflow ``MetricThreshold``s (:meth:`AuditRules.metric_thresholds`);
* the verdict (``pipelines.verdict.decide`` plus :attr:`AuditRules.inconclusive`);
* the gate's options: each leaf field is one flat option (:func:`policy_options`),
  which is a keyword of :meth:`GatePolicy.from_options`, a flag of
  ``xai-gate gate`` (its help is the field's description) and an MLflow param;
* the commented example policy (``pipelines.policy.example``);
* the policy hash that signed verdicts carry (:meth:`GatePolicy.digest`).

Adding a threshold is adding one field here (see the README's development section).
"""

from __future__ import annotations

import difflib
import hashlib
import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, get_args, get_origin

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo

from pipelines.errors import GateError

if TYPE_CHECKING:
    from mlflow.models import MetricThreshold

__all__ = [
    "AuditRules",
    "Checks",
    "CounterfactualChecks",
    "DiscoveryChecks",
    "GatePolicy",
    "HeatmapChecks",
    "PolicyOption",
    "SanityCheck",
    "policy_options",
]


def _real_number(value: Any) -> Any:
    """A threshold is a number: ``true`` is not 1 and ``false`` is not 0 (YAML and JSON
    would read them so, and a threshold of 1 blocks nothing)."""
    if isinstance(value, bool):
        raise ValueError(f"must be a number, not {str(value).lower()}")
    return value


Number = Annotated[float, BeforeValidator(_real_number)]
Count = Annotated[int, BeforeValidator(_real_number)]


def _option(name: str | None = None, *, flag: str | None = None) -> dict[str, str]:
    """``json_schema_extra`` naming a field's flat option (default: the field's name) and flag."""
    return {key: value for key, value in (("option", name), ("flag", flag)) if value is not None}


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class HeatmapChecks(_Section):
    """Where the explanation sits: the gating method's relevance mass on the spurious region."""

    methods: tuple[str, ...] = Field(
        ("gradcam", "layercam"),
        min_length=1,
        description="Heatmap methods to run, repeatable or comma-separated; the first gates, "
        "the others are evidence.",
        json_schema_extra=_option("cam_methods", flag="method"),
    )
    target_layers: tuple[str, ...] = Field(
        (),
        description="Layers to explain, averaged; empty: the last spatial layer (CNN) or the "
        "last block's input norm (ViT).",
        json_schema_extra=_option(flag="target_layer"),
    )
    max_spurious_mass: Number = Field(
        0.30,
        ge=0.0,
        le=1.0,
        description="Upper bound on the mean share of the explanation on the spurious region.",
    )
    max_flagged_fraction: Number = Field(
        0.10,
        ge=0.0,
        le=1.0,
        description="Upper bound on the share of inputs with more than flag_mass on it.",
    )
    flag_mass: Number = Field(
        0.50,
        gt=0.0,
        le=1.0,
        description="An input is flagged when more than this share of its explanation is spurious.",
    )

    @field_validator("methods")
    @classmethod
    def _known_methods(cls, methods: tuple[str, ...]) -> tuple[str, ...]:
        from xai_checks.methods import method_names

        unknown = [m for m in methods if m not in method_names()]
        if unknown:
            raise ValueError(f"unknown method(s) {unknown}; known: {', '.join(method_names())}")
        if len(set(methods)) != len(methods):
            raise ValueError(f"methods lists a method twice: {list(methods)}")
        return methods


class CounterfactualChecks(_Section):
    """Whether the prediction follows the artifact when it is removed or added."""

    enabled: bool = Field(
        True,
        description="Run artifact removal and insertion.",
        json_schema_extra=_option("counterfactual"),
    )
    max_flip_rate: Number = Field(
        0.20,
        ge=0.0,
        le=1.0,
        description="Upper bound on the share of predictions that change when the artifact is "
        "removed (filled in from its surroundings).",
    )
    max_spurious_lift: Number = Field(
        0.20,
        ge=0.0,
        le=1.0,
        description="Upper bound on the mean rise in P(artifact's class) that adding the "
        "artifact to inputs of other classes causes (their own artifact filled in first).",
    )

    @model_validator(mode="before")
    @classmethod
    def _replaced_rules(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and "max_spurious_score" in data:
            raise ValueError(
                "max_spurious_score was replaced by max_spurious_lift: the gate bounds the rise "
                "in P(artifact's class) that pasting the artifact causes, not the raw "
                "probability, which a class-biased clean model exceeds with no shortcut at all"
            )
        return data


class DiscoveryChecks(_Section):
    """Unknown shortcuts: cluster each class's heatmaps (SpRAy) and test the odd clusters.

    Needs no spurious masks. A strategy above ``max_suspicion`` (by its clusters,
    or by what its region holds: presence, texture, stereotypy) is a warning; it blocks
    only when the region is confirmed behaviourally: filling it flips more than
    ``max_flip_rate`` of its predictions, or pasting it onto other classes'
    inputs raises P(its class) by more than ``max_lift``.
    """

    enabled: bool = Field(
        False,
        description="Find unlabelled shortcuts by clustering heatmaps (SpRAy); needs no masks.",
        json_schema_extra=_option("discovery"),
    )
    max_suspicion: Number = Field(
        0.50,
        ge=0.0,
        le=1.0,
        description="A strategy above this suspicion (its clusters look elsewhere, or its "
        "region holds something other classes lack, or the same copy on every image) is a "
        "warning, and its proposed region is tested.",
        json_schema_extra=_option("max_discovery_suspicion"),
    )
    max_flip_rate: Number = Field(
        0.50,
        ge=0.0,
        le=1.0,
        description="Filling a suspicious strategy's proposed region may flip at most this "
        "share of its predictions; above it the shortcut is confirmed and blocks.",
        json_schema_extra=_option("max_discovery_flip_rate"),
    )
    max_lift: Number = Field(
        0.30,
        ge=0.0,
        le=1.0,
        description="Pasting a suspicious strategy's proposed region onto other classes' inputs "
        "may raise P(its class) by at most this much on average; above it the shortcut is "
        "confirmed and blocks.",
        json_schema_extra=_option("max_discovery_lift"),
    )
    max_proposals: Count = Field(
        3,
        ge=1,
        description="Most suspicious strategies whose proposed region is tested.",
        json_schema_extra=_option("discovery_max_proposals"),
    )
    min_cluster_size: Count = Field(
        5,
        ge=1,
        description="Smaller strategies are listed but get no proposed region.",
        json_schema_extra=_option("discovery_min_cluster_size"),
    )
    max_clusters: Count = Field(
        8,
        ge=1,
        description="Most strategies per class (chosen by eigengap).",
        json_schema_extra=_option("discovery_max_clusters"),
    )
    n_neighbors: Count = Field(
        10,
        ge=1,
        description="Neighbours in the heatmaps' affinity graph.",
        json_schema_extra=_option("discovery_n_neighbors"),
    )
    mask_threshold: Number = Field(
        0.5,
        gt=0.0,
        lt=1.0,
        description="A proposed region is where the strategy's mean heatmap exceeds this share "
        "of its maximum (minus where the other strategies look).",
        json_schema_extra=_option("discovery_mask_threshold"),
    )


class Checks(_Section):
    """The lines of evidence that decide passed or blocked."""

    heatmaps: HeatmapChecks = Field(HeatmapChecks(), description="Text: gradient x input saliency.")
    counterfactual: CounterfactualChecks = Field(
        CounterfactualChecks(), description="Does the prediction follow the artifact?"
    )
    discovery: DiscoveryChecks = Field(
        DiscoveryChecks(), description="Unknown shortcuts (SpRAy); needs no masks."
    )
    attribution_alone: Literal["block", "warn"] = Field(
        "warn",
        description="When only the attribution checks (heatmap or saliency mass, flagged "
        "share) fail while removal and insertion ran and passed: block, or pass with a "
        "warning naming the disagreement (the model looks at the artifact but its "
        "predictions do not follow it).",
    )
    uninformative: Literal["block", "inconclusive", "warn"] = Field(
        "inconclusive",
        description="When the audit evidence is about nothing (accuracy not above chance, one "
        "prediction for inputs of mixed labels, blank images) and every check passed: block, "
        "record 'inconclusive' (exit 3), or pass with a warning. Only 'warn' promotes.",
        json_schema_extra=_option("on_uninformative"),
    )


class SanityCheck(_Section):
    """The randomisation check that decides whether heatmaps count as evidence at all."""

    enabled: bool = Field(
        True,
        description="Run the model-randomisation sanity check (images).",
        json_schema_extra=_option("sanity"),
    )
    images: Count = Field(
        16, ge=2, description="Audit images it uses.", json_schema_extra=_option("sanity_images")
    )
    max_correlation: Number = Field(
        0.50,
        ge=-1.0,
        le=1.0,
        description="Upper bound on the mean Spearman correlation between heatmaps of the model "
        "and of its fully randomised copy; above it the verdict is inconclusive.",
        json_schema_extra=_option("max_sanity_correlation"),
    )


_NOT_HASHED = {"device", "precision", "precision_tolerance", "model_builders"}
"""Where and at what precision the gate computes, and which builders may run: a verdict does
not depend on them (a reduced precision is used only within its measured tolerance; the model's
bytes are signed on their own), so they are not hashed."""


class AuditRules(_Section):
    """What an audit checks and the bounds it is judged by: a policy without its model."""

    checks: Checks = Field(Checks(), description="What decides passed or blocked.")
    sanity: SanityCheck = Field(
        SanityCheck(), description="Do the heatmaps depend on the weights at all?"
    )
    inconclusive: Literal["hold", "block"] = Field(
        "hold",
        description="What a failed sanity check means: hold records 'inconclusive' (exit 3), "
        "block records 'blocked'. Neither promotes.",
    )
    batch_size: Count = Field(32, ge=1, description="Inputs per forward pass.")
    device: str = Field(
        "auto",
        pattern=r"^(auto|cpu|mps|cuda(:\d+)?)$",
        description="Where every stage runs: auto (CUDA when available, else the CPU), cpu, "
        "cuda, cuda:N or mps. Not part of the policy's hash: a verdict does not depend on it.",
    )
    precision: Literal["fp32", "bf16", "fp16"] = Field(
        "fp32",
        description="The model's forward passes under autocast at bf16 or fp16 (faster on a "
        "GPU); maps, scores and gradients stay float32. Used only when a probe batch's "
        "probabilities and maps stay within precision_tolerance of fp32's, else the gate runs "
        "in fp32 and says why. Not part of the policy's hash.",
    )
    precision_tolerance: Number = Field(
        0.01,
        ge=0.0,
        le=1.0,
        description="How far bf16/fp16 may move a probe batch from fp32: any class probability, "
        "and the share of any heatmap (or attention map) that moves. Not part of the hash.",
    )

    @classmethod
    def from_options(cls, **options: Any) -> AuditRules:
        """Build from flat options (``max_spurious_mass=0.2``, ``cam_methods="gradcam"``).

        Unset options take the schema's defaults; an unknown name is an error
        naming the closest known ones.
        """
        return cls.model_validate(_nest(cls, options))

    def with_options(self, **options: Any) -> AuditRules:
        """A copy with some flat options changed (validated)."""
        return type(self).model_validate(_nest(type(self), options, base=self.model_dump()))

    def options(self) -> dict[str, Any]:
        """Every rule as a flat option: the MLflow params of a gate run."""
        return {option.name: option.value_in(self) for option in policy_options(type(self))}

    @property
    def gating_method(self) -> str:
        return self.checks.heatmaps.methods[0]

    def without_regions(self) -> AuditRules:
        """The rules for an audit set without spurious masks: nothing to remove or paste."""
        return self.with_options(counterfactual=False)

    def evidence_lines(self, *, text: bool = False, regions: bool = True) -> tuple[str, ...]:
        """The lines of evidence a verdict rests on (the ``xai_gate.checks`` tag)."""
        cf = ("counterfactual",) if self.checks.counterfactual.enabled else ()
        if text:
            return ("saliency", "attention", *cf)
        return (
            *(self.checks.heatmaps.methods if regions else ()),
            *cf,
            *(("sanity",) if self.sanity.enabled else ()),
            *(("discovery",) if self.checks.discovery.enabled else ()),
        )

    def bounds(self, *, text: bool = False, regions: bool = True) -> dict[str, float]:
        """Upper bound per gated MLflow metric (what the report and MetricThresholds show).

        ``regions=False``: the audit set has no spurious masks, so only checks that
        need none are gated.
        """
        heat, cf = self.checks.heatmaps, self.checks.counterfactual
        mass = "saliency" if text else heat.methods[0]
        bounds = (
            {
                f"{mass}.spurious_mass": heat.max_spurious_mass,
                f"{mass}.flagged_fraction": heat.max_flagged_fraction,
            }
            if regions
            else {}
        )
        if self.checks.discovery.enabled and not text:
            bounds["discovery.confirmed"] = 0.0
        if cf.enabled and regions:
            prefix = "text_counterfactual" if text else "counterfactual"
            bounds[f"{prefix}.removal_flip_rate"] = cf.max_flip_rate
            bounds[f"{prefix}.spurious_lift"] = cf.max_spurious_lift
        if self.sanity.enabled and not text:
            bounds["sanity.final_spearman"] = self.sanity.max_correlation
        return bounds

    def blocking_checks(self, *, text: bool = False, regions: bool = True) -> tuple[str, ...]:
        """The checks that can stop a pass: each enabled one whose bound lies below the most
        its metric can reach. Empty means the policy passes every model, shortcut or not."""
        heat, cf, found = self.checks.heatmaps, self.checks.counterfactual, []
        if regions:
            mass = "saliency" if text else heat.methods[0]
            if heat.max_spurious_mass < 1:
                found.append(f"{mass}.spurious_mass <= {heat.max_spurious_mass:g}")
            if heat.max_flagged_fraction < 1:
                found.append(f"{mass}.flagged_fraction <= {heat.max_flagged_fraction:g}")
            if cf.enabled and cf.max_flip_rate < 1:
                found.append(f"counterfactual removal flip rate <= {cf.max_flip_rate:g}")
            if cf.enabled and cf.max_spurious_lift < 1:
                found.append(f"counterfactual spurious lift <= {cf.max_spurious_lift:g}")
        discovery = self.checks.discovery
        if (
            discovery.enabled
            and not text
            and discovery.max_suspicion < 1
            and (discovery.max_flip_rate < 1 or discovery.max_lift < 1)
        ):
            found.append("discovery")
        if self.sanity.enabled and not text and self.sanity.max_correlation < 1:
            found.append(f"sanity correlation <= {self.sanity.max_correlation:g}")
        return tuple(found)

    def blocks_nothing(self, *, text: bool = False, regions: bool = True) -> str | None:
        """The loud warning for a policy under which nothing can block; None when something can."""
        if self.blocking_checks(text=text, regions=regions):
            return None
        return (
            "THIS POLICY CAN BLOCK NOTHING: every enabled check's threshold is at the most its "
            "metric can reach, or the check is off, so any model passes (lower a threshold or "
            "enable the counterfactual, sanity or discovery checks)"
        )

    def metric_thresholds(
        self, *, text: bool = False, regions: bool = True
    ) -> dict[str, MetricThreshold]:
        """The bounds as MLflow ``MetricThreshold``s (lower is better for each), for
        ``mlflow.validate_evaluation_results``."""
        from mlflow.models import MetricThreshold

        return {
            name: MetricThreshold(threshold=bound, greater_is_better=False)
            for name, bound in self.bounds(text=text, regions=regions).items()
        }


_ALIAS = re.compile(r"[\w\-]+")
_VERSION_ALIAS = re.compile(r"[vV]\d+")
"""MLflow's alias rules (``mlflow.utils.validation``): word characters and dashes; 'latest'
and version-like names are reserved."""


class GatePolicy(AuditRules):
    """A gate policy: the rules, plus which model, which audit set and which aliases.

    Paths in a policy file are relative to the file's folder (``load_policy``).
    """

    model: str = Field(
        min_length=1,
        description="Registered model name.",
        examples=["lesion-classifier"],
        json_schema_extra=_option(flag="model"),
    )
    protected_aliases: tuple[str, ...] = Field(
        ("champion",),
        min_length=1,
        description="Only a signed 'passed' verdict may move these; a pass moves the first.",
        json_schema_extra=_option("alias"),
    )
    audit_set: Path = Field(
        description="Image manifest or text CSV.",
        examples=["audit/manifest.csv"],
    )
    modality: Literal["auto", "image", "text"] = Field(
        "auto", description="auto: a CSV with a 'text' column is text."
    )
    on_alias_holder_blocked: Literal["keep", "remove"] = Field(
        "keep",
        description="When the version that holds the protected alias is gated again and not "
        "passed (e.g. under a stricter policy): keep the alias where it is, with a warning in "
        "the output, the report and the Prefect summary, or remove it.",
    )
    approval: bool = Field(False, description="Wait for a person to approve each pass.")
    require_signature: bool = Field(
        False,
        description="Refuse to gate without XAI_GATE_SECRET, so no verdict is ever unsigned.",
    )
    model_builders: tuple[str, ...] = Field(
        (),
        description="Code a weights-only model's metadata may name as its architecture, "
        "besides torchvision's builders and transformers' model classes: 'package.module:Name' "
        "or 'package.module:*' (also XAI_GATE_MODEL_BUILDERS). Not part of the policy's hash.",
        json_schema_extra=_option(flag="model_builder"),
    )

    @field_validator("protected_aliases")
    @classmethod
    def _valid_aliases(cls, aliases: tuple[str, ...]) -> tuple[str, ...]:
        """MLflow's own rules, so a bad name fails here and not after the whole audit."""
        for alias in aliases:
            if not _ALIAS.fullmatch(alias) or len(alias) > 255:
                raise ValueError(
                    f"alias {alias!r} is not a valid MLflow alias: letters, digits, '_' and '-' "
                    "only, at most 255 characters"
                )
            if alias.lower() == "latest" or _VERSION_ALIAS.fullmatch(alias):
                raise ValueError(
                    f"alias {alias!r} is reserved by MLflow ('latest' and 'v<number>' name "
                    "versions, not aliases): choose another, e.g. 'champion'"
                )
        return aliases

    @property
    def alias(self) -> str:
        """The alias a pass moves: the first protected one."""
        return self.protected_aliases[0]

    def rules(self) -> AuditRules:
        """The policy's rules alone (what the stages and the expectations read)."""
        return AuditRules.model_validate(self.model_dump(include=set(AuditRules.model_fields)))

    def digest(self) -> str:
        """SHA-256 of the canonical policy: a verdict names the exact rules that judged it."""
        canonical = json.dumps(self.model_dump(mode="json", exclude=_NOT_HASHED), sort_keys=True)
        return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True)
class PolicyOption:
    """One leaf of the schema as a flat option: a flow keyword, a CLI flag, an MLflow param."""

    name: str
    path: tuple[str, ...]
    """Keys from the policy's top level down to the field."""
    field: FieldInfo

    @property
    def flag(self) -> str:
        extra = self.field.json_schema_extra
        flag = extra.get("flag") if isinstance(extra, dict) else None
        return "--" + str(flag or self.name).replace("_", "-")

    @property
    def key(self) -> str:
        """Where it sits in a policy file: ``checks.heatmaps.max_spurious_mass``."""
        return ".".join(self.path)

    @property
    def required(self) -> bool:
        return self.field.is_required()

    @property
    def default(self) -> Any:
        return None if self.required else self.field.get_default(call_default_factory=True)

    @property
    def is_sequence(self) -> bool:
        return get_origin(self.field.annotation) is tuple

    @property
    def choices(self) -> tuple[str, ...] | None:
        annotation = self.field.annotation
        if get_origin(annotation) is Literal:
            return tuple(str(choice) for choice in get_args(annotation))
        if self.path[-1] == "methods":
            from xai_checks.methods import method_names

            return tuple(method_names())
        return None

    @property
    def bounds(self) -> str:
        """``0 <= x <= 1``-style text from the field's constraints, or ''."""
        low = high = None
        for rule in self.field.metadata:
            for attr, symbol in (("ge", ">="), ("gt", ">")):
                if getattr(rule, attr, None) is not None:
                    low = f"{getattr(rule, attr)} {'<=' if symbol == '>=' else '<'}"
            for attr, symbol in (("le", "<="), ("lt", "<")):
                if getattr(rule, attr, None) is not None:
                    high = f"{symbol} {getattr(rule, attr)}"
        if low is None and high is None:
            return ""
        return " ".join(part for part in (low, "x", high) if part)

    def value_in(self, policy: BaseModel) -> Any:
        value: Any = policy
        for key in self.path:
            value = getattr(value, key)
        return value


def policy_options(schema: type[AuditRules] = GatePolicy) -> tuple[PolicyOption, ...]:
    """Every leaf field of ``schema`` as a flat option, in the schema's order.

    Flat names are unique (a test checks it): that is what lets one flat
    ``--max-flip-rate`` style namespace stand for the nested policy.
    """
    return tuple(_leaves(schema, ()))


def _leaves(model: type[BaseModel], prefix: tuple[str, ...]) -> Iterator[PolicyOption]:
    fields = model.model_fields
    if issubclass(model, AuditRules) and model is not AuditRules:  # what is gated, then how
        own = [key for key in fields if key not in AuditRules.model_fields]
        fields = {key: fields[key] for key in [*own, *AuditRules.model_fields]}
    for key, info in fields.items():
        annotation = info.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            yield from _leaves(annotation, (*prefix, key))
            continue
        extra = info.json_schema_extra
        name = extra.get("option") if isinstance(extra, dict) else None
        yield PolicyOption(str(name or key), (*prefix, key), info)


def _nest(
    schema: type[AuditRules], options: Mapping[str, Any], *, base: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Flat options into the nested mapping ``schema`` validates; ``None`` values are unset."""
    known = {option.name: option for option in policy_options(schema)}
    unknown = [name for name in options if name not in known]
    if unknown:
        hints = []
        for name in unknown:
            close = difflib.get_close_matches(name, known, n=2)
            hints.append(f"{name!r}" + (f" (did you mean {' or '.join(close)}?)" if close else ""))
        raise GateError(f"unknown gate option(s) {', '.join(hints)}")
    nested: dict[str, Any] = base if base is not None else {}
    for name, value in options.items():
        if value is None:
            continue
        option = known[name]
        if option.is_sequence:
            value = _as_tuple(value)
        node = nested
        for key in option.path[:-1]:
            node = node.setdefault(key, {})
        node[option.path[-1]] = value
    return nested


def _as_tuple(value: Any) -> tuple[str, ...]:
    """A sequence option from a string (comma-separated) or a list of strings (each may be)."""
    items = [value] if isinstance(value, str) else list(value)
    return tuple(part.strip() for item in items for part in str(item).split(",") if part.strip())
