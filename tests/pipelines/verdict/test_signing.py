"""Signed verdicts: only an untouched 'passed' verdict for this very version verifies."""

from __future__ import annotations

from pipelines.verdict.signing import sign_verdict, signature_age, verify_passed

SECRET = b"s3cret"


def _tags(version: str = "3", verdict: str = "passed", secret: bytes = SECRET) -> dict[str, str]:
    fields = {
        "model": "m",
        "version": version,
        "verdict": verdict,
        "run_id": "r1",
        "policy_hash": "p" * 64,
        "signed_at": "1700000000",
    }
    return {
        "xai_gate.verdict": verdict,
        "xai_gate.run_id": "r1",
        "xai_gate.policy_hash": "p" * 64,
        "xai_gate.signed_at": "1700000000",
        "xai_gate.signature": sign_verdict(secret, **fields),
    }


def test_a_signed_pass_verifies():
    assert verify_passed(SECRET, model="m", version="3", tags=_tags()) is None


def test_hand_set_copied_forged_or_other_verdicts_are_refused():
    unsigned = _tags() | {"xai_gate.signature": ""}
    assert "unsigned" in verify_passed(SECRET, model="m", version="3", tags=unsigned)
    copied = _tags(version="2")  # a real signature, but for version 2
    assert "does not verify" in verify_passed(SECRET, model="m", version="3", tags=copied)
    other_secret = _tags(secret=b"another")
    assert "does not verify" in verify_passed(SECRET, model="m", version="3", tags=other_secret)
    promoted_by_hand = _tags(verdict="blocked") | {"xai_gate.verdict": "passed"}
    assert "does not verify" in verify_passed(SECRET, model="m", version="3", tags=promoted_by_hand)
    swapped_run = _tags() | {"xai_gate.run_id": "r2"}
    assert "does not verify" in verify_passed(SECRET, model="m", version="3", tags=swapped_run)
    redated = _tags() | {"xai_gate.signed_at": "1800000000"}  # an old verdict made to look new
    assert "does not verify" in verify_passed(SECRET, model="m", version="3", tags=redated)
    blocked = _tags(verdict="blocked")
    assert "verdict is 'blocked'" in verify_passed(SECRET, model="m", version="3", tags=blocked)
    assert "no xai-gate verdict" in verify_passed(SECRET, model="m", version="3", tags={})
    assert "no XAI_GATE_SECRET" in verify_passed(None, model="m", version="3", tags=_tags())


def test_fields_cannot_be_shifted_between_each_other():
    common = {"verdict": "passed", "run_id": "r", "policy_hash": "h", "signed_at": "1"}
    a = sign_verdict(SECRET, model="m1", version="2", **common)
    b = sign_verdict(SECRET, model="m", version="12", **common)
    assert a != b


def test_signature_age_reads_the_signed_time():
    assert signature_age({"xai_gate.signed_at": "100"}, now=160.0) == 60.0
    assert signature_age({"xai_gate.signed_at": "soon"}) is None
    assert signature_age({}) is None


def test_signature_age_is_none_for_a_missing_or_unreadable_time():
    assert signature_age({"xai_gate.signed_at": ""}) is None
    assert signature_age({"xai_gate.signed_at": "12.5"}) is None
    assert signature_age({"xai_gate.signed_at": "100"}, now=100.0) == 0.0


def test_each_refusal_says_exactly_why():
    """The reasons a guarded registry shows a person, word for word."""
    tail = "; only a version that passed the gate may hold this alias"
    assert verify_passed(SECRET, model="m", version="3", tags={}) == (
        "it has no xai-gate verdict" + tail
    )
    assert verify_passed(SECRET, model="m", version="3", tags=_tags(verdict="blocked")) == (
        "its xai-gate verdict is 'blocked'" + tail
    )
    assert (
        verify_passed(SECRET, model="m", version="3", tags=_tags() | {"xai_gate.signature": ""})
        == "its 'passed' verdict is unsigned (set by hand, or gated without XAI_GATE_SECRET)"
    )
    assert verify_passed(SECRET, model="m", version="4", tags=_tags()) == (
        "its verdict signature does not verify (tags edited by hand, copied from another "
        "version, signed for a version of this number that was deleted and registered "
        "again, or signed with another secret)"
    )
    assert verify_passed(None, model="m", version="3", tags=_tags()) == (
        "the guard has no XAI_GATE_SECRET, so no verdict can be verified"
    )


def test_the_key_comes_from_the_environment_and_an_empty_one_is_no_key(monkeypatch):
    from pipelines.verdict.signing import SECRET_ENV, secret_from_env

    monkeypatch.delenv(SECRET_ENV, raising=False)
    assert secret_from_env() is None
    monkeypatch.setenv(SECRET_ENV, "")
    assert secret_from_env() is None  # not b"": an empty key would sign with nothing
    monkeypatch.setenv(SECRET_ENV, "k é")
    assert secret_from_env() == "k é".encode()
