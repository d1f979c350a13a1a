"""The registry gate on a real sqlite MLflow store: tags always, alias only on pass."""

from __future__ import annotations

import copy
import hashlib
import json
import re
import time
from pathlib import Path

import mlflow
import pytest
import torch
from mlflow import MlflowClient

from flows.sweep import ungated_versions
from pipelines.tracking import ModelLoadError, load_model_version
from pipelines.verdict.decision import (
    TAG_LIMIT,
    GateDecision,
    PriorVerdict,
    Verdict,
    file_digest,
    prior_verdict,
    record_verdict,
)
from pipelines.verdict.signing import checks_version
from xai_checks.examples.toy_models import SmallCNN


@pytest.fixture
def two_versions(tracking_uri) -> str:
    name = "gate-test"
    for _ in range(2):
        with mlflow.start_run():
            mlflow.pytorch.log_model(
                SmallCNN(width=8),
                name="model",
                registered_model_name=name,
                serialization_format="pickle",
                metadata={"class_names": ["a", "b"]},
                pip_requirements=["torch"],
            )
    return name


def test_passed_sets_alias_and_tags(two_versions, monkeypatch):
    import hashlib
    import hmac

    monkeypatch.setenv("XAI_GATE_SECRET", "k")
    client = MlflowClient()
    decision = GateDecision(Verdict.PASSED)
    before = int(time.time())
    moved = record_verdict(
        two_versions,
        "1",
        decision,
        run_id="run-1",
        policy_hash="h",
        audit_set_hash="a",
        model_digest="d" * 64,
    )
    assert moved
    entity = client.get_model_version(two_versions, "1")
    source, created = entity.source, str(entity.creation_timestamp)
    judged_by = checks_version()
    assert re.fullmatch(r"\d+\.\d+\.\d+\+checks\d+", judged_by)
    assert str(client.get_model_version_by_alias(two_versions, "champion").version) == "1"
    tags = client.get_model_version(two_versions, "1").tags
    signed_at = tags["xai_gate.signed_at"]
    assert before <= int(signed_at) <= time.time()
    history = json.loads(tags.pop("xai_gate.history"))
    assert [(h["verdict"], h["run_id"]) for h in history] == [("passed", "run-1")]
    assert tags == {
        "xai_gate.verdict": "passed",
        "xai_gate.run_id": "run-1",
        "xai_gate.reason": "all expectations met",
        "xai_gate.policy_hash": "h",
        "xai_gate.audit_set_sha256": "a",
        "xai_gate.model_sha256": "d" * 64,
        "xai_gate.checks_version": judged_by,
        "xai_gate.signed_at": signed_at,
        # The README's layout, computed here: never the code under test checking itself.
        "xai_gate.signature": hmac.new(
            b"k",
            "\x1f".join(
                [
                    "xai-gate-verdict-v3",
                    two_versions,
                    "1",
                    "passed",
                    "run-1",
                    "h",
                    signed_at,
                    "d" * 64,
                    source,
                    created,
                    judged_by,
                ]
            ).encode(),
            hashlib.sha256,
        ).hexdigest(),
    }


def test_without_a_secret_the_verdict_is_recorded_unsigned(two_versions, monkeypatch):
    monkeypatch.delenv("XAI_GATE_SECRET", raising=False)
    record_verdict(two_versions, "1", GateDecision(Verdict.PASSED), run_id="r")
    assert MlflowClient().get_model_version(two_versions, "1").tags["xai_gate.signature"] == ""


NOT_PASSED = [v for v in Verdict if v is not Verdict.PASSED]


@pytest.mark.parametrize("verdict", NOT_PASSED)
def test_anything_but_passed_leaves_the_alias_where_it_was(two_versions, verdict):
    client = MlflowClient()
    record_verdict(two_versions, "1", GateDecision(Verdict.PASSED), run_id="r1")
    decision = GateDecision(verdict, ["spurious_mass mean 0.6 exceeds 0.3"])
    assert not record_verdict(two_versions, "2", decision, run_id="r2")
    assert str(client.get_model_version_by_alias(two_versions, "champion").version) == "1"
    tags = client.get_model_version(two_versions, "2").tags
    assert tags["xai_gate.verdict"] == verdict.value
    assert tags["xai_gate.reason"] == "spurious_mass mean 0.6 exceeds 0.3"


@pytest.mark.parametrize("verdict", NOT_PASSED)
def test_anything_but_passed_gives_a_first_version_no_alias(two_versions, verdict):
    record_verdict(two_versions, "1", GateDecision(verdict, ["x"]), run_id="r")
    assert MlflowClient().get_registered_model(two_versions).aliases == {}


@pytest.mark.parametrize("dies_at", ["xai_gate.signature", "xai_gate.policy_hash"])
def test_a_verdict_cut_off_while_being_written_leaves_no_verdict(
    two_versions, monkeypatch, dies_at
):
    """The verdict's value is written last: dying before it leaves the version ungated (its
    first verdict's placeholder, 'pending', which the sweeper gates again)."""
    original = MlflowClient.set_model_version_tag

    def dies(client, name, version, key, value):
        if key == dies_at:
            raise KeyboardInterrupt  # the process is killed here
        return original(client, name, version, key, value)

    monkeypatch.setattr(MlflowClient, "set_model_version_tag", dies)
    with pytest.raises(KeyboardInterrupt):
        record_verdict(two_versions, "1", GateDecision(Verdict.PASSED), run_id="r")
    tags = MlflowClient().get_model_version(two_versions, "1").tags
    assert tags["xai_gate.verdict"] == "pending"
    assert MlflowClient().get_registered_model(two_versions).aliases == {}
    assert ungated_versions(two_versions) == ["1", "2"]
    assert (
        prior_verdict(two_versions, "1", policy_hash="", audit_set_hash="", model_digest="") is None
    )


def test_the_verdict_is_the_first_tag_a_version_lists(two_versions):
    """Stores list tags in the order they were first set; MLflow's version table shows them
    in that order, so the verdict must come first, and stay first on later gates."""
    record_verdict(two_versions, "1", GateDecision(Verdict.BLOCKED, ["x"]), run_id="r")
    record_verdict(two_versions, "1", GateDecision(Verdict.PASSED), run_id="r2")
    tags = MlflowClient().get_model_version(two_versions, "1").tags
    assert next(iter(tags)) == "xai_gate.verdict" and tags["xai_gate.verdict"] == "passed"
    listed = MlflowClient().search_model_versions(f"name = '{two_versions}'")
    assert [next(iter(v.tags), None) for v in sorted(listed, key=lambda v: int(v.version))] == [
        "xai_gate.verdict",
        None,
    ]


def test_only_a_finished_verdict_under_the_same_policy_and_data_is_reused(
    two_versions, monkeypatch
):
    monkeypatch.setenv("XAI_GATE_SECRET", "k")
    same = {"policy_hash": "p", "audit_set_hash": "a", "model_digest": "m"}
    assert prior_verdict(two_versions, "1", **same) is None  # never gated
    assert prior_verdict(two_versions, "9", **same) is None  # no such version
    record_verdict(two_versions, "1", GateDecision(Verdict.BLOCKED, ["why"]), run_id="r1", **same)
    assert prior_verdict(two_versions, "1", **same) == PriorVerdict(Verdict.BLOCKED, "why", "r1")
    assert prior_verdict(two_versions, "1", **(same | {"policy_hash": "q"})) is None
    assert prior_verdict(two_versions, "1", **(same | {"audit_set_hash": "b"})) is None
    # Other bytes under the same name (a weights file overwritten): gated again.
    assert prior_verdict(two_versions, "1", **(same | {"model_digest": "other"})) is None
    assert prior_verdict(two_versions, "1", **(same | {"model_digest": ""})) is None
    # A verdict of another release of the checks (an upgrade since): gated again.
    client = MlflowClient()
    client.set_model_version_tag(two_versions, "1", "xai_gate.checks_version", "0.0.1+checks0")
    assert prior_verdict(two_versions, "1", **same) is None
    client.set_model_version_tag(two_versions, "1", "xai_gate.checks_version", checks_version())
    assert prior_verdict(two_versions, "1", **same) is not None
    monkeypatch.setenv("XAI_GATE_SECRET", "another")
    assert prior_verdict(two_versions, "1", **same) is None  # does not verify
    record_verdict(two_versions, "1", GateDecision(Verdict.ERROR, ["boom"]), run_id=None, **same)
    assert prior_verdict(two_versions, "1", **same) is None  # errors are gated again


def test_file_digest_is_the_sha256_of_the_bytes(tmp_path):
    path = tmp_path / "manifest.csv"
    path.write_bytes(b"image,label\n")
    assert file_digest(path) == hashlib.sha256(b"image,label\n").hexdigest()
    assert file_digest(tmp_path / "missing.csv") == ""


def test_a_rerun_does_not_move_an_alias_that_already_points_at_the_version(
    two_versions, monkeypatch
):
    moves = []
    original = MlflowClient.set_registered_model_alias

    def counted(client, name, alias, version):
        moves.append(str(version))
        return original(client, name, alias, version)

    monkeypatch.setattr(MlflowClient, "set_registered_model_alias", counted)
    assert record_verdict(two_versions, "1", GateDecision(Verdict.PASSED), run_id="r1")
    assert record_verdict(two_versions, "1", GateDecision(Verdict.PASSED), run_id="r2")
    assert moves == ["1"]


def test_load_model_version_returns_module_and_class_names(two_versions):
    loaded = load_model_version(two_versions, 2)
    assert isinstance(loaded.module, SmallCNN)
    assert loaded.class_names == ("a", "b")
    assert loaded.uri == "models:/gate-test/2"
    assert loaded.module(torch.rand(1, 3, 32, 32)).shape == (1, 2)


def test_missing_model_version_is_a_clear_error(two_versions):
    with pytest.raises(ModelLoadError, match=r"cannot load models:/gate-test/7"):
        load_model_version(two_versions, 7)
    with pytest.raises(ModelLoadError, match=r"cannot load models:/no-such-model/1"):
        load_model_version("no-such-model", 1)


def _log_pt2(
    model: torch.nn.Module, name: str, example: torch.Tensor, *, static: bool = False
) -> None:
    """MLflow 3's default format, pt2 (torch.export); ``static``: a signature that fixes the
    batch to the example's rows, as a hand-written ``TensorSpec`` does."""
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    fixed = ModelSignature(Schema([TensorSpec(example.numpy().dtype, tuple(example.shape))]))
    with mlflow.start_run():
        mlflow.pytorch.log_model(
            model,
            name="model",
            registered_model_name=name,
            input_example=example.numpy(),
            signature=fixed if static else None,
            pip_requirements=["torch"],
        )


@pytest.mark.parametrize(
    ("rows", "static", "batch"),
    [(1, False, 1), (2, False, None), (4, True, 4)],
    ids=["static batch of one", "dynamic batch", "static batch of four"],
)
def test_pt2_versions_load_with_their_hierarchy_and_explain_like_the_eager_model(
    tracking_uri, rows, static, batch
):
    from torchvision.models import resnet18

    from xai_checks.cam import GradCAM

    torch.manual_seed(0)
    eager = resnet18(weights=None, num_classes=2).eval()
    _log_pt2(eager, "pt2-model", torch.rand(rows, 3, 64, 64), static=static)
    loaded = load_model_version("pt2-model", 1)
    assert loaded.module.get_submodule("layer4") is not None  # the hierarchy is back
    assert loaded.max_batch == batch and loaded.input_size == (64, 64)
    images = torch.rand(batch or 3, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    for rows_at_once in {1, images.shape[0] - 1, images.shape[0]} - {0}:
        chosen = images[:rows_at_once]  # a last, shorter batch is padded up to a static one
        ours = GradCAM(loaded.module, target_layer="layer4").explain(chosen)
        reference = GradCAM(eager, target_layer="layer4").explain(chosen)
        assert ours.heatmaps.shape == reference.heatmaps.shape == (rows_at_once, 64, 64)
        assert torch.equal(ours.predictions, reference.predictions)
        assert torch.allclose(ours.heatmaps, reference.heatmaps, atol=1e-5)
        assert torch.allclose(ours.logits, reference.logits, atol=1e-5)


def test_a_static_batch_export_pads_short_batches_and_chunks_long_ones(tracking_uri):
    from pipelines.tracking.exported import StaticBatchModule

    torch.manual_seed(0)
    eager = SmallCNN(width=8).eval()
    _log_pt2(eager, "pt2-static", torch.rand(4, 3, 32, 32), static=True)
    module = load_model_version("pt2-static", 1).module
    assert isinstance(module, StaticBatchModule) and module.static_batch == 4
    images = torch.rand(11, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        for rows in (1, 3, 4, 5, 11):  # padded, exact, chunked (with a padded last chunk)
            out = module(images[:rows])
            assert out.shape == (rows, 2)
            assert torch.allclose(out, eager(images[:rows]), atol=1e-5)
    twin = copy.deepcopy(module)  # the sanity cascade's randomised copy keeps the padding
    assert isinstance(twin, StaticBatchModule) and twin(images[:2]).shape == (2, 2)


def test_a_pt2_archive_with_a_pickle_payload_is_refused_as_mlflow_refuses_it(
    tracking_uri, monkeypatch
):
    import zipfile

    from pipelines.tracking.exported import EXPORTED_FILE, ExportError, load_exported

    _log_pt2(SmallCNN(width=8).eval(), "pt2-pickled", torch.rand(2, 3, 32, 32))
    local = mlflow.artifacts.download_artifacts("models:/pt2-pickled/1")
    archive = next(Path(local).rglob(EXPORTED_FILE))
    monkeypatch.setenv("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "false")
    assert load_exported(archive, "models:/pt2-pickled/1").batch is None  # a clean one loads
    with zipfile.ZipFile(archive, "a") as handle:  # a pickle where only raw tensors belong
        handle.writestr("model/data/constants/evil.pkl", b"\x80\x04cos\nsystem\n.")

    with pytest.raises(ExportError, match="pt2-pickled"):
        load_exported(archive, "models:/pt2-pickled/1")


class _Tripwire:
    """Unpickling this writes a file: proof that something unpickled the registry's blob."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_weights_only_models_are_rebuilt_without_unpickling_the_registry_blob(
    tracking_uri, tmp_path, monkeypatch
):
    import pickle

    import mlflow
    import torch

    from pipelines.tracking import load_model_version, weights_only_metadata
    from xai_checks.examples.toy_models import SmallCNN

    torch.manual_seed(3)
    model = SmallCNN(num_classes=2, width=16)
    weights = tmp_path / "state_dict.pt"
    torch.save(model.state_dict(), weights)
    with mlflow.start_run():
        info = mlflow.pytorch.log_model(
            model,
            name="model",
            registered_model_name="safe",
            serialization_format="pickle",
            metadata={
                "class_names": ["a", "b"],
                **weights_only_metadata(
                    "xai_checks.examples.toy_models:SmallCNN", num_classes=2, width=16
                ),
            },
            extra_files=[str(weights)],
            pip_requirements=["torch"],
        )
    # Replace the stored pickled module with a tripwire: the gate must never open it.
    (stored,) = [p for p in tmp_path.rglob("model.pth") if info.model_id in str(p)]
    tripped = tmp_path / "unpickled"
    stored.write_bytes(pickle.dumps(_Tripwire(str(tripped))))
    monkeypatch.setenv("XAI_GATE_MODEL_BUILDERS", "xai_checks.examples.toy_models:SmallCNN")
    loaded = load_model_version("safe", "1")
    assert not tripped.exists()
    assert loaded.class_names == ("a", "b")
    for name, tensor in model.state_dict().items():
        assert torch.equal(loaded.module.state_dict()[name], tensor), name


def test_a_weights_only_model_with_a_bad_architecture_is_a_clear_error(
    tracking_uri, tmp_path, monkeypatch
):
    import mlflow
    import torch

    from pipelines.tracking import ModelLoadError, load_model_version, weights_only_metadata
    from xai_checks.examples.toy_models import SmallCNN

    weights = tmp_path / "state_dict.pt"
    torch.save(SmallCNN().state_dict(), weights)
    with mlflow.start_run():
        mlflow.pytorch.log_model(
            SmallCNN(),
            name="model",
            registered_model_name="bad-arch",
            serialization_format="pickle",
            extra_files=[str(weights)],
            metadata=weights_only_metadata("xai_checks.examples.toy_models:NoSuchNet"),
            pip_requirements=["torch"],
        )
    monkeypatch.setenv("XAI_GATE_MODEL_BUILDERS", "xai_checks.examples.toy_models:*")
    with pytest.raises(
        ModelLoadError, match=r"architecture 'xai_checks\.examples\.toy_models:NoSuchNet' is not"
    ):
        load_model_version("bad-arch", "1")


def test_holds_alias_says_where_the_alias_points_now(two_versions):
    from pipelines.verdict.decision import holds_alias

    assert not holds_alias(two_versions, "1", "champion")  # not set at all
    MlflowClient().set_registered_model_alias(two_versions, "champion", "2")
    assert holds_alias(two_versions, "2", "champion")
    assert holds_alias(two_versions, 2, "champion")  # a version given as a number
    assert not holds_alias(two_versions, "1", "champion")
    assert not holds_alias(two_versions, "2", "staging")


def test_an_error_after_a_verdict_is_stamped_once_in_last_error_and_history(
    two_versions, monkeypatch
):
    """The error keeps the verdict; last_error and the history entry carry the same moment."""
    import pipelines.verdict.decision as decision
    from pipelines.verdict.decision import record_error

    stamps = iter(f"2026-12-01T00:00:0{i}Z" for i in range(10))
    monkeypatch.setattr(decision, "_utc_now", lambda: next(stamps))
    record_verdict(two_versions, "1", GateDecision(Verdict.BLOCKED, ["x"]), run_id="r1")
    record_error(two_versions, "1", "OSError: gone")
    tags = MlflowClient().get_model_version(two_versions, "1").tags
    assert tags["xai_gate.verdict"] == "blocked" and tags["xai_gate.run_id"] == "r1"
    history = json.loads(tags["xai_gate.history"])
    assert history == [
        {"at": "2026-12-01T00:00:00Z", "verdict": "blocked", "run_id": "r1", "reason": "x"},
        {"at": "2026-12-01T00:00:01Z", "verdict": "error", "run_id": "", "reason": "OSError: gone"},
    ]
    assert tags["xai_gate.last_error"] == "2026-12-01T00:00:01Z OSError: gone"
    # The next finished verdict supersedes the error.
    record_verdict(two_versions, "1", GateDecision(Verdict.PASSED), run_id="r2")
    assert "xai_gate.last_error" not in MlflowClient().get_model_version(two_versions, "1").tags


def test_a_verdict_without_its_context_records_it_empty_signed_and_keeps_a_holders_alias(
    two_versions, monkeypatch
):
    """The defaults, as a gate that errs before it knows its policy writes them."""
    import hashlib
    import hmac

    monkeypatch.setenv("XAI_GATE_SECRET", "k")
    assert record_verdict(two_versions, "1", GateDecision(Verdict.PASSED), run_id="r1")
    assert not record_verdict(two_versions, "1", GateDecision(Verdict.BLOCKED, ["x"]), run_id=None)
    tags = MlflowClient().get_model_version(two_versions, "1").tags
    assert (tags["xai_gate.verdict"], tags["xai_gate.run_id"]) == ("blocked", "")
    assert tags["xai_gate.policy_hash"] == tags["xai_gate.audit_set_sha256"] == ""
    entity = MlflowClient().get_model_version(two_versions, "1")
    assert tags["xai_gate.model_sha256"] == ""
    message = [
        "xai-gate-verdict-v3",
        two_versions,
        "1",
        "blocked",
        "",
        "",
        tags["xai_gate.signed_at"],
        "",
        entity.source,
        str(entity.creation_timestamp),
        checks_version(),
    ]
    expected = hmac.new(b"k", "\x1f".join(message).encode(), hashlib.sha256).hexdigest()
    assert tags["xai_gate.signature"] == expected
    holder = MlflowClient().get_model_version_by_alias(two_versions, "champion")
    assert str(holder.version) == "1"  # kept by default: the caller warns
    with pytest.raises(ValueError, match="must be 'keep' or 'remove', got 'KEEP'"):
        record_verdict(
            two_versions, "2", GateDecision(Verdict.BLOCKED, ["x"]), run_id="r2",
            on_alias_holder_blocked="KEEP",
        )  # fmt: skip
    assert "xai_gate.verdict" not in MlflowClient().get_model_version(two_versions, "2").tags


def test_the_checks_tag_and_a_long_reason_cut_at_the_tag_limit(two_versions):
    reason = "spurious mass 0.61 > 0.30 " * 300  # 7,800 characters
    record_verdict(
        two_versions, "2", GateDecision(Verdict.BLOCKED, [reason]), run_id="r",
        checks=("heatmaps", "counterfactual"),
    )  # fmt: skip
    tags = MlflowClient().get_model_version(two_versions, "2").tags
    assert tags["xai_gate.checks"] == "heatmaps,counterfactual"
    assert tags["xai_gate.reason"] == reason[:4900]
    assert "xai_gate.checks" not in MlflowClient().get_model_version(two_versions, "1").tags


def test_warnings_are_tagged_joined_cut_and_cleared_by_a_later_verdict_without_them(
    two_versions,
):
    client = MlflowClient()
    long_warning = "strategy 2 looks at one place on every image " * 120  # 5,520 characters
    warned = GateDecision(Verdict.PASSED, warnings=["cluster 1 unconfirmed", long_warning])
    record_verdict(two_versions, "1", warned, run_id="r1")
    tags = client.get_model_version(two_versions, "1").tags
    assert tags["xai_gate.warnings"] == ("cluster 1 unconfirmed; " + long_warning)[:4900]
    assert "xai_gate.warnings" not in client.get_model_version(two_versions, "2").tags
    record_verdict(two_versions, "2", GateDecision(Verdict.PASSED), run_id="r2")  # none before
    record_verdict(two_versions, "1", GateDecision(Verdict.PASSED), run_id="r3")
    assert "xai_gate.warnings" not in client.get_model_version(two_versions, "1").tags
    assert client.get_model_version(two_versions, "2").tags["xai_gate.verdict"] == "passed"


def test_the_history_drops_its_oldest_entries_only_past_the_tag_limit(two_versions, monkeypatch):
    """At exactly the limit nothing is dropped; one character more drops the oldest entry,
    never the newest; the tag is always a whole JSON list."""
    import pipelines.verdict.decision as decision

    monkeypatch.setattr(decision, "_utc_now", lambda: "2026-12-01T00:00:00Z")
    client = MlflowClient()
    newest = {"at": "2026-12-01T00:00:00Z", "verdict": "blocked", "run_id": "r", "reason": "x"}

    def filler(size: int) -> list[dict[str, str]]:
        return [{"note": "a" * size}, {"note": "b"}]

    size = next(  # the filler that makes the history, newest entry included, exactly the limit
        n for n in range(TAG_LIMIT) if len(json.dumps([*filler(n), newest])) == TAG_LIMIT
    )
    for extra, kept in ((0, [*filler(size), newest]), (1, [filler(size + 1)[1], newest])):
        old = filler(size + extra)
        client.set_model_version_tag(two_versions, "1", "xai_gate.history", json.dumps(old))
        record_verdict(two_versions, "1", GateDecision(Verdict.BLOCKED, ["x"]), run_id="r")
        tags = client.get_model_version(two_versions, "1").tags
        assert json.loads(tags["xai_gate.history"]) == kept, extra

    # One old entry near the limit: dropped, the newest kept alone, its reason cut.
    client.set_model_version_tag(
        two_versions, "2", "xai_gate.history", json.dumps([{"note": "c" * 4800}])
    )
    long_reason = "r" * 400
    record_verdict(two_versions, "2", GateDecision(Verdict.BLOCKED, [long_reason]), run_id="r")
    (entry,) = json.loads(client.get_model_version(two_versions, "2").tags["xai_gate.history"])
    assert entry["reason"] == long_reason[:300]


@pytest.mark.parametrize("edited", ['{"verdict": "passed"}', "7", "not json ["])
def test_a_history_edited_by_hand_starts_again_with_a_utc_stamp(two_versions, edited, monkeypatch):
    """Whatever was written by hand, the gate's own entry is kept, stamped in UTC (in a
    process whose local zone is not UTC)."""
    from datetime import UTC, datetime

    monkeypatch.setenv("TZ", "Asia/Kolkata")  # UTC+05:30: local time is never UTC time
    time.tzset()
    try:
        MlflowClient().set_model_version_tag(two_versions, "1", "xai_gate.history", edited)
        before = datetime.now(UTC).replace(microsecond=0)
        record_verdict(two_versions, "1", GateDecision(Verdict.BLOCKED, ["x"]), run_id="r1")
        after = datetime.now(UTC)
    finally:
        monkeypatch.undo()  # the zone as it was (set or not), then re-read by the C library
        time.tzset()
    (entry,) = json.loads(
        MlflowClient().get_model_version(two_versions, "1").tags["xai_gate.history"]
    )
    assert entry.keys() == {"at", "verdict", "run_id", "reason"}
    stamp = datetime.strptime(entry["at"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    assert before <= stamp <= after


def test_a_reused_verdict_without_reason_or_run_reads_them_as_empty(two_versions):
    """Tags written by hand without a secret: reused as they are, missing parts as ''."""
    client = MlflowClient()
    for key, value in {
        "xai_gate.policy_hash": "p",
        "xai_gate.audit_set_sha256": "a",
        "xai_gate.model_sha256": "m",
        "xai_gate.checks_version": checks_version(),
        "xai_gate.verdict": "blocked",
    }.items():
        client.set_model_version_tag(two_versions, "1", key, value)
    reused = prior_verdict(two_versions, "1", policy_hash="p", audit_set_hash="a", model_digest="m")
    assert reused == PriorVerdict(Verdict.BLOCKED, "", "")


@pytest.mark.parametrize(("policy", "holder"), [("keep", "1"), ("remove", None)])
def test_a_blocked_alias_holder_keeps_or_loses_its_alias_as_the_policy_says(
    two_versions, policy, holder
):
    def alias_holder(alias: str) -> str | None:
        try:
            return str(MlflowClient().get_model_version_by_alias(two_versions, alias).version)
        except mlflow.exceptions.MlflowException:
            return None

    record_verdict(two_versions, "1", GateDecision(Verdict.PASSED), run_id="r1", alias="prod")
    assert alias_holder("prod") == "1"
    moved = record_verdict(
        two_versions, "1", GateDecision(Verdict.BLOCKED, ["x"]), run_id="r2", alias="prod",
        on_alias_holder_blocked=policy,
    )  # fmt: skip
    assert moved is False and alias_holder("prod") == holder
    # A blocked version that does not hold the alias never takes it from the one that does.
    record_verdict(two_versions, "2", GateDecision(Verdict.PASSED), run_id="r3", alias="prod")
    record_verdict(
        two_versions, "1", GateDecision(Verdict.BLOCKED, ["y"]), run_id="r4", alias="prod",
        on_alias_holder_blocked="remove",
    )  # fmt: skip
    assert alias_holder("prod") == "2" and alias_holder("champion") is None
