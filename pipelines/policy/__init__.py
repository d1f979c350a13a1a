"""The gate policy: its schema, its YAML files and the example generated from it.

Imports neither torch nor MLflow, so the CLI can build its options from the
schema at start-up. The package's names are the public names of its modules.
"""

from __future__ import annotations

from typing import Any

from pipelines.evidence import columns as _columns
from xai_checks.compat import lazy_exports, lazy_exports_of

MODULES = ("pipelines.policy.schema", "pipelines.policy.files", "pipelines.policy.example")

_exported, __dir__ = lazy_exports_of(__name__, MODULES)
_deprecated, _ = lazy_exports(  # release 0.1's pipelines.policy: tables' columns, GX checks
    __name__,
    {},
    renamed={
        **{name: f"pipelines.evidence.columns:{name}" for name in _columns.__all__},
        **{
            name: f"pipelines.evidence.expectations:{name}"
            for name in ("discovery_checks", "sanity_checks", "score_checks")
        },
        "SanityRule": "pipelines.policy.schema:SanityCheck",
    },
    removed={
        name: "its rules are fields of GatePolicy; stages take AuditRules "
        "(AuditRules.from_options(max_spurious_mass=...))"
        for name in ("Thresholds", "AuditPlan", "DiscoveryPlan")
    },
)


def __getattr__(name: str) -> Any:
    try:
        return _exported(name)
    except AttributeError:
        return _deprecated(name)
