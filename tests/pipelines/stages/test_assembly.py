"""One assembly of the gate's stages, for images and text, on any runner."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from pipelines.audit_sets.images import write_audit_set
from pipelines.audit_sets.texts import write_text_audit_set
from pipelines.evidence.base import Evidence
from pipelines.evidence.images import ImageEvidence
from pipelines.evidence.texts import TextEvidence
from pipelines.policy import GatePolicy
from pipelines.stages.assembly import collect_evidence
from pipelines.tracking import LoadedModel
from xai_checks.examples.synthetic import CLASS_NAMES, make_lesions
from xai_checks.examples.synthetic_text import REVIEW_CLASSES, make_reviews

pytestmark = pytest.mark.slow


def test_image_stages_run_in_order_through_the_runner(shortcut_model, lesion_manifest, runner):
    policy = GatePolicy.from_options(
        model="m", audit_set=lesion_manifest, discovery=True, sanity_images=4
    )
    evidence = collect_evidence(shortcut_model, policy, runner=runner)
    assert runner.calls == [
        ("run", "load-audit-set"),
        ("run", "cam-audit"),
        ("run", "counterfactual-audit"),
        ("run", "sanity-check"),
        ("run", "discover-strategies"),
    ]
    assert isinstance(evidence, ImageEvidence) and isinstance(evidence, Evidence)
    assert evidence.modality == "image" and evidence.regions
    assert evidence.evidence_lines == (
        "gradcam",
        "layercam",
        "counterfactual",
        "sanity",
        "discovery",
    )
    assert evidence.summary["n_inputs"] == 40
    assert len(evidence.sanity.table) == 4  # the rules reached the stage
    assert evidence.discovery is not None


def test_sharded_cam_audit_is_submitted_and_equals_the_whole(
    shortcut_model, lesion_manifest, runner
):
    policy = GatePolicy.from_options(
        model="m", audit_set=lesion_manifest, sanity=False, batch_size=8
    )
    model = shortcut_model
    whole = collect_evidence(model, policy)
    sharded = collect_evidence(model, policy, runner=runner, shards=3)
    assert runner.calls == [
        ("run", "load-audit-set"),
        ("submit", "cam-audit"),
        ("submit", "cam-audit"),
        ("submit", "cam-audit"),
        ("submit", "counterfactual-audit"),
        ("run", "discover-strategies"),
    ]
    assert sharded.score_table().equals(whole.score_table())
    assert sharded.metrics() == pytest.approx(whole.metrics(), nan_ok=True)
    assert sharded.evidence_lines == ("gradcam", "layercam", "counterfactual")


def test_text_stages_run_through_the_same_assembly(trained_text_pair, tmp_path, runner):
    reviews = make_reviews(12, signature="always", seed=100)
    manifest = write_text_audit_set(
        tmp_path / "reviews.csv", reviews.texts, reviews.labels, reviews.spurious, REVIEW_CLASSES
    )
    model = LoadedModel(
        trained_text_pair.shortcut,
        "r",
        "1",
        "models:/r/1",
        tuple(REVIEW_CLASSES),
        None,
        tokenizer=trained_text_pair.tokenizer,
    )
    evidence = collect_evidence(model, GatePolicy(model="r", audit_set=manifest), runner=runner)
    assert runner.calls == [
        ("run", "load-text-audit-set"),
        ("run", "text-audit"),
        ("run", "text-counterfactual-audit"),
    ]
    assert isinstance(evidence, TextEvidence) and isinstance(evidence, Evidence)
    assert evidence.modality == "text"
    assert evidence.evidence_lines == ("saliency", "attention", "counterfactual")
    assert evidence.summary["n_inputs"] == evidence.summary["n_texts"] == 12
    assert evidence.metrics()["saliency.spurious_mass"] > 0.5  # the shortcut model


def test_an_audit_set_is_checked_once_per_content_in_a_process(tmp_path, monkeypatch):
    """The listener gates version after version on one audit set: GX checks it once, and
    again after any file in it changes; a set broken since is refused, never served stale."""
    import pipelines.stages.assembly as assembly
    from pipelines.audit_sets.images import load_audit_set
    from pipelines.audit_sets.regions import AuditSetError

    loads: list[str] = []

    def counting_load(manifest, **kwargs):
        loads.append(str(manifest))
        return load_audit_set(manifest, **kwargs)

    monkeypatch.setattr(assembly, "load_audit_set", counting_load)
    monkeypatch.setattr(assembly, "_CHECKED", {})
    batch = make_lesions(6, ruler="always", seed=101)
    manifest = write_audit_set(tmp_path, batch.images, batch.labels, batch.masks, CLASS_NAMES)
    model = LoadedModel(torch.nn.Identity(), "m", "1", "models:/m/1", tuple(CLASS_NAMES), None)
    policy = GatePolicy.from_options(model="m", audit_set=manifest)

    first = assembly.audit_set_stage(model, policy)
    second = assembly.audit_set_stage(model, policy)
    assert len(loads) == 1
    assert torch.equal(first.labels, second.labels) and first.labels is not second.labels
    assert torch.equal(first.masks[:], batch.masks)

    mask = sorted((tmp_path / "masks").iterdir())[0]
    mask.write_bytes(mask.read_bytes())  # rewritten, same bytes: the same set
    assert torch.equal(assembly.audit_set_stage(model, policy).labels, first.labels)
    assert len(loads) == 1

    half = Image.new("L", (64, 64), 0)
    half.paste(255, (0, 0, 32, 64))
    half.save(mask)  # a different mask: checked and read again
    changed = assembly.audit_set_stage(model, policy)
    assert len(loads) == 2 and changed.masks[:].sum() != batch.masks.sum()

    sorted((tmp_path / "images").iterdir())[0].unlink()
    with pytest.raises(AuditSetError, match="column 'image'"):
        assembly.audit_set_stage(model, policy)


def test_images_too_small_for_the_model_are_one_line_naming_both(tmp_path):
    from pipelines.errors import GateError
    from pipelines.stages import assembly
    from xai_checks.examples.toy_models import SmallCNN

    images = torch.rand(4, 3, 2, 2)
    masks = torch.zeros(4, 2, 2, dtype=torch.bool)
    masks[:, 0, 0] = True
    labels = torch.tensor([0, 1, 0, 1])
    manifest = write_audit_set(tmp_path / "tiny", images, labels, masks, CLASS_NAMES)
    module = SmallCNN().train()  # in train mode, as a pickle may arrive
    model = LoadedModel(module, "m", "1", "models:/m/1", tuple(CLASS_NAMES), None)
    policy = GatePolicy.from_options(model="m", audit_set=manifest)
    with pytest.raises(GateError) as refused:
        assembly.audit_set_stage(model, policy)
    message = str(refused.value)
    assert message.startswith(
        f"models:/m/1 cannot run on the audit set's 2x2 images ({manifest}): "
    )
    assert "Output size is too small" in message and "\n" not in message
    assert message.endswith("give it images of the size it was trained on")
    assert module.training  # the probe ran in eval mode and put the mode back
