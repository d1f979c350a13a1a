"""The gate policy: its schema, its YAML files and the example generated from it.

Imports neither torch nor MLflow, so the CLI can build its options from the
schema at start-up.
"""

from __future__ import annotations

from pipelines.policy.example import EXAMPLE_POLICY, example_policy
from pipelines.policy.files import PolicyError, load_policy, write_policy
from pipelines.policy.schema import (
    AuditRules,
    Checks,
    CounterfactualChecks,
    DiscoveryChecks,
    GatePolicy,
    HeatmapChecks,
    PolicyOption,
    SanityCheck,
    policy_options,
)
from xai_checks.compat import lazy_exports

__all__ = [
    "EXAMPLE_POLICY",
    "AuditRules",
    "Checks",
    "CounterfactualChecks",
    "DiscoveryChecks",
    "GatePolicy",
    "HeatmapChecks",
    "PolicyError",
    "PolicyOption",
    "SanityCheck",
    "example_policy",
    "load_policy",
    "policy_options",
    "write_policy",
]

_OLD_POLICY_MODULE = {  # release 0.1's pipelines.policy held the tables' columns and GX checks
    **{
        name: f"pipelines.evidence.columns:{name}"
        for name in (
            "COUNTERFACTUAL_COLUMNS",
            "DISCOVERY_COLUMNS",
            "SANITY_COLUMNS",
            "SCORE_COLUMNS",
            "TEXT_SCORE_COLUMNS",
            "UNSCORED_COLUMNS",
        )
    },
    **{
        name: f"pipelines.evidence.expectations:{name}"
        for name in ("discovery_checks", "sanity_checks", "score_checks")
    },
    "SanityRule": "pipelines.policy.schema:SanityCheck",
}
__getattr__, _ = lazy_exports(
    __name__,
    {},
    renamed=_OLD_POLICY_MODULE,
    removed={
        name: "its rules are fields of GatePolicy; stages take AuditRules "
        "(AuditRules.from_options(max_spurious_mass=...))"
        for name in ("Thresholds", "AuditPlan", "DiscoveryPlan")
    },
)
