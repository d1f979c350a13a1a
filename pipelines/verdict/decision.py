"""The verdict and what it does to the registry.

The verdict is written to the model version as tags, signed when
``XAI_GATE_SECRET`` is set (see ``pipelines.verdict.signing``), and the protected alias
moves only on ``passed``. Anything else leaves the alias where it was, unless the
policy says to take it from a holder that is now blocked
(``on_alias_holder_blocked: remove``).

Nothing recorded is ever erased by a failure: an error during a gate of a
version that already has a verdict is kept beside it (``xai_gate.last_error``),
and every attempt, errors included, is appended to ``xai_gate.history``. The
verdict, its evidence run, policy hash and signature are always written
together, so they always belong together.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING

from pipelines.evidence.gx import SuiteResult
from pipelines.policy.schema import GatePolicy
from pipelines.verdict.description import refresh_description
from pipelines.verdict.signing import (
    TAG_CHECKS_VERSION,
    TAG_MODEL_DIGEST,
    TAG_POLICY_HASH,
    TAG_RUN_ID,
    TAG_SIGNATURE,
    TAG_SIGNED_AT,
    TAG_VERDICT,
    checks_version,
    identity_of,
    now_signed_at,
    secret_from_env,
    sign_verdict,
    verify_signature,
)
from pipelines.verdict.tags import (
    TAG_AUDIT_SET_HASH,
    TAG_CHECKS,
    TAG_HISTORY,
    TAG_LAST_ERROR,
    TAG_PROMOTION_ERROR,
    TAG_REASON,
    TAG_WARNINGS,
)

if TYPE_CHECKING:
    from mlflow import MlflowClient

__all__ = [
    "DEFAULT_ALIAS",
    "PENDING",
    "TAG_HISTORY",
    "TAG_LAST_ERROR",
    "TAG_WARNINGS",
    "GateDecision",
    "PriorVerdict",
    "Verdict",
    "decide",
    "file_digest",
    "holds_alias",
    "prior_verdict",
    "record_error",
    "record_verdict",
]

DEFAULT_ALIAS: str = GatePolicy.model_fields["protected_aliases"].default[0]
"""The alias a pass moves unless the policy names others (the schema's default)."""
TAG_LIMIT = 4900
"""Tag values are cut to this many characters (MLflow's model-version tag limit is 5000)."""
FINISHED = frozenset({"passed", "blocked", "inconclusive"})
PENDING = "pending"
"""The verdict tag's value while a version's first verdict is being written: not finished,
so a gate cut off there leaves a version that is gated again and promoted by nothing."""


INCONCLUSIVE_CHOICES = ("hold", "block")
UNINFORMATIVE_CHOICES = ("inconclusive", "block", "warn")


class Verdict(StrEnum):
    PASSED = "passed"
    BLOCKED = "blocked"
    INCONCLUSIVE = "inconclusive"
    """The explanations failed their sanity check: no verdict on them, and no promotion."""
    ERROR = "error"


@dataclass(frozen=True)
class GateDecision:
    verdict: Verdict
    reasons: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    """Findings for a reviewer that do not block (e.g. an unconfirmed suspicious strategy)."""

    @property
    def reason(self) -> str:
        return "; ".join(self.reasons) if self.reasons else "all expectations met"


def decide(
    scores: SuiteResult,
    sanity: SuiteResult | None = None,
    *,
    inconclusive: str = "hold",
    warnings: Sequence[str] = (),
    uninformative: Sequence[str] = (),
    on_uninformative: str = "inconclusive",
) -> GateDecision:
    """Passed only when every expectation held; the reasons name every failed check.

    A failed sanity check makes the verdict ``inconclusive`` whatever the
    scores say: heatmaps that do not depend on the weights are no evidence
    either way, and "not blocked" must never read as "passed". A policy may
    say ``inconclusive: block`` to record such runs as ``blocked`` instead.

    ``uninformative`` (why the evidence is about nothing) turns what would be a
    pass into ``on_uninformative``: ``inconclusive``, ``block`` or ``warn``
    (passed, with the reasons as warnings). A block stands on its own, with
    the reasons beside it as warnings.
    """
    if inconclusive not in INCONCLUSIVE_CHOICES:
        raise ValueError(f"inconclusive must be one of {INCONCLUSIVE_CHOICES}: {inconclusive!r}")
    if on_uninformative not in UNINFORMATIVE_CHOICES:
        raise ValueError(
            f"on_uninformative must be one of {UNINFORMATIVE_CHOICES}: {on_uninformative!r}"
        )
    reasons = list(scores.failures) or ([] if scores.success else ["score validation failed"])
    about_nothing = [f"uninformative evidence: {reason}" for reason in uninformative]
    notes = list(warnings)
    if sanity is not None and not sanity.success:
        sanity_reasons = list(sanity.failures) or ["sanity validation failed"]
        verdict = Verdict.BLOCKED if inconclusive == "block" else Verdict.INCONCLUSIVE
        return GateDecision(verdict, sanity_reasons + reasons, notes + about_nothing)
    if not scores.success:
        return GateDecision(Verdict.BLOCKED, reasons, notes + about_nothing)
    if not about_nothing or on_uninformative == "warn":
        return GateDecision(Verdict.PASSED, warnings=notes + about_nothing)
    verdict = Verdict.BLOCKED if on_uninformative == "block" else Verdict.INCONCLUSIVE
    return GateDecision(verdict, about_nothing, notes)


def record_verdict(
    name: str,
    version: str,
    decision: GateDecision,
    *,
    run_id: str | None,
    alias: str = DEFAULT_ALIAS,
    checks: tuple[str, ...] = (),
    policy_hash: str = "",
    audit_set_hash: str = "",
    on_alias_holder_blocked: str = "keep",
    model_digest: str = "",
) -> bool:
    """Tag the model version with the verdict; set ``alias`` only when it passed.

    A version that holds ``alias`` and is now not passed keeps it
    (``on_alias_holder_blocked="keep"``; the caller warns) or loses it
    (``"remove"``). The attempt is appended to ``xai_gate.history``.

    Returns whether the verdict passed and the version holds ``alias``
    afterwards; an alias that already points at it is not set again. Tags are
    written first, so a version that holds the alias always carries the
    verdict that put it there, and ``checks`` (tagged ``xai_gate.checks``)
    says which lines of evidence ran.
    With ``XAI_GATE_SECRET`` set the verdict is signed over (model, version,
    verdict, run id, policy hash, time of signing, ``model_digest`` of the judged
    files, the version's source and creation time, the checks' version); a
    guarded registry accepts only that, only while fresh, and only while the
    version's files still have that digest.
    """
    from mlflow import MlflowClient

    if on_alias_holder_blocked not in ("keep", "remove"):  # before anything is written
        raise ValueError(
            f"on_alias_holder_blocked must be 'keep' or 'remove', got {on_alias_holder_blocked!r}"
        )
    client = MlflowClient()
    version = str(version)
    secret = secret_from_env()
    signed_at = now_signed_at()
    entity = client.get_model_version(name, version)  # read once: identity, placeholder, warnings
    judged_by = checks_version()
    signature = (
        sign_verdict(
            secret,
            model=name,
            version=version,
            verdict=decision.verdict.value,
            run_id=run_id or "",
            policy_hash=policy_hash,
            signed_at=signed_at,
            model_digest=model_digest,
            source=str(entity.source or ""),
            created=str(entity.creation_timestamp or ""),
            checks_version=judged_by,
        )
        if secret
        else ""
    )
    # The verdict tag's value goes last: a run killed while writing leaves either no verdict
    # (the sweeper gates the version again) or the old verdict beside a signature that no
    # longer matches it (a guarded registry refuses to promote), never a fresh-looking pass.
    # A version's first verdict is held by a placeholder written first: stores list tags in
    # the order they were first set, so MLflow's version table shows the verdict first.
    before = entity.tags
    if TAG_VERDICT not in before:
        client.set_model_version_tag(name, version, TAG_VERDICT, PENDING)
    client.set_model_version_tag(name, version, TAG_RUN_ID, run_id or "")
    client.set_model_version_tag(name, version, TAG_REASON, decision.reason[:4900])
    client.set_model_version_tag(name, version, TAG_POLICY_HASH, policy_hash)
    client.set_model_version_tag(name, version, TAG_AUDIT_SET_HASH, audit_set_hash)
    client.set_model_version_tag(name, version, TAG_MODEL_DIGEST, model_digest)
    client.set_model_version_tag(name, version, TAG_CHECKS_VERSION, judged_by)
    if checks:  # which lines of evidence the verdict rests on, e.g. heatmaps only
        client.set_model_version_tag(name, version, TAG_CHECKS, ",".join(checks))
    if decision.warnings:
        client.set_model_version_tag(
            name, version, TAG_WARNINGS, "; ".join(decision.warnings)[:4900]
        )
    elif TAG_WARNINGS in before:  # an earlier run's
        client.delete_model_version_tag(name, version, TAG_WARNINGS)
    client.set_model_version_tag(name, version, TAG_SIGNED_AT, signed_at)
    client.set_model_version_tag(name, version, TAG_SIGNATURE, signature)
    client.set_model_version_tag(name, version, TAG_VERDICT, decision.verdict.value)
    _append_history(client, name, version, decision.verdict.value, run_id, decision.reason)
    refresh_description(client, name, version)
    if decision.verdict is not Verdict.PASSED:
        if TAG_PROMOTION_ERROR in before:  # that pass is gone: nothing is left to promote
            client.delete_model_version_tag(name, version, TAG_PROMOTION_ERROR)
        return _keep_or_remove(client, name, version, alias, on_alias_holder_blocked)
    return promote_alias(name, version, alias)


def promote_alias(name: str, version: str, alias: str) -> bool:
    """Point ``alias`` at the passed ``version``; False when the registry refuses.

    A refusal (a guarded registry that cannot verify the pass, a lost permission) is
    recorded in ``xai_gate.promotion_error``, so the outcome says "passed, not
    promoted" and a rerun tries the alias again instead of reusing a plain pass.
    """
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient()
    if _alias_target(client, name, alias) != version:  # a rerun moves nothing
        try:
            client.set_registered_model_alias(name, alias, version)
        except MlflowException as exc:
            reason = " ".join(str(exc.message).split())[:4900] or type(exc).__name__
            client.set_model_version_tag(name, version, TAG_PROMOTION_ERROR, reason)
            return False
    if TAG_PROMOTION_ERROR in client.get_model_version(name, version).tags:
        client.delete_model_version_tag(name, version, TAG_PROMOTION_ERROR)
    return True


def promotion_error(name: str, version: str) -> str:
    """Why the last pass of ``version`` could not move its alias ('' when it did)."""
    from mlflow import MlflowClient

    return MlflowClient().get_model_version(name, version).tags.get(TAG_PROMOTION_ERROR, "")


def _keep_or_remove(
    client: MlflowClient, name: str, version: str, alias: str, on_alias_holder_blocked: str
) -> bool:
    """A version not passed never gains the alias; one that holds it keeps or loses it.

    False either way: the version was not promoted by this verdict.
    """
    if on_alias_holder_blocked == "remove" and _alias_target(client, name, alias) == version:
        client.delete_registered_model_alias(name, alias)
    return False


def record_error(name: str, version: str, reason: str) -> None:
    """Record a failed gate attempt without erasing a verdict the version already has.

    A version with a finished verdict keeps it (and its run, policy hash,
    signature and alias); the error goes to ``xai_gate.last_error`` and the
    history. A version without one gets verdict ``error``, so it is never
    mistaken for an ungated or a passed one, and is gated again.
    """
    from mlflow import MlflowClient

    client = MlflowClient()
    version = str(version)
    tags = client.get_model_version(name, version).tags
    if tags.get(TAG_VERDICT) not in FINISHED:
        record_verdict(name, version, GateDecision(Verdict.ERROR, [reason]), run_id=None)
        return
    stamp = _utc_now()
    client.set_model_version_tag(name, version, TAG_LAST_ERROR, f"{stamp} {reason}"[:TAG_LIMIT])
    _append_history(client, name, version, Verdict.ERROR.value, None, reason, at=stamp)
    refresh_description(client, name, version)


def _utc_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def holds_alias(name: str, version: str, alias: str) -> bool:
    """Whether ``alias`` points at ``name`` v``version`` now."""
    from mlflow import MlflowClient

    return _alias_target(MlflowClient(), name, alias) == str(version)


def _append_history(
    client: MlflowClient,
    name: str,
    version: str,
    verdict: str,
    run_id: str | None,
    reason: str,
    *,
    at: str | None = None,
) -> None:
    """One JSON entry per attempt, newest last; the oldest go first when the tag is full."""
    tags = client.get_model_version(name, version).tags
    history = _read_history(tags)
    history.append(
        {"at": at or _utc_now(), "verdict": verdict, "run_id": run_id or "", "reason": reason[:300]}
    )
    text = json.dumps(history)
    while len(text) > TAG_LIMIT and len(history) > 1:
        history.pop(0)
        text = json.dumps(history)
    client.set_model_version_tag(name, version, TAG_HISTORY, text[:TAG_LIMIT])
    if verdict in FINISHED and TAG_LAST_ERROR in tags:  # a finished verdict supersedes it
        client.delete_model_version_tag(name, version, TAG_LAST_ERROR)


def _read_history(tags: dict[str, str]) -> list[object]:
    """The history tag's entries; none when it is missing or was edited into something
    other than a JSON list (start again rather than fail the gate)."""
    try:
        history = json.loads(tags[TAG_HISTORY])
    except (KeyError, json.JSONDecodeError):
        return []
    return history if isinstance(history, list) else []


def _alias_target(client: MlflowClient, name: str, alias: str) -> str | None:
    from mlflow.exceptions import MlflowException

    try:
        return str(client.get_model_version_by_alias(name, alias).version)
    except MlflowException:  # the alias is not set
        return None


def file_digest(path: Path) -> str:
    """SHA-256 of a file's bytes ('' when it is missing: loading it will say so)."""
    path = Path(path)
    if not path.is_file():
        return ""
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


@dataclass(frozen=True)
class PriorVerdict:
    """A finished verdict on a version, found before gating it again."""

    verdict: Verdict
    reason: str
    run_id: str
    promotion_error: str = ""
    """A pass whose alias the registry refused (``xai_gate.promotion_error``): tried again."""


def prior_verdict(
    name: str, version: str, *, policy_hash: str, audit_set_hash: str, model_digest: str
) -> PriorVerdict | None:
    """The version's verdict when a rerun would only repeat it, else None.

    That is a ``passed``, ``blocked`` or ``inconclusive`` verdict reached under
    this exact policy and audit set, on files of this exact ``model_digest``, by
    this version of the checks, and, when ``XAI_GATE_SECRET`` is set, one whose
    signature verifies for this very version (its source and creation time). An
    ``error``, a changed policy, audit set or model file, an upgrade, or tags that
    do not verify mean the version is gated again.
    """
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    try:
        entity = MlflowClient().get_model_version(name, str(version))
    except MlflowException:  # no such version: loading it says so, with the fix
        return None
    tags: Mapping[str, str] = entity.tags
    verdict = tags.get(TAG_VERDICT)
    if verdict not in FINISHED:
        return None
    if tags.get(TAG_POLICY_HASH) != policy_hash or tags.get(TAG_AUDIT_SET_HASH) != audit_set_hash:
        return None
    if not model_digest or tags.get(TAG_MODEL_DIGEST) != model_digest:
        return None
    if tags.get(TAG_CHECKS_VERSION) != checks_version():
        return None
    secret = secret_from_env()
    if secret and not verify_signature(secret, tags=tags, **identity_of(entity)):
        return None
    return PriorVerdict(
        Verdict(verdict),
        tags.get(TAG_REASON, ""),
        tags.get(TAG_RUN_ID, ""),
        tags.get(TAG_PROMOTION_ERROR, "") if verdict == Verdict.PASSED.value else "",
    )
