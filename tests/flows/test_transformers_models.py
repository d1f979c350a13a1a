"""Classifiers logged with ``mlflow.transformers`` (model and tokenizer or processor) are gated."""

from __future__ import annotations

import copy

import mlflow
import pytest
import torch
from mlflow import MlflowClient

from flows.run import run_gate
from pipelines.audit_sets.texts import write_text_audit_set
from pipelines.policy import GatePolicy, write_policy
from pipelines.tracking import load_model_version
from pipelines.tracking.hf_flavour import ProcessorNormalised
from pipelines.verdict.decision import Verdict
from xai_checks.examples.synthetic_text import REVIEW_CLASSES, make_reviews

pytestmark = pytest.mark.slow
MODEL = "hf-reviews"


def _log_transformers(model: torch.nn.Module, tokenizer: object) -> None:
    """As a user logs a Hugging Face classifier: the flavour, its task, its labels."""
    model = copy.deepcopy(model)
    model.config.id2label = dict(enumerate(REVIEW_CLASSES))
    model.config.label2id = {name: i for i, name in enumerate(REVIEW_CLASSES)}
    with mlflow.start_run():
        mlflow.transformers.log_model(
            {"model": model, "tokenizer": tokenizer},
            name="model",
            task="text-classification",
            registered_model_name=MODEL,
            pip_requirements=["torch", "transformers"],
        )


def test_transformers_text_classifiers_are_gated_shortcut_blocked_clean_promoted(
    trained_text_pair, tracking_uri, tmp_path
):
    _log_transformers(trained_text_pair.shortcut, trained_text_pair.tokenizer)
    _log_transformers(trained_text_pair.clean, trained_text_pair.tokenizer)
    loaded = load_model_version(MODEL, "1")
    assert loaded.class_names == REVIEW_CLASSES  # from id2label
    assert loaded.tokenizer is not None
    assert loaded.module.config._attn_implementation == "eager"
    audit = make_reviews(48, signature="always", seed=11)
    manifest = write_text_audit_set(
        tmp_path / "reviews.csv", audit.texts, audit.labels, audit.spurious, REVIEW_CLASSES
    )
    policy = write_policy(
        GatePolicy.from_options(model=MODEL, audit_set=manifest), tmp_path / "policy.yaml"
    )
    shortcut = run_gate(MODEL, "1", policy_file=str(policy))
    assert shortcut.verdict is Verdict.BLOCKED, shortcut.message
    assert any("spurious_mass" in reason for reason in shortcut.reasons)
    clean = run_gate(MODEL, "2", policy_file=str(policy))
    assert clean.verdict is Verdict.PASSED and clean.promoted, clean.message
    assert str(MlflowClient().get_model_version_by_alias(MODEL, "champion").version) == "2"


def test_a_transformers_image_classifier_takes_unit_images_through_its_processor(tracking_uri):
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    config = ViTConfig(
        image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, num_labels=2, id2label={0: "benign", 1: "malignant"},
        label2id={"benign": 0, "malignant": 1},
    )  # fmt: skip
    torch.manual_seed(0)
    model = ViTForImageClassification(config).eval()
    processor = ViTImageProcessor(size={"height": 32, "width": 32}, image_mean=[0.5] * 3,
                                  image_std=[0.25] * 3)  # fmt: skip
    with mlflow.start_run():
        mlflow.transformers.log_model(
            {"model": model, "image_processor": processor},
            name="model",
            task="image-classification",
            registered_model_name="hf-vit",
            pip_requirements=["torch", "transformers"],
        )
    loaded = load_model_version("hf-vit", "1")
    assert isinstance(loaded.module, ProcessorNormalised)
    assert loaded.class_names == ("benign", "malignant") and loaded.tokenizer is None
    images = torch.rand(2, 3, 32, 32)
    expected = model(pixel_values=(images - 0.5) / 0.25).logits
    assert torch.allclose(loaded.module(images), expected, atol=1e-5)
