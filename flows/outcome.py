"""What one gate run ends with: the outcome every caller reads, and how errors are worded."""

from __future__ import annotations

from dataclasses import dataclass, field

from pydantic import ValidationError

from pipelines.errors import GateError, describe_error
from pipelines.verdict.decision import DEFAULT_ALIAS, Verdict
from xai_checks.errors import XAICheckError

__all__ = ["EXPECTED_ERRORS", "GateOutcome", "describe_error"]

EXPECTED_ERRORS: tuple[type[BaseException], ...] = (GateError, XAICheckError, ValidationError)
"""Errors whose message says it all: reported without a traceback."""


@dataclass(frozen=True)
class GateOutcome:
    model_name: str
    version: str
    verdict: Verdict
    reasons: list[str] = field(default_factory=list)
    run_id: str | None = None
    promoted: bool = False
    alias: str = DEFAULT_ALIAS
    summary: dict[str, float | int | str] = field(default_factory=dict)
    reused: bool = False
    """The version already had this verdict under the same policy and audit set."""
    recorded: bool = False
    """The version's verdict is written (or, after a lock timeout, is another gate's to
    write), so ``on_failure`` must not tag it ``error``."""
    warnings: list[str] = field(default_factory=list)
    """Findings that did not block, e.g. a suspicious strategy filling did not confirm."""
    caller_error: bool = False
    """The error is in what the gate was given (options, policy, secret, store, version):
    no version was touched, and ``on_failure`` must not touch one either."""
    not_promoted: str = ""
    """A pass whose alias the registry refused, and why: its own outcome (exit 4), tried
    again on the next run."""

    @property
    def message(self) -> str:
        reason = "; ".join(self.reasons) if self.reasons else "all checks passed"
        again = " [reused: already gated under this policy and audit set]" if self.reused else ""
        notes = "".join(f"\n  warning: {warning}" for warning in self.warnings)
        if self.not_promoted:
            return (
                f"{self.model_name} v{self.version} passed, NOT PROMOTED: alias {self.alias!r} "
                f"was refused: {self.not_promoted}{again}{notes}"
            )
        return f"{self.model_name} v{self.version} {self.verdict.value}: {reason}{again}{notes}"
