"""The precision probe: may this gate run its model in bf16 or fp16?

Reduced precision is a speed setting, not a rule: a verdict must not depend
on it. So before the stages run, the first inputs of the audit set (up to
:data:`PROBE_INPUTS`) are explained in fp32 and at the asked precision. When
no prediction changes and neither the probabilities nor the gating maps move
by more than the policy's ``precision_tolerance``, every stage runs at that
precision; otherwise the whole gate runs in fp32, and the report says why.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from xai_checks.precision_drift import PrecisionDrift, precision_drift, text_precision_drift

if TYPE_CHECKING:
    from torch import Tensor, nn

    from pipelines.policy.schema import AuditRules

__all__ = ["PROBE_INPUTS", "PrecisionEvidence", "image_precision_probe", "text_precision_probe"]

PROBE_INPUTS = 8
"""Inputs the probe compares: enough to catch a model that breaks in half precision (an
overflow shows on every input), few enough to cost two extra passes of one small batch."""

PREFIX = "precision"


@dataclass(frozen=True)
class PrecisionEvidence:
    """What the probe measured and which precision the stages ran at."""

    requested: str
    used: str
    drift: PrecisionDrift
    tolerance: float
    inputs: int

    def metrics(self) -> dict[str, float]:
        """The probe's drift; only ``overflowed`` when the outputs were not finite."""
        out = {f"{PREFIX}.overflowed": float(not self.drift.finite)}
        if self.drift.finite:
            out |= {
                f"{PREFIX}.probability_drift": self.drift.probability,
                f"{PREFIX}.map_drift": self.drift.maps,
                f"{PREFIX}.flipped": float(self.drift.flipped),
            }
        return out

    def warnings(self) -> list[str]:
        """A line for the report when the asked precision was refused."""
        if self.used == self.requested:
            return []
        drift = self.drift
        if not drift.finite:
            return [
                f"precision {self.requested} was not used: on the first {self.inputs} inputs "
                f"its outputs overflowed to NaN or Inf; every stage ran in {self.used}"
            ]
        return [
            f"precision {self.requested} was not used: on the first {self.inputs} inputs it "
            f"changed {drift.flipped} prediction(s), moved probabilities by up to "
            f"{drift.probability:.4f} and up to {drift.maps:.4f} of a map "
            f"(precision_tolerance {self.tolerance}); every stage ran in {self.used}"
        ]


def _decide(drift: PrecisionDrift, rules: AuditRules, inputs: int) -> PrecisionEvidence:
    used = rules.precision if drift.within(rules.precision_tolerance) else "fp32"
    return PrecisionEvidence(rules.precision, used, drift, rules.precision_tolerance, inputs)


def image_precision_probe(model: nn.Module, images: Tensor, rules: AuditRules) -> PrecisionEvidence:
    """Compare fp32 with ``rules.precision`` on the first audit images, with the gating
    method at the policy's target layers."""
    probe = images[: min(PROBE_INPUTS, rules.batch_size)]
    drift = precision_drift(
        model,
        probe,
        rules.precision,
        method=rules.gating_method,
        target_layer=list(rules.checks.heatmaps.target_layers) or None,
    )
    return _decide(drift, rules, len(probe))


def text_precision_probe(
    model: nn.Module, tokenizer: Any, texts: list[str], rules: AuditRules
) -> PrecisionEvidence:
    """Compare fp32 with ``rules.precision`` on the first audit texts: probabilities and
    every head's attention."""
    probe = list(texts[: min(PROBE_INPUTS, rules.batch_size)])
    drift = text_precision_drift(model, tokenizer, probe, rules.precision)
    return _decide(drift, rules, len(probe))
