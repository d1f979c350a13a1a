"""``xai-gate discover``: find unlabelled shortcuts, and turn a confirmed one into a labelled test.

Discovery inside the gate blocks a version; this command is for the person
who then wants the shortcut tested *exactly* from now on. It runs the CAM
audit and strategy discovery on one model version (no verdict, no alias, no
MLflow run), prints the ranked strategies, and with ``--write-audit-set DIR``
writes a copy of the audit set whose masks are the confirmed strategies'
regions on their images. Gate the next versions on that manifest and the
labelled checks (heatmap mass, removal, insertion) judge them on it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipelines.stages.discovery import DiscoveryEvidence

__all__ = ["DiscoverResult", "run_discover"]


@dataclass(frozen=True)
class DiscoverResult:
    evidence: DiscoveryEvidence
    written: Path | None = None
    """The labelled manifest written, if one was asked for."""
    ranks: tuple[int, ...] = ()
    """The strategies whose regions it holds."""

    @property
    def confirmed(self) -> int:
        return int((self.evidence.table["status"] == "confirmed").sum())


def run_discover(
    model_name: str | None,
    version: str,
    audit_set: str | Path | None = None,
    *,
    policy_file: str | Path | None = None,
    tracking_uri: str | None = None,
    write_to: str | Path | None = None,
    ranks: list[int] | None = None,
    **rules: Any,
) -> DiscoverResult:
    """Discover strategies of ``model_name`` v``version``; optionally write the labelled set.

    ``ranks`` choose the strategies written (default: the confirmed ones).
    Raises :class:`~pipelines.errors.GateError` (and pydantic's errors for bad
    options) with a message that names the cause.
    """
    from flows.run import gate_policy
    from pipelines.audit_sets.images import write_masked_copy
    from pipelines.judging.sandbox import refuse_beside_secrets
    from pipelines.stages.assembly import discover
    from pipelines.tracking import configure_tracking
    from pipelines.tracking.models import load_model_version

    refuse_beside_secrets("xai-gate discover")
    policy = gate_policy(model_name, audit_set, policy_file=policy_file, **rules)
    configure_tracking(tracking_uri, check=True)
    model = load_model_version(policy.model, version, builders=policy.model_builders)
    images, evidence = discover(model, policy)
    if write_to is None:
        return DiscoverResult(evidence)
    masks, used = evidence.region_masks(ranks or None)
    manifest = write_masked_copy(write_to, images, masks)
    return DiscoverResult(evidence, manifest, tuple(used))
