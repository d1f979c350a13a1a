"""The one predict helper: batched, no gradients, model state restored, NaN refused."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from xai_checks import counterfactual, text_counterfactual
from xai_checks.errors import NonFiniteError, XAICheckError
from xai_checks.examples import toy_models, toy_text_models
from xai_checks.predict import (
    predict_labels,
    predict_proba,
    predict_text_labels,
    predict_text_proba,
)

TEXTS = ["a lovely lamp", "my chair is flimsy and poor .", "the kettle was unremarkable ."]


def _image_model() -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Dropout(0.5), nn.Flatten(), nn.Linear(144, 3))
    model[0].requires_grad_(False)  # a frozen layer stays frozen
    return model.train()


def test_image_labels_are_the_argmax_of_the_probabilities_and_state_is_restored() -> None:
    model = _image_model()
    images = torch.rand(7, 3, 8, 8)
    probabilities = predict_proba(model, images, batch_size=3)
    labels = predict_labels(model, images, batch_size=2)
    assert probabilities.shape == (7, 3) and labels.shape == (7,)
    assert torch.equal(labels, probabilities.argmax(dim=1))
    assert model.training and all(layer.training for layer in model)
    assert [p.requires_grad for p in model.parameters()] == [False, False, True, True]
    assert all(p.grad is None for p in model.parameters())
    with torch.inference_mode():  # a caller's inference mode is no obstacle
        assert torch.equal(predict_labels(model, images), labels)
    assert torch.equal(toy_models.predict(model, images), labels)


def test_bad_batches_and_non_finite_outputs_are_errors() -> None:
    model = _image_model()
    with pytest.raises(XAICheckError, match="batch_size must be >= 1"):
        predict_proba(model, torch.rand(2, 3, 8, 8), batch_size=0)
    with pytest.raises(XAICheckError, match=r"\(N, C, H, W\) with N >= 1"):
        predict_labels(model, torch.rand(0, 3, 8, 8))
    with torch.no_grad():
        model[3].bias.fill_(float("nan"))
    with pytest.raises(NonFiniteError, match="NaN or Inf"):
        predict_proba(model, torch.rand(2, 3, 8, 8))
    assert model.training  # restored on the error path too


def test_text_labels_are_the_argmax_of_the_probabilities_and_state_is_restored(
    minilm: tuple[nn.Module, PreTrainedTokenizerBase],
) -> None:
    _, tokenizer = minilm
    model = toy_text_models.tiny_bert_classifier(tokenizer.vocab_size, num_labels=3).train()
    probabilities = predict_text_proba(model, tokenizer, TEXTS, batch_size=2)
    labels = predict_text_labels(model, tokenizer, TEXTS, batch_size=1)
    assert probabilities.shape == (3, 3)
    torch.testing.assert_close(probabilities.sum(dim=1), torch.ones(3))
    assert torch.equal(labels, probabilities.argmax(dim=1))
    assert torch.equal(toy_text_models.predict_texts(model, tokenizer, TEXTS), labels)
    assert model.training and all(p.requires_grad for p in model.parameters())


def test_the_old_homes_re_export_the_same_functions() -> None:
    assert counterfactual.predict_proba is predict_proba
    assert text_counterfactual.predict_text_proba is predict_text_proba
