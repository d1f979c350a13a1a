"""Models logged the way MLflow 3 logs them by default (pt2, torch.export) are gated end to end."""

from __future__ import annotations

import mlflow
import pytest
import torch
from mlflow import MlflowClient

from flows.run import exit_code, run_gate
from pipelines.tracking import load_model_version
from pipelines.verdict.decision import Verdict
from xai_checks.examples.synthetic import CLASS_NAMES

pytestmark = pytest.mark.slow


def _log_pt2(
    model: torch.nn.Module, name: str, rows: int, size: int = 64, *, static: bool = False
) -> None:
    """``mlflow.pytorch.log_model`` with its defaults: pt2, traced on the input example;
    ``static``: a hand-written signature that fixes the batch at ``rows``."""
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    example = torch.rand(rows, 3, size, size).numpy()
    fixed = ModelSignature(Schema([TensorSpec(example.dtype, example.shape)]))
    with mlflow.start_run():
        mlflow.pytorch.log_model(
            model.eval(),
            name="model",
            registered_model_name=name,
            input_example=example,
            signature=fixed if static else None,
            metadata={"class_names": list(CLASS_NAMES)},
            pip_requirements=["torch"],
        )


def test_pt2_lesion_models_are_gated_the_clean_one_promoted_the_shortcut_blocked(
    trained_pair, lesion_gate, tracking_uri, tmp_path
):
    _log_pt2(trained_pair.clean, "pt2-lesions", rows=1)  # a static batch of one
    _log_pt2(trained_pair.shortcut, "pt2-lesions", rows=4)  # a dynamic batch
    policy = lesion_gate.policy(tmp_path, "pt2-lesions", n=32)
    clean = run_gate("pt2-lesions", "1", policy_file=str(policy))
    assert clean.verdict is Verdict.PASSED and clean.promoted, clean.message
    shortcut = run_gate("pt2-lesions", "2", policy_file=str(policy))
    assert shortcut.verdict is Verdict.BLOCKED and exit_code(shortcut) == 1, shortcut.message
    assert any("removal flip rate" in reason for reason in shortcut.reasons)
    assert str(MlflowClient().get_model_version_by_alias("pt2-lesions", "champion").version) == "1"
    run = MlflowClient().get_run(clean.run_id)
    assert run.data.params["batch_size"] == "1"  # the static batch, in every stage
    assert "sanity.final_spearman" in run.data.metrics
    # The evidence is the eager model's: the same maps, batch by batch.
    loaded = load_model_version("pt2-lesions", "1")
    assert loaded.max_batch == 1 and loaded.input_size == (64, 64)

    # A static batch of three: 32 images run as ten batches of three and a last one padded
    # up from two. The evidence is the dynamic export's, number for number.
    _log_pt2(trained_pair.shortcut, "pt2-lesions", rows=3, static=True)
    static = run_gate("pt2-lesions", "3", policy_file=str(policy))
    assert static.verdict is Verdict.BLOCKED and static.reasons == shortcut.reasons
    assert str(MlflowClient().get_model_version_by_alias("pt2-lesions", "champion").version) == "1"
    padded, dynamic = (MlflowClient().get_run(o.run_id).data for o in (static, shortcut))
    assert padded.params["batch_size"] == "3"
    scores = {k: v for k, v in dynamic.metrics.items() if not k.endswith("seconds")}
    assert len(scores) > 10
    assert padded.metrics.keys() >= scores.keys()
    for key, value in scores.items():
        assert padded.metrics[key] == pytest.approx(value, abs=1e-4, nan_ok=True), key


def test_a_pt2_vision_transformer_is_gated_end_to_end(lesion_gate, tracking_uri, tmp_path):
    from torchvision.models.vision_transformer import VisionTransformer

    from xai_checks.cam import GradCAM

    torch.manual_seed(0)
    vit = VisionTransformer(
        image_size=64,
        patch_size=16,
        num_layers=2,
        num_heads=2,
        hidden_dim=32,
        mlp_dim=64,
        num_classes=2,
    ).eval()
    torch.nn.init.normal_(vit.heads.head.weight, std=0.5)  # torchvision starts the head at zero
    _log_pt2(vit, "pt2-vit", rows=2)
    loaded = load_model_version("pt2-vit", "1")
    images = torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    ours_cam, eager_cam = GradCAM(loaded.module), GradCAM(vit)
    ours, eager = ours_cam.explain(images), eager_cam.explain(images)
    # The default layer is found in the unflattened module too (its types are gone, its
    # names are not): the last block's input norm.
    assert ours_cam.target_layers == eager_cam.target_layers
    assert eager_cam.target_layers == ("encoder.layers.encoder_layer_1.ln_1",)
    assert torch.allclose(ours.heatmaps, eager.heatmaps, atol=1e-5)
    policy = lesion_gate.policy(tmp_path, "pt2-vit", n=16)
    outcome = run_gate("pt2-vit", "1", policy_file=str(policy))
    # An untrained ViT is at chance: evidence about nothing, never promoted, never an error.
    assert outcome.verdict in {Verdict.INCONCLUSIVE, Verdict.BLOCKED}, outcome.message
    assert outcome.run_id and not outcome.promoted


def test_an_audit_set_of_another_size_than_the_export_is_refused_naming_both(
    trained_pair, lesion_gate, tracking_uri, tmp_path
):
    _log_pt2(trained_pair.clean, "pt2-sized", rows=2, size=64)
    from pipelines.audit_sets.images import write_audit_set
    from pipelines.policy import GatePolicy, write_policy
    from xai_checks.examples.synthetic import make_lesions

    batch = make_lesions(8, ruler="always", seed=3, size=32)
    manifest = write_audit_set(tmp_path / "a", batch.images, batch.labels, batch.masks, CLASS_NAMES)
    policy = write_policy(
        GatePolicy.from_options(model="pt2-sized", audit_set=manifest), tmp_path / "p.yaml"
    )
    outcome = run_gate("pt2-sized", "1", policy_file=str(policy))
    assert outcome.verdict is Verdict.ERROR
    assert "exported (pt2) for 64x64 images" in outcome.reasons[0]
    assert "holds 32x32 ones" in outcome.reasons[0]
