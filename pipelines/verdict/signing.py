"""Signed verdicts: HMAC-SHA256 over what a verdict claims, keyed by ``XAI_GATE_SECRET``.

A verdict tag anyone could type is no gate. The signature covers the model,
the version, the verdict, the evidence run, the policy hash and the moment of
signing, so a ``passed`` tag set by hand, a signature copied from another
version, or one made with another secret does not verify, and the guarded
registry (``pipelines.verdict.guard``) can tell a fresh verdict from an old
one written back (a replay).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import time
from collections.abc import Mapping

__all__ = [
    "SECRET_ENV",
    "TAG_POLICY_HASH",
    "TAG_RUN_ID",
    "TAG_SIGNATURE",
    "TAG_SIGNED_AT",
    "TAG_VERDICT",
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
) -> str:
    """Hex HMAC-SHA256 of the verdict's fields, separated so no two claims collide."""
    message = "\x1f".join(
        ["xai-gate-verdict-v2", model, str(version), verdict, run_id, policy_hash, signed_at]
    )
    return hmac.new(secret, message.encode(), hashlib.sha256).hexdigest()


def now_signed_at() -> str:
    return str(int(time.time()))


def verify_signature(secret: bytes, *, model: str, version: str, tags: Mapping[str, str]) -> bool:
    """Whether ``tags`` carry a verdict signed with ``secret`` for exactly this version.

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
    secret: bytes | None, *, model: str, version: str, tags: Mapping[str, str]
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
    if not verify_signature(secret, model=model, version=version, tags=tags):
        return (
            "its verdict signature does not verify (tags edited by hand, copied from another "
            "version, or signed with another secret)"
        )
    return None
