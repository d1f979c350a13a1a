"""Run the gate flow and turn its final state into an outcome and an exit code."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flows._console import hide_expected_tracebacks
from flows.xai_gate import EXPECTED_ERRORS, GateOutcome, xai_gate
from pipelines.gate import Verdict

__all__ = ["EXIT_CODES", "exit_code", "run_gate"]

EXIT_CODES = {Verdict.PASSED: 0, Verdict.BLOCKED: 1, Verdict.ERROR: 2, Verdict.INCONCLUSIVE: 3}


def run_gate(
    model_name: str, version: str, audit_set: Path | None = None, **options: Any
) -> GateOutcome:
    """Run ``xai_gate`` and return its outcome; an unexpected crash becomes ``error``.

    ``options`` are the flow's keyword arguments, ``policy_file`` among them.
    """
    hide_expected_tracebacks(EXPECTED_ERRORS)
    manifest = Path(audit_set) if audit_set is not None else None
    state = xai_gate(model_name, str(version), manifest, return_state=True, **options)
    try:
        result = state.result(raise_on_failure=False)
    except Exception as exc:  # the state carries no result: a crash
        result = exc
    if isinstance(result, GateOutcome):
        return result
    message = (
        f"{type(result).__name__}: {result}" if isinstance(result, BaseException) else state.message
    )
    return GateOutcome(model_name, str(version), Verdict.ERROR, [message or "flow run crashed"])


def exit_code(outcome: GateOutcome) -> int:
    return EXIT_CODES[outcome.verdict]
