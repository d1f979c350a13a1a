"""One gate policy, in a YAML file: every threshold, check and alias rule in one place.

The policy generates everything that judges a model, so no threshold lives
anywhere else:

* the Great Expectations suites (``score_checks`` / ``sanity_checks`` over
  :meth:`GatePolicy.thresholds`);
* the MLflow ``MetricThreshold``s (:meth:`GatePolicy.metric_thresholds`), for
  ``mlflow.validate_evaluation_results``;
* the verdict (``pipelines.gate.decide`` plus :attr:`GatePolicy.inconclusive`);
* the policy hash that signed verdicts carry (:meth:`GatePolicy.digest`).

Errors name the file, the key and its line: ``policy.yaml:7 checks.heatmaps.
max_spurious_mass: Input should be less than or equal to 1``.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from pipelines.errors import GateError
from pipelines.methods import AUDIT_METHODS
from pipelines.policy import AuditPlan, DiscoveryPlan, Thresholds

if TYPE_CHECKING:
    from mlflow.models import MetricThreshold

__all__ = ["EXAMPLE_POLICY", "GatePolicy", "PolicyError", "load_policy"]


class PolicyError(GateError, ValueError):
    """The policy file is missing, not YAML, or breaks the schema; names the key and line."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class HeatmapChecks(_Strict):
    """Where the explanation sits: the gating method's relevance mass on the spurious region."""

    methods: tuple[str, ...] = Field(
        ("gradcam", "layercam"), min_length=1, description="The first method gates."
    )
    target_layers: tuple[str, ...] = ()
    max_spurious_mass: float = Field(0.30, ge=0.0, le=1.0)
    max_flagged_fraction: float = Field(0.10, ge=0.0, le=1.0)
    flag_mass: float = Field(0.50, gt=0.0, le=1.0)

    @field_validator("methods")
    @classmethod
    def _known(cls, methods: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [m for m in methods if m not in AUDIT_METHODS]
        if unknown:
            raise ValueError(f"unknown method(s) {unknown}; known: {', '.join(AUDIT_METHODS)}")
        return methods


class CounterfactualChecks(_Strict):
    """Whether the prediction follows the artifact when it is removed or added."""

    enabled: bool = True
    max_flip_rate: float = Field(0.20, ge=0.0, le=1.0)
    max_spurious_score: float = Field(0.50, ge=0.0, le=1.0)


class DiscoveryChecks(_Strict):
    """Unknown shortcuts: cluster each class's heatmaps (SpRAy) and test the odd clusters.

    Needs no spurious masks. A strategy above ``max_suspicion`` is a warning;
    it blocks only when filling its proposed region flips more than
    ``max_flip_rate`` of its predictions.
    """

    enabled: bool = False
    max_suspicion: float = Field(0.50, ge=0.0, le=1.0)
    max_flip_rate: float = Field(0.50, ge=0.0, le=1.0)
    max_proposals: int = Field(3, ge=1)
    min_cluster_size: int = Field(5, ge=1)
    max_clusters: int = Field(8, ge=1)
    n_neighbors: int = Field(10, ge=1)
    mask_threshold: float = Field(0.5, gt=0.0, lt=1.0)


class Checks(_Strict):
    heatmaps: HeatmapChecks = HeatmapChecks()
    counterfactual: CounterfactualChecks = CounterfactualChecks()
    discovery: DiscoveryChecks = DiscoveryChecks()


class SanityRule(_Strict):
    """The randomisation check that decides whether heatmaps count as evidence at all."""

    enabled: bool = True
    images: int = Field(16, ge=2)
    max_correlation: float = Field(0.50, ge=-1.0, le=1.0)


class GatePolicy(_Strict):
    """A gate policy file, validated. Paths are relative to the file's folder."""

    model: str = Field(min_length=1, description="Registered model name.")
    protected_aliases: tuple[str, ...] = Field(("champion",), min_length=1)
    audit_set: Path
    modality: Literal["auto", "image", "text"] = "auto"
    checks: Checks = Checks()
    sanity: SanityRule = SanityRule()
    inconclusive: Literal["hold", "block"] = Field(
        "hold",
        description="What a failed sanity check means: 'hold' records the verdict "
        "'inconclusive' (exit 3), 'block' records 'blocked'. Neither promotes.",
    )
    approval: bool = Field(False, description="Wait for a person to approve a pass.")
    require_signature: bool = Field(
        False,
        description="Refuse to gate without XAI_GATE_SECRET, so no verdict is ever unsigned.",
    )
    batch_size: int = Field(32, ge=1)

    @property
    def alias(self) -> str:
        """The alias a pass moves: the first protected one."""
        return self.protected_aliases[0]

    def thresholds(self) -> Thresholds:
        heat, cf, found = self.checks.heatmaps, self.checks.counterfactual, self.checks.discovery
        return Thresholds(
            max_spurious_mass=heat.max_spurious_mass,
            max_flagged_fraction=heat.max_flagged_fraction,
            flag_mass=heat.flag_mass,
            max_flip_rate=cf.max_flip_rate,
            max_spurious_score=cf.max_spurious_score,
            max_sanity_correlation=self.sanity.max_correlation,
            max_discovery_suspicion=found.max_suspicion,
            max_discovery_flip_rate=found.max_flip_rate,
        )

    def plan(self) -> AuditPlan:
        heat = self.checks.heatmaps
        return AuditPlan(
            cam_methods=heat.methods,
            target_layers=heat.target_layers,
            counterfactual=self.checks.counterfactual.enabled,
            sanity=self.sanity.enabled,
            sanity_images=self.sanity.images,
            discovery=self._discovery_plan(),
            batch_size=self.batch_size,
        )

    def _discovery_plan(self) -> DiscoveryPlan | None:
        found = self.checks.discovery
        if not found.enabled:
            return None
        return DiscoveryPlan(
            n_neighbors=found.n_neighbors,
            max_clusters=found.max_clusters,
            min_cluster_size=found.min_cluster_size,
            max_proposals=found.max_proposals,
            mask_threshold=found.mask_threshold,
        )

    def metric_thresholds(
        self, *, text: bool = False, regions: bool = True
    ) -> dict[str, MetricThreshold]:
        """The policy's bounds as MLflow ``MetricThreshold``s, lower is better for each.

        ``mlflow.validate_evaluation_results`` checks an ``EvaluationResult``
        against them; the names are the gate's MLflow metric names.
        ``regions=False`` for an audit set without spurious masks.
        """
        from mlflow.models import MetricThreshold

        return {
            name: MetricThreshold(threshold=bound, greater_is_better=False)
            for name, bound in self.bounds(text=text, regions=regions).items()
        }

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
            bounds[f"{prefix}.spurious_score"] = cf.max_spurious_score
        if self.sanity.enabled and not text:
            bounds["sanity.final_spearman"] = self.sanity.max_correlation
        return bounds

    def digest(self) -> str:
        """SHA-256 of the canonical policy: a verdict names the exact rules that judged it."""
        canonical = json.dumps(self.model_dump(mode="json"), sort_keys=True)
        return hashlib.sha256(canonical.encode()).hexdigest()


def load_policy(path: str | Path) -> GatePolicy:
    """Read and validate a policy YAML; ``audit_set`` becomes absolute (relative to the file)."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise PolicyError(f"policy file not found: {path}")
    text = path.read_text(encoding="utf-8")
    try:
        node = yaml.compose(text)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise PolicyError(f"{path.name}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise PolicyError(f"{path.name}: a policy is a mapping of keys (model, audit_set, ...)")
    try:
        policy = GatePolicy.model_validate(data)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            location = [str(part) for part in error["loc"]]
            line = _line_of(node, location)
            where = f"{path.name}:{line}" if line else path.name
            problems.append(f"{where} {'.'.join(location) or '(top level)'}: {error['msg']}")
        raise PolicyError("invalid policy: " + "; ".join(problems)) from None
    audit_set = policy.audit_set
    if not audit_set.is_absolute():
        audit_set = (path.parent / audit_set).resolve()
    return policy.model_copy(update={"audit_set": audit_set})


def _line_of(node: Any, location: list[str]) -> int | None:
    """1-based line of the deepest YAML node on ``location`` (a key's line if it is unknown)."""
    line = None
    for part in location:
        if node is None or not hasattr(node, "value"):
            break
        if isinstance(node.value, list) and node.value and isinstance(node.value[0], tuple):
            match = next((pair for pair in node.value if pair[0].value == part), None)
            if match is None:
                break
            line = match[0].start_mark.line + 1
            node = match[1]
        elif isinstance(node.value, list) and part.isdigit() and int(part) < len(node.value):
            node = node.value[int(part)]
            line = node.start_mark.line + 1
        else:
            break
    return line


EXAMPLE_POLICY = """\
# xai-gate policy: every rule that decides whether a model version may be promoted.
# Check it with `xai-gate policy check FILE`; gate with `xai-gate gate --policy FILE --version N`.

model: lesion-classifier        # registered model name
protected_aliases: [champion]   # only a signed 'passed' verdict may move these
audit_set: audit/manifest.csv   # image manifest or text CSV, relative to this file
modality: auto                  # auto | image | text (auto: a CSV with a 'text' column is text)

checks:
  heatmaps:                     # where the explanation sits (text: gradient x input saliency)
    methods: [gradcam, layercam]  # the first gates: gradcam gradcampp hirescam layercam rollout
    target_layers: []           # empty: last spatial layer (CNN) or last block's input norm (ViT)
    max_spurious_mass: 0.30     # mean share of the explanation on the spurious region
    max_flagged_fraction: 0.10  # share of inputs with more than flag_mass on it
    flag_mass: 0.50
  counterfactual:               # does the prediction follow the artifact?
    enabled: true
    max_flip_rate: 0.20         # share of predictions that change when the artifact is removed
    max_spurious_score: 0.50    # mean P(artifact's class) after adding it to other classes
  discovery:                    # unknown shortcuts (SpRAy): clusters of heatmaps; needs no masks
    enabled: false
    max_suspicion: 0.50         # a cluster looking elsewhere, distinctly, above this: a warning
    max_flip_rate: 0.50         # filling its proposed region flips more than this: blocked
    max_proposals: 3            # most suspicious clusters whose region is tested
    min_cluster_size: 5

sanity:                         # do the heatmaps depend on the weights at all?
  enabled: true
  images: 16
  max_correlation: 0.50         # Spearman vs. a fully randomised copy; above it: inconclusive

inconclusive: hold              # hold: verdict 'inconclusive' (exit 3) | block: verdict 'blocked'
approval: false                 # true: a person approves each pass before the alias moves
require_signature: false        # true: refuse to run without XAI_GATE_SECRET (guarded registries)
batch_size: 32
"""
