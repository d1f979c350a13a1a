"""Shared fixtures: offline environment, a real sqlite MLflow store, trained toy models."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest

from pipelines.offline import apply_offline_defaults

apply_offline_defaults()

import torch  # noqa: E402

torch.set_num_threads(max(1, os.cpu_count() or 1))


@pytest.fixture
def tracking_uri(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh sqlite MLflow store in a temp dir; artifacts land there too (cwd)."""
    import mlflow

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment("tests")  # forget an experiment id cached from another store
    yield uri
    if mlflow.active_run():
        mlflow.end_run()


@dataclass(frozen=True)
class TrainedPair:
    shortcut: torch.nn.Module
    clean: torch.nn.Module


@pytest.fixture(scope="session")
def trained_pair() -> TrainedPair:
    """SmallCNNs trained at ρ = 1 (ruler shortcut) and ρ = 0 (clean), once per session."""
    from xai_checks.synthetic import make_lesions
    from xai_checks.toy_models import SmallCNN, train_classifier

    models = []
    for rho in (1.0, 0.0):
        data = make_lesions(2000, shortcut_strength=rho, seed=1)
        torch.manual_seed(0)
        model = SmallCNN()
        train_classifier(model, data.images, data.labels, epochs=8)
        models.append(model)
    return TrainedPair(*models)


@dataclass(frozen=True)
class TrainedTextPair:
    shortcut: torch.nn.Module
    clean: torch.nn.Module
    tokenizer: object


@pytest.fixture(scope="session")
def trained_text_pair() -> TrainedTextPair:
    """Tiny BERT review classifiers at ρ = 1 (signature shortcut) and ρ = 0, once per session."""
    from transformers import AutoTokenizer

    from xai_checks.attention import default_text_model_path
    from xai_checks.synthetic_text import make_reviews
    from xai_checks.toy_text_models import tiny_bert_classifier, train_text_classifier

    tokenizer = AutoTokenizer.from_pretrained(str(default_text_model_path()))
    models = []
    for rho in (1.0, 0.0):
        data = make_reviews(2000, shortcut_strength=rho, seed=1)
        model = tiny_bert_classifier(tokenizer.vocab_size)
        train_text_classifier(model, tokenizer, data.texts, data.labels)
        models.append(model)
    return TrainedTextPair(*models, tokenizer)
