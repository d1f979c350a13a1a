"""Known answers for verdict signing, computed here from the README's message layout.

The expected signatures never come from ``sign_verdict``: each is an HMAC-SHA256
built in the test with ``hmac``/``hashlib`` over
``xai-gate-verdict-v3␟model␟version␟verdict␟run_id␟policy_hash␟signed_at␟model_sha256␟source␟created␟checks_version``
(␟ = 0x1F). A change to what is signed, or to its order, fails them.
"""

from __future__ import annotations

import hashlib
import hmac

import pytest

from pipelines.verdict.signing import sign_verdict, verify_passed, verify_signature

SECRET = b"s3cret"
FIELDS = {
    "model": "lesion-classifier",
    "version": "3",
    "verdict": "passed",
    "run_id": "r1",
    "policy_hash": "abc",
    "signed_at": "1700000000",
    "model_digest": "d1g3st",
    "source": "models:/m-0123",
    "created": "1699999999000",
    "checks_version": "0.1.0+checks1",
}
ORDER = tuple(FIELDS)


def _reference(secret: bytes, fields: dict[str, str]) -> str:
    message = "\x1f".join(["xai-gate-verdict-v3", *(fields[key] for key in ORDER)])
    return hmac.new(secret, message.encode("utf-8"), hashlib.sha256).hexdigest()


def _tags(fields: dict[str, str], signature: str) -> dict[str, str]:
    return {
        "xai_gate.verdict": fields["verdict"],
        "xai_gate.run_id": fields["run_id"],
        "xai_gate.policy_hash": fields["policy_hash"],
        "xai_gate.signed_at": fields["signed_at"],
        "xai_gate.model_sha256": fields["model_digest"],
        "xai_gate.checks_version": fields["checks_version"],
        "xai_gate.signature": signature,
    }


def _identity(fields: dict[str, str]) -> dict[str, str]:
    """What a verifier reads from the version entity, never from a tag."""
    return {
        "model": fields["model"],
        "version": fields["version"],
        "source": fields["source"],
        "created": fields["created"],
    }


def test_the_signature_is_the_documented_hmac():
    # The same digest from outside Python, as the README says a reviewer can compute it:
    # printf 'xai-gate-verdict-v3\x1flesion-classifier\x1f3\x1fpassed\x1fr1\x1fabc'\
    # '\x1f1700000000\x1fd1g3st\x1fmodels:/m-0123\x1f1699999999000\x1f0.1.0+checks1'
    #   | openssl dgst -sha256 -hmac s3cret
    openssl = "14f7554013e7de9f6e762db76a4244f6d99318d223ef400cdbcc948c4bd33654"
    assert _reference(SECRET, FIELDS) == openssl
    assert sign_verdict(SECRET, **FIELDS) == openssl


@pytest.mark.parametrize(
    "fields",
    [
        {"model": "naïve-模型", "version": "12", "run_id": "", "policy_hash": ""},
        {"verdict": "blocked", "signed_at": "0"},
        {"model": "a\x1fb"},  # a separator inside a field is signed as given
        {"model_digest": "", "source": "runs:/r/model", "created": "0"},
    ],
)
def test_other_fields_sign_as_the_layout_says(fields):
    claim = FIELDS | fields
    assert sign_verdict(SECRET, **claim) == _reference(SECRET, claim)


@pytest.mark.parametrize(
    ("what", "claimed"),
    [
        ("cross-model", {"model": "other-classifier"}),
        ("cross-version", {"version": "4"}),
        ("policy-hash swap", {"policy_hash": "def"}),
        ("timestamp swap", {"signed_at": "1700000001"}),
        ("run swap", {"run_id": "r2"}),
        ("verdict swap", {"verdict": "blocked"}),
        ("other bytes under the same version", {"model_digest": "0ther"}),
        ("a version deleted and registered again", {"created": "1700000500000"}),
        ("another logged model behind the version", {"source": "models:/m-9999"}),
        ("judged by another release", {"checks_version": "0.0.9+checks1"}),
    ],
)
def test_a_signature_verifies_for_exactly_the_claim_it_was_made_for(what, claimed):
    """A correct signature for FIELDS, presented with one field changed, does not verify."""
    signature = _reference(SECRET, FIELDS)
    honest = _tags(FIELDS, signature)
    assert verify_signature(SECRET, tags=honest, **_identity(FIELDS))
    assert verify_passed(SECRET, tags=honest, **_identity(FIELDS)) is None
    swapped = FIELDS | claimed
    tags = _tags(swapped, signature)
    assert not verify_signature(SECRET, tags=tags, **_identity(swapped)), what
    assert verify_passed(SECRET, tags=tags, **_identity(swapped)) is not None, what
    # ...while the signature made for the swapped claim verifies for it.
    resigned = _tags(swapped, _reference(SECRET, swapped))
    assert verify_signature(SECRET, tags=resigned, **_identity(swapped)), what


def test_another_secret_an_empty_or_uppercase_signature_does_not_verify():
    who = _identity(FIELDS)
    assert not verify_signature(SECRET, tags=_tags(FIELDS, _reference(b"another", FIELDS)), **who)
    assert not verify_signature(SECRET, tags=_tags(FIELDS, ""), **who)
    upper = _tags(FIELDS, _reference(SECRET, FIELDS).upper())
    assert not verify_signature(SECRET, tags=upper, **who)


def test_a_version_given_as_a_number_signs_as_its_text():
    assert sign_verdict(SECRET, **(FIELDS | {"version": 3})) == _reference(SECRET, FIELDS)


def test_a_missing_field_tag_reads_as_the_empty_field():
    """The gate signs '' for what it leaves empty (an error has no run): the tag may be absent."""
    empty = dict.fromkeys(("run_id", "policy_hash", "verdict", "signed_at"), "")
    claim = FIELDS | empty | {"model_digest": "", "checks_version": ""}
    tags = {"xai_gate.signature": _reference(SECRET, claim)}
    assert verify_signature(SECRET, tags=tags, **_identity(FIELDS))
    assert not verify_signature(SECRET, tags={}, **_identity(FIELDS))


def test_a_signature_tag_of_any_text_is_refused_not_an_error():
    for junk in ("ü" * 64, "not hex", " ", "0" * 63):
        tags = _tags(FIELDS, junk)
        assert not verify_signature(SECRET, tags=tags, **_identity(FIELDS))
        assert "does not verify" in verify_passed(SECRET, tags=tags, **_identity(FIELDS))
