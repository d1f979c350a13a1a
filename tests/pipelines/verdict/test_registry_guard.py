"""The enforced registry guard: in process, and server-side over HTTP with a real server."""

from __future__ import annotations

import signal
import time

import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from pipelines.verdict.decision import GateDecision, Verdict
from pipelines.verdict.decision import record_verdict as _record_verdict
from pipelines.verdict.model_digest import model_digest
from pipelines.verdict.signing import checks_version, sign_verdict

SECRET = "test-secret"


def _versions(client: MlflowClient, name: str, count: int) -> None:
    """``count`` versions of ``name``, each a run's ``model/`` folder with its own weights."""
    client.create_registered_model(name)
    experiment = client.create_experiment(f"guard-{name}")
    for index in range(count):
        run = client.create_run(experiment)
        client.log_text(run.info.run_id, f"weights of version {index + 1}", "model/weights.bin")
        client.create_model_version(
            name, source=f"{run.info.artifact_uri}/model", run_id=run.info.run_id
        )


def _digest_of(name: str, version: str) -> str:
    """The version's files hashed as the gate hashes them: downloaded, then digested."""
    import mlflow

    location = MlflowClient().get_model_version_download_uri(name, version)
    return model_digest(mlflow.artifacts.download_artifacts(artifact_uri=location))


def record_verdict(name: str, version: str, decision: GateDecision, **options) -> bool:
    """The gate's record of a verdict on the version's files as they are now."""
    options.setdefault("model_digest", _digest_of(name, version))
    return _record_verdict(name, version, decision, **options)


@pytest.fixture
def guarded(tmp_path, monkeypatch) -> MlflowClient:
    """A client whose registry is the guarded store on a fresh sqlite file."""
    import mlflow

    db = tmp_path / "registry.db"
    monkeypatch.setenv("XAI_GATE_SECRET", SECRET)
    monkeypatch.chdir(tmp_path)
    mlflow.set_tracking_uri(f"sqlite:///{db}")
    # set_registry_uri also exports MLFLOW_REGISTRY_URI: let monkeypatch undo that.
    monkeypatch.setenv("MLFLOW_REGISTRY_URI", f"xai-gate+sqlite:///{db}")
    monkeypatch.setattr(  # MLflow's global, restored after the test
        "mlflow.tracking._model_registry.utils._registry_uri", f"xai-gate+sqlite:///{db}"
    )
    client = MlflowClient()
    _versions(client, "m", 3)
    yield client
    mlflow.set_registry_uri(None)


def test_only_a_signed_pass_gets_the_protected_alias(guarded):
    client = guarded
    record_verdict("m", "1", GateDecision(Verdict.PASSED), run_id="r1", policy_hash="h")
    assert str(client.get_model_version_by_alias("m", "champion").version) == "1"
    with pytest.raises(
        MlflowException, match="refuses alias 'champion' for m version 2: it has no"
    ):
        client.set_registered_model_alias("m", "champion", "2")
    record_verdict("m", "2", GateDecision(Verdict.BLOCKED, ["x"]), run_id="r2", policy_hash="h")
    with pytest.raises(MlflowException, match="verdict is 'blocked'"):
        client.set_registered_model_alias("m", "champion", "2")
    client.set_model_version_tag("m", "2", "xai_gate.verdict", "passed")  # by hand
    with pytest.raises(MlflowException, match="does not verify"):
        client.set_registered_model_alias("m", "champion", "2")
    signed = client.get_model_version("m", "1").tags  # copy v1's whole signed verdict onto v3
    for key in (
        "xai_gate.verdict",
        "xai_gate.run_id",
        "xai_gate.policy_hash",
        "xai_gate.signature",
    ):
        client.set_model_version_tag("m", "3", key, signed[key])
    with pytest.raises(MlflowException, match="does not verify"):
        client.set_registered_model_alias("m", "champion", "3")
    client.set_registered_model_alias("m", "staging", "3")  # unprotected: unaffected
    assert str(client.get_model_version_by_alias("m", "champion").version) == "1"


def test_refusals_are_permission_errors_and_other_tags_pass_through(guarded):
    client = guarded
    with pytest.raises(MlflowException, match="refuses alias 'champion'") as refused:
        client.set_registered_model_alias("m", "champion", "2")
    assert refused.value.error_code == "PERMISSION_DENIED"
    client.set_model_version_tag("m", "2", "owner", "ana")
    client.set_model_version_tag("m", "3", "owner", "bo")
    client.delete_model_version_tag("m", "2", "owner")  # forwarded to MLflow's store as given
    assert "owner" not in client.get_model_version("m", "2").tags
    assert client.get_model_version("m", "3").tags["owner"] == "bo"
    client.set_registered_model_alias("m", "staging", "3")
    assert str(client.get_model_version_by_alias("m", "staging").version) == "3"


def test_a_gate_without_the_secret_cannot_promote_through_the_guard(guarded, monkeypatch):
    monkeypatch.delenv("XAI_GATE_SECRET")
    promoted = record_verdict("m", "1", GateDecision(Verdict.PASSED), run_id="r1", policy_hash="h")
    assert promoted is False
    tags = guarded.get_model_version("m", "1").tags
    assert "no XAI_GATE_SECRET" in tags["xai_gate.promotion_error"]
    assert (tags["xai_gate.verdict"], tags["xai_gate.signature"]) == ("passed", "")
    assert tags["xai_gate.guard.accepted_signature"] == ""
    with pytest.raises(MlflowException, match="not found"):
        guarded.get_model_version_by_alias("m", "champion")


def _write_back(client: MlflowClient, version: str, tags: dict[str, str]) -> None:
    """Write a verdict's tags in the gate's own order: the verdict last."""
    keys = [k for k in tags if k.startswith("xai_gate.") and not k.startswith("xai_gate.guard.")]
    for key in sorted(keys, key=lambda k: k == "xai_gate.verdict"):
        client.set_model_version_tag("m", version, key, tags[key])


def test_a_replayed_old_pass_is_refused_after_a_later_block(guarded):
    """An old signed pass written back over a newer 'blocked' verifies, but is not fresh."""
    client = guarded
    an_hour_ago = str(int(time.time()) - 3600)
    entity, digest = client.get_model_version("m", "2"), _digest_of("m", "2")
    old_pass = {
        "xai_gate.run_id": "r-old",
        "xai_gate.policy_hash": "h",
        "xai_gate.signed_at": an_hour_ago,
        "xai_gate.model_sha256": digest,
        "xai_gate.checks_version": checks_version(),
        "xai_gate.signature": sign_verdict(
            SECRET.encode(),
            model="m",
            version="2",
            verdict="passed",
            run_id="r-old",
            policy_hash="h",
            signed_at=an_hour_ago,
            model_digest=digest,
            source=entity.source,
            created=str(entity.creation_timestamp),
            checks_version=checks_version(),
        ),
        "xai_gate.verdict": "passed",
    }
    record_verdict("m", "2", GateDecision(Verdict.BLOCKED, ["x"]), run_id="r-new", policy_hash="h")
    _write_back(client, "2", old_pass)
    tags = client.get_model_version("m", "2").tags
    assert tags["xai_gate.verdict"] == "passed" and tags["xai_gate.guard.accepted_signature"] == ""
    with pytest.raises(MlflowException, match="not fresh when it was written") as refused:
        client.set_registered_model_alias("m", "champion", "2")
    assert refused.value.message == (
        "xai-gate refuses alias 'champion' for m version 2: its signed verdict was not fresh "
        "when it was written (an old verdict written back: a replay), or it was changed since"
    )


def test_a_fresh_pass_can_be_rolled_back_to_while_it_is_the_latest_verdict(guarded):
    client = guarded
    record_verdict("m", "1", GateDecision(Verdict.PASSED), run_id="r1", policy_hash="h")
    record_verdict("m", "2", GateDecision(Verdict.PASSED), run_id="r2", policy_hash="h")
    assert str(client.get_model_version_by_alias("m", "champion").version) == "2"
    client.set_registered_model_alias("m", "champion", "1")  # a rollback, by hand
    assert str(client.get_model_version_by_alias("m", "champion").version) == "1"
    # Re-stating the same pass later does not re-accept it once it is old.
    record_verdict("m", "1", GateDecision(Verdict.BLOCKED, ["x"]), run_id="r3", policy_hash="h")
    with pytest.raises(MlflowException, match="verdict is 'blocked'"):
        client.set_registered_model_alias("m", "champion", "1")


def test_clients_cannot_write_the_guards_own_tags(guarded):
    client = guarded
    record_verdict("m", "1", GateDecision(Verdict.PASSED), run_id="r1", policy_hash="h")
    accepted = client.get_model_version("m", "1").tags["xai_gate.guard.accepted_signature"]
    with pytest.raises(MlflowException, match="written by the registry guard only") as written:
        client.set_model_version_tag("m", "2", "xai_gate.guard.accepted_signature", accepted)
    with pytest.raises(MlflowException, match="written by the registry guard only") as deleted:
        client.delete_model_version_tag("m", "1", "xai_gate.guard.accepted_signature")
    # Refusals are permission errors (HTTP 403 through a server), never a server fault.
    assert written.value.error_code == deleted.value.error_code == "PERMISSION_DENIED"
    assert written.value.get_http_status_code() == 403
    run = client.create_run(client.get_experiment_by_name("guard-m").experiment_id)
    with pytest.raises(MlflowException, match="written by the registry guard only"):
        client.create_model_version(
            "m",
            source=f"{run.info.artifact_uri}/model",
            run_id=run.info.run_id,
            tags={"xai_gate.guard.accepted_signature": accepted},
        )


def test_a_verdict_whose_tags_were_changed_after_it_was_written_is_refused(guarded):
    client = guarded
    record_verdict("m", "1", GateDecision(Verdict.PASSED), run_id="r1", policy_hash="h")
    record_verdict("m", "2", GateDecision(Verdict.PASSED), run_id="r2", policy_hash="h")
    signed = client.get_model_version("m", "2").tags
    # The tags of v2's old pass, copied back without rewriting the verdict tag itself.
    record_verdict("m", "2", GateDecision(Verdict.PASSED), run_id="r9", policy_hash="h")
    for key in ("xai_gate.run_id", "xai_gate.signed_at", "xai_gate.signature"):
        client.set_model_version_tag("m", "2", key, signed[key])
    client.set_registered_model_alias("m", "champion", "1")
    with pytest.raises(MlflowException, match="not fresh when it was written"):
        client.set_registered_model_alias("m", "champion", "2")


@pytest.mark.slow
def test_a_real_mlflow_server_enforces_the_guard_over_http(tmp_path, monkeypatch):
    from flows.example import start_mlflow_server

    server = start_mlflow_server(
        tmp_path,
        registry_store_uri="xai-gate+sqlite:///mlflow.db",
        env={"XAI_GATE_SECRET": SECRET, "XAI_GATE_PROTECTED_ALIASES": "champion"},
    )
    try:
        uri = server.uri
        client = MlflowClient(tracking_uri=uri, registry_uri=uri)
        _versions(client, "m", 2)
        import mlflow

        monkeypatch.setenv("XAI_GATE_SECRET", SECRET)
        mlflow.set_tracking_uri(uri)
        monkeypatch.setenv("MLFLOW_REGISTRY_URI", uri)
        mlflow.set_registry_uri(uri)
        try:
            # A version gated properly gets champion through the server...
            assert record_verdict("m", "1", GateDecision(Verdict.PASSED), run_id="r1")
            # ...an ungated one, a blocked one, or one with a hand-set tag does not.
            with pytest.raises(MlflowException, match="it has no xai-gate verdict"):
                client.set_registered_model_alias("m", "champion", "2")
            record_verdict("m", "2", GateDecision(Verdict.BLOCKED, ["x"]), run_id="r2")
            with pytest.raises(MlflowException, match="verdict is 'blocked'"):
                client.set_registered_model_alias("m", "champion", "2")
            client.set_model_version_tag("m", "2", "xai_gate.verdict", "passed")
            with pytest.raises(MlflowException, match="does not verify"):
                client.set_registered_model_alias("m", "champion", "2")
            client.set_registered_model_alias("m", "challenger", "2")  # unprotected
        finally:
            mlflow.set_registry_uri(None)
        assert str(client.get_model_version_by_alias("m", "champion").version) == "1"
        assert str(client.get_model_version_by_alias("m", "challenger").version) == "2"
    finally:
        server.kill(signal.SIGTERM)


def _weights_file(client: MlflowClient, version: str):
    from pathlib import Path
    from urllib.parse import urlparse

    location = client.get_model_version_download_uri("m", version)
    return Path(urlparse(location).path if "://" in location else location) / "weights.bin"


def test_a_passed_version_whose_weights_were_overwritten_cannot_take_the_alias(guarded):
    """The verdict is bound to the bytes: the same name over other weights is not the pass."""
    client = guarded
    assert record_verdict("m", "2", GateDecision(Verdict.PASSED), run_id="r2", policy_hash="h")
    client.delete_registered_model_alias("m", "champion")
    _weights_file(client, "2").write_text("the shortcut model's weights")
    with pytest.raises(MlflowException) as refused:
        client.set_registered_model_alias("m", "champion", "2")
    assert "are not the files that passed" in refused.value.message
    assert refused.value.error_code == "PERMISSION_DENIED"
    # ...and when the files are gone, the guard says it cannot check them.
    _weights_file(client, "2").unlink()
    _weights_file(client, "2").parent.rmdir()
    with pytest.raises(MlflowException, match="finds no model files at"):
        client.set_registered_model_alias("m", "champion", "2")


def test_a_model_deleted_and_registered_again_under_the_same_number_is_not_the_pass(guarded):
    """Delete, recreate with the shortcut as v1, write the copied tags back while fresh."""
    client = guarded
    record_verdict("m", "1", GateDecision(Verdict.PASSED), run_id="r1", policy_hash="h")
    copied = dict(client.get_model_version("m", "1").tags)
    source = client.get_model_version("m", "1").source
    client.delete_registered_model_alias("m", "champion")  # allowed: it promotes nothing
    client.delete_registered_model("m")
    client.create_registered_model("m")
    client.create_model_version("m", source=source)  # the same files, even: another version
    _write_back(client, "1", copied)
    tags = client.get_model_version("m", "1").tags
    assert tags["xai_gate.signature"] == copied["xai_gate.signature"]
    assert tags["xai_gate.guard.accepted_signature"] == ""  # judged as written: not this version
    with pytest.raises(MlflowException, match="registered again"):
        client.set_registered_model_alias("m", "champion", "1")


def test_the_alias_holder_and_its_model_cannot_be_deleted_until_the_alias_goes(
    guarded, monkeypatch
):
    client = guarded
    record_verdict("m", "2", GateDecision(Verdict.PASSED), run_id="r2", policy_hash="h")
    with pytest.raises(MlflowException) as model:
        client.delete_registered_model("m")
    assert model.value.message == (
        "xai-gate: refuses to delete registered model m: version 2 holds protected alias "
        "'champion' (delete the alias first; XAI_GATE_GUARD_DELETES=false allows it)"
    )
    with pytest.raises(MlflowException, match="refuses to delete m version 2: version 2 holds"):
        client.delete_model_version("m", "2")
    client.delete_model_version("m", "3")  # holds nothing: deleted as MLflow deletes it
    assert {int(v.version) for v in client.search_model_versions("name = 'm'")} == {1, 2}
    assert "xai_gate.history" in client.get_model_version("m", "2").tags  # the record stays
    monkeypatch.setenv("XAI_GATE_GUARD_DELETES", "false")
    client.delete_model_version("m", "2")
    assert {int(v.version) for v in client.search_model_versions("name = 'm'")} == {1}


def test_a_deprecated_stage_transition_to_production_needs_what_the_alias_needs(
    guarded, monkeypatch
):
    client = guarded
    with pytest.raises(MlflowException, match="refuses stage 'Production' for m version 1: it has"):
        client.transition_model_version_stage("m", "1", "Production")
    with pytest.raises(MlflowException, match="refuses stage 'production'"):
        client.transition_model_version_stage("m", "1", "production")
    client.transition_model_version_stage("m", "1", "Staging")  # not protected by default
    record_verdict("m", "1", GateDecision(Verdict.PASSED), run_id="r1", policy_hash="h")
    client.transition_model_version_stage("m", "1", "Production")
    assert client.get_model_version("m", "1").current_stage == "Production"
    monkeypatch.setenv("XAI_GATE_PROTECTED_STAGES", "Production,Staging")
    with pytest.raises(MlflowException, match="refuses stage 'Staging' for m version 2"):
        client.transition_model_version_stage("m", "2", "Staging")


def test_protected_aliases_are_a_comma_separated_list(monkeypatch):
    from pipelines.verdict.guard import protected_aliases

    monkeypatch.delenv("XAI_GATE_PROTECTED_ALIASES", raising=False)
    assert protected_aliases() == {"champion"}
    monkeypatch.setenv("XAI_GATE_PROTECTED_ALIASES", " champion, prod ,,canary")
    assert protected_aliases() == {"champion", "prod", "canary"}


def test_the_guard_store_takes_only_its_own_uri_scheme(tmp_path):
    from pipelines.verdict.guard import GuardedRegistryStore

    with pytest.raises(MlflowException, match=r"xai-gate registry store URIs start with "):
        GuardedRegistryStore(f"sqlite:///{tmp_path / 'r.db'}")


@pytest.mark.parametrize(("age", "accepted"), [(300.0, True), (300.5, False), (-300.0, True)])
def test_a_verdict_is_fresh_up_to_exactly_the_maximum_age(guarded, monkeypatch, age, accepted):
    """Ages within XAI_GATE_SIGNATURE_MAX_AGE (default 300 s, either way: clocks differ) pass."""
    from types import SimpleNamespace

    import pipelines.verdict.signing as signing

    signed_at = "1700000000"
    monkeypatch.setattr(signing, "time", SimpleNamespace(time=lambda: 1700000000 + age))
    entity = guarded.get_model_version("m", "1")
    signature = sign_verdict(
        SECRET.encode(), model="m", version="1", verdict="passed", run_id="r",
        policy_hash="h", signed_at=signed_at, source=entity.source,
        created=str(entity.creation_timestamp),
    )  # fmt: skip
    _write_back(
        guarded,
        "1",
        {
            "xai_gate.run_id": "r",
            "xai_gate.policy_hash": "h",
            "xai_gate.signed_at": signed_at,
            "xai_gate.signature": signature,
            "xai_gate.verdict": "passed",
        },
    )
    tags = guarded.get_model_version("m", "1").tags
    assert tags["xai_gate.guard.accepted_signature"] == (signature if accepted else "")


def test_the_guard_store_forwards_versions_and_refuses_its_tags_however_they_are_passed(
    tmp_path,
):
    """MLflow's store is called with positional or keyword arguments: both are checked."""
    from mlflow.entities.model_registry import ModelVersionTag

    from pipelines.verdict.guard import GuardedRegistryStore

    store = GuardedRegistryStore(f"xai-gate+sqlite:///{tmp_path / 'r.db'}")
    store.create_registered_model("m")
    forged = [ModelVersionTag("xai_gate.guard.accepted_signature", "x")]
    with pytest.raises(MlflowException, match="written by the registry guard only"):
        store.create_model_version("m", "runs:/r/model", "run-1", forged)
    with pytest.raises(MlflowException, match="written by the registry guard only"):
        store.create_model_version("m", "runs:/r/model", tags=forged)
    positional = store.create_model_version(
        "m", "runs:/r1/model", "run-1", [ModelVersionTag("owner", "ana")]
    )
    alone = store.create_model_version("m", "runs:/r2/model", "run-2")
    keywords = store.create_model_version(
        "m", "runs:/r3/model", run_id="run-3", tags=[ModelVersionTag("owner", "bo")]
    )
    read = [store.get_model_version("m", v.version) for v in (positional, alone, keywords)]
    assert [(v.source, v.run_id, v.tags) for v in read] == [
        ("runs:/r1/model", "run-1", {"owner": "ana"}),
        ("runs:/r2/model", "run-2", {}),
        ("runs:/r3/model", "run-3", {"owner": "bo"}),
    ]


def test_a_pass_the_guard_refuses_the_alias_is_passed_not_promoted_and_tried_again(
    guarded, monkeypatch
):
    from flows.outcome import GateOutcome
    from flows.run import exit_code
    from pipelines.verdict.decision import prior_verdict, promote_alias

    client = guarded
    monkeypatch.delenv("XAI_GATE_SECRET")  # the gate's CLI lacks the secret: nothing is signed
    same = {"policy_hash": "h", "audit_set_hash": "a", "model_digest": _digest_of("m", "1")}
    assert not record_verdict("m", "1", GateDecision(Verdict.PASSED), run_id="r1", **same)
    tags = client.get_model_version("m", "1").tags
    assert tags["xai_gate.verdict"] == "passed"
    refusal = tags["xai_gate.promotion_error"]
    assert refusal == (
        "xai-gate refuses alias 'champion' for m version 1: the guard has no XAI_GATE_SECRET, "
        "so no verdict can be verified"
    )
    assert client.get_registered_model("m").aliases == {}
    prior = prior_verdict("m", "1", **same)
    assert prior is not None and prior.promotion_error == refusal  # a rerun knows to retry
    assert not promote_alias("m", "1", "champion")  # still refused, still recorded
    outcome = GateOutcome("m", "1", Verdict.PASSED, reused=True, not_promoted=refusal)
    assert exit_code(outcome) == 4
    assert outcome.message.startswith("m v1 passed, NOT PROMOTED: alias 'champion' was refused")
    assert exit_code(GateOutcome("m", "1", Verdict.PASSED, promoted=True)) == 0
    monkeypatch.setenv("XAI_GATE_SECRET", SECRET)  # gated again, signed: promoted, note gone
    assert prior_verdict("m", "1", **same) is None  # the unsigned pass is not reused
    assert record_verdict("m", "1", GateDecision(Verdict.PASSED), run_id="r2", **same)
    assert "xai_gate.promotion_error" not in client.get_model_version("m", "1").tags
    assert str(client.get_model_version_by_alias("m", "champion").version) == "1"
