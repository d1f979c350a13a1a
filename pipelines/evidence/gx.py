"""Great Expectations validation of manifests and score tables, in an ephemeral context.

Great Expectations is imported lazily (about 2 s), only when a validation runs.
Each failed expectation becomes one readable line: for a column-value check it
names the CSV line numbers of the offending rows, for an aggregate check the
observed value against its bound.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from pipelines.offline import apply_offline_defaults

__all__ = ["Check", "SuiteResult", "run_checks"]


@dataclass(frozen=True)
class Check:
    """One expectation plus how to describe its failure to a person.

    ``build`` receives the ``great_expectations.expectations`` module and
    returns the expectation, so callers declare checks without importing GX.
    ``describe`` turns the GX result dict into the failure reason.
    """

    name: str
    build: Callable[[Any], Any]
    describe: Callable[[dict[str, Any]], str]


@dataclass(frozen=True)
class SuiteResult:
    """The outcome of one expectation suite on one table."""

    success: bool
    failures: list[str] = field(default_factory=list)
    result: dict[str, Any] = field(default_factory=dict)
    """The full GX validation result as JSON-serialisable dict (stored as evidence)."""
    failed: list[str] = field(default_factory=list)
    """The names of the failed checks, in the order of ``failures``."""


def _gx() -> tuple[Any, Any]:
    apply_offline_defaults()  # GX reads its analytics switch at import
    import great_expectations as gx
    import great_expectations.expectations as gxe

    return gx, gxe


def run_checks(df: pd.DataFrame, checks: Sequence[Check], *, suite: str) -> SuiteResult:
    """Validate ``df`` against ``checks`` in a fresh ephemeral GX context."""
    gx, gxe = _gx()
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    name = f"{suite}-{uuid.uuid4().hex[:8]}"
    batch = (
        context.data_sources.add_pandas(name)
        .add_dataframe_asset(name)
        .add_batch_definition_whole_dataframe(name)
    )
    expectations = [check.build(gxe) for check in checks]
    gx_suite = context.suites.add(gx.ExpectationSuite(name=suite, expectations=expectations))
    definition = gx.ValidationDefinition(name=name, data=batch, suite=gx_suite)
    result = definition.run(batch_parameters={"dataframe": df}, result_format="COMPLETE")

    failures: list[str] = []
    failed: list[str] = []
    by_config = {id(exp): check for exp, check in zip(expectations, checks, strict=True)}
    for outcome in result.results:
        if outcome.success:
            continue
        check = _match(outcome.expectation_config, expectations, by_config)
        failed.append(check.name)
        raised = outcome.exception_info.get("raised_exception") if outcome.exception_info else False
        if raised:
            message = outcome.exception_info.get("exception_message", "unknown error")
            failures.append(f"{check.name}: could not be evaluated ({message})")
        else:
            failures.append(check.describe(outcome.result))
    return SuiteResult(
        success=bool(result.success),
        failures=failures,
        result=result.to_json_dict(),
        failed=failed,
    )


def _match(config: Any, expectations: list[Any], by_config: dict[int, Check]) -> Check:
    """Find our Check for a GX result (results come back reordered)."""
    for expectation in expectations:
        if expectation.id == getattr(config, "id", None):
            return by_config[id(expectation)]
    for expectation in expectations:
        if expectation.configuration.to_json_dict() == config.to_json_dict():
            return by_config[id(expectation)]
    return Check(config.type, lambda _gxe: None, lambda result: f"{config.type} failed: {result}")
