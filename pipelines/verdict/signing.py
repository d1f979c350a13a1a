"""Signed verdicts: HMAC-SHA256 over what a verdict claims, keyed by ``XAI_GATE_SECRET``.

A verdict tag anyone could type is no gate. The signature covers the model,
the version, the verdict, the evidence run, the policy hash and the moment of
signing, so a ``passed`` tag set by hand, a signature copied from another
version, or one made with another secret does not verify, and the guarded
registry (``pipelines.verdict.guard``) can tell a fresh verdict from an old
one written back (a replay).

A version number names no bytes, so the signature also covers *which* model
was judged: the digest of its files (``xai_gate.model_sha256``), the
version's source and creation time as the registry holds them (a version
deleted and registered again under the same number is another version), and
the version of the checks that judged it (``xai_gate.checks_version``).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import time
from collections.abc import Mapping
from typing import Any

__all__ = [
    "SECRET_ENV",
    "TAG_CHECKS_VERSION",
    "TAG_MODEL_DIGEST",
    "TAG_POLICY_HASH",
    "TAG_RUN_ID",
    "TAG_SIGNATURE",
    "TAG_SIGNED_AT",
    "TAG_VERDICT",
    "checks_version",
    "identity_of",
    "secret_from_env",
    "sign_verdict",
    "signature_age",
    "verify_passed",
    "verify_signature",
]

SECRET_ENV = "XAI_GATE_SECRET"
TAG_VERDICT = "xai_gate.verdict"
TAG_RUN_ID = "xai_gate.run_id"
TAG_POLICY_HASH = "xai_gate.policy_hash"
TAG_SIGNATURE = "xai_gate.signature"
TAG_SIGNED_AT = "xai_gate.signed_at"
"""Unix seconds at signing, as text; part of the signed message."""
TAG_MODEL_DIGEST = "xai_gate.model_sha256"
"""SHA-256 of the judged model's files (``pipelines.verdict.model_digest``); signed."""
TAG_CHECKS_VERSION = "xai_gate.checks_version"
"""The xai-gate release (and checks revision) that judged it; signed, and part of the reuse
key, so a verdict made before an upgrade is not reused after it."""
FORMAT = "xai-gate-verdict-v3"
CHECKS_REVISION = "1"
"""Raised whenever a change to the checks could change a verdict on the same bytes."""


def checks_version() -> str:
    """``<package version>+checks<revision>``: what a reused verdict must have been judged by."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        release = version("xai-gate")
    except PackageNotFoundError:  # run from a source tree that was never installed
        release = "source"
    return f"{release}+checks{CHECKS_REVISION}"


def identity_of(version: Any) -> dict[str, str]:
    """The keywords that name *which* version a verdict is for, read from the registry's entity.

    ``model``, ``version``, ``source`` and ``created`` for ``verify_signature`` and
    ``verify_passed``: never from a tag, which the registrant can write.
    """
    return {
        "model": str(version.name),
        "version": str(version.version),
        "source": str(version.source or ""),
        "created": str(version.creation_timestamp or ""),
    }


def secret_from_env() -> bytes | None:
    """The signing key, or None where it is unset or empty (an empty key signs nothing)."""
    value = os.environ.get(SECRET_ENV)
    return value.encode() if value else None


def sign_verdict(
    secret: bytes,
    *,
    model: str,
    version: str,
    verdict: str,
    run_id: str,
    policy_hash: str,
    signed_at: str,
    model_digest: str = "",
    source: str = "",
    created: str = "",
    checks_version: str = "",
) -> str:
    """Hex HMAC-SHA256 of the verdict's fields, separated so no two claims collide.

    ``source`` and ``created`` are the version's as the registry holds them;
    a verifier reads them from the version itself, never from a tag.
    """
    fields = [model, str(version), verdict, run_id, policy_hash, signed_at]
    identity = [model_digest, source, str(created), checks_version]
    message = "\x1f".join([FORMAT, *fields, *identity])
    return hmac.new(secret, message.encode(), hashlib.sha256).hexdigest()


def now_signed_at() -> str:
    return str(int(time.time()))


def verify_signature(
    secret: bytes,
    *,
    model: str,
    version: str,
    tags: Mapping[str, str],
    source: str = "",
    created: str = "",
) -> bool:
    """Whether ``tags`` carry a verdict signed with ``secret`` for exactly this version.

    ``source`` and ``created`` come from the version entity (which version this is).
    A missing field tag reads as empty, as the gate writes it (e.g. no run id)."""
    signature = tags.get(TAG_SIGNATURE)
    if not signature:
        return False
    expected = sign_verdict(
        secret,
        model=model,
        version=str(version),
        verdict=tags.get(TAG_VERDICT, ""),
        run_id=tags.get(TAG_RUN_ID, ""),
        policy_hash=tags.get(TAG_POLICY_HASH, ""),
        signed_at=tags.get(TAG_SIGNED_AT, ""),
        model_digest=tags.get(TAG_MODEL_DIGEST, ""),
        source=source,
        created=str(created),
        checks_version=tags.get(TAG_CHECKS_VERSION, ""),
    )
    # As bytes: compare_digest refuses str with non-ASCII characters (a tag anyone can write).
    return hmac.compare_digest(signature.encode(), expected.encode())


def signature_age(tags: Mapping[str, str], now: float | None = None) -> float | None:
    """Seconds since the verdict was signed (None when ``signed_at`` is missing or garbled)."""
    try:
        signed_at = int(tags[TAG_SIGNED_AT])
    except (KeyError, ValueError):
        return None
    return (time.time() if now is None else now) - signed_at


def verify_passed(
    secret: bytes | None,
    *,
    model: str,
    version: str,
    tags: Mapping[str, str],
    source: str = "",
    created: str = "",
) -> str | None:
    """None when ``tags`` carry a correctly signed ``passed`` verdict for this version;
    otherwise the reason, for the refusal message."""
    if not secret:
        return f"the guard has no {SECRET_ENV}, so no verdict can be verified"
    verdict = tags.get(TAG_VERDICT)
    if verdict != "passed":
        return (
            f"its xai-gate verdict is {verdict!r}" if verdict else "it has no xai-gate verdict"
        ) + "; only a version that passed the gate may hold this alias"
    if not tags.get(TAG_SIGNATURE):
        return "its 'passed' verdict is unsigned (set by hand, or gated without XAI_GATE_SECRET)"
    if not verify_signature(
        secret, model=model, version=version, tags=tags, source=source, created=created
    ):
        return (
            "its verdict signature does not verify (tags edited by hand, copied from another "
            "version, signed for a version of this number that was deleted and registered "
            "again, or signed with another secret)"
        )
    return None
