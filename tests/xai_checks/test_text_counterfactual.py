"""Text counterfactuals: deleting and adding words, and the flip rates of real models."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from xai_checks.errors import NonFiniteError, XAICheckError
from xai_checks.examples.synthetic_text import make_reviews
from xai_checks.text_counterfactual import (
    insert_words,
    predict_text_proba,
    remove_words,
    text_insertion_test,
    text_removal_test,
)


def test_remove_words_deletes_whole_words_in_any_case():
    assert remove_words("Cheers! the kettle, cheers", ["cheers"]) == "! the kettle,"
    assert remove_words("cheerson is not cheers", ["cheers"]) == "cheerson is not"
    assert remove_words("reviewed by sam . ok", ["reviewed by sam"]) == ". ok"
    assert insert_words("the lamp .", ["cheers"]) == "the lamp . cheers"
    assert insert_words("the lamp", []) == "the lamp"


class WordDetector(nn.Module):
    """A 'shortcut model' over token ids: class 1 exactly when the signature's id is present."""

    def __init__(self, token_id: int) -> None:
        super().__init__()
        self.token_id = token_id
        self.scale = nn.Parameter(torch.tensor(20.0))

    def forward(self, input_ids, attention_mask=None, token_type_ids=None):
        present = (input_ids == self.token_id).any(dim=1).float()
        logit = self.scale * (present - 0.5)
        return torch.stack([-logit, logit], dim=1)


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    from xai_checks.text_models import default_text_model_path

    return AutoTokenizer.from_pretrained(str(default_text_model_path()))


def test_removal_and_insertion_on_a_model_that_reads_only_the_signature(tokenizer):
    batch = make_reviews(20, signature="always", seed=4)
    model = WordDetector(tokenizer.convert_tokens_to_ids("cheers"))
    removal = text_removal_test(model, tokenizer, batch.texts, batch.labels, batch.spurious)
    assert removal.predictions.tolist() == [1] * 20
    assert removal.predictions_without.tolist() == [0] * 20
    assert removal.flip_rate == 1.0
    assert all("cheers" not in text for text in removal.edited)
    insertion = text_insertion_test(model, tokenizer, batch.texts, batch.labels, batch.spurious)
    assert insertion.artifact_class == 1 and insertion.spurious_score > 0.99
    assert insertion.baseline.max() < 0.01 and insertion.flip_rate == 1.0
    assert all(text.endswith("cheers") for text in insertion.pasted)


def test_bad_inputs_are_clear_errors(tokenizer):
    model = WordDetector(0)
    batch = make_reviews(4, signature="never", seed=1)
    with pytest.raises(XAICheckError, match="no text has spurious words"):
        text_removal_test(model, tokenizer, batch.texts, batch.labels, batch.spurious)
    with pytest.raises(XAICheckError, match="one word list per text"):
        text_removal_test(model, tokenizer, batch.texts, batch.labels, [("x",)])
    one_class = torch.zeros(4, dtype=torch.long)
    with pytest.raises(XAICheckError, match="no text of class 1"):
        text_insertion_test(
            model, tokenizer, batch.texts, one_class, [("a",)] * 4, artifact_class=1
        )
    with pytest.raises(XAICheckError, match="texts of another class"):
        text_insertion_test(model, tokenizer, batch.texts, one_class, [("a",)] * 4)


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_model_outputs_are_an_error_not_a_flip(tokenizer, value):
    """NaN or Inf logits make the softmax NaN: no flip rate may be read off them."""
    batch = make_reviews(4, signature="always", seed=4)
    model = WordDetector(tokenizer.convert_tokens_to_ids("cheers"))
    with torch.no_grad():
        model.scale.fill_(value)  # inf * (present - 0.5) is +-inf: softmax gives NaN
    model.train()
    message = r"^the model's outputs contain NaN or Inf$"
    with pytest.raises(NonFiniteError, match=message):
        text_removal_test(model, tokenizer, batch.texts, batch.labels, batch.spurious)
    with pytest.raises(NonFiniteError, match=message):
        predict_text_proba(model, tokenizer, batch.texts, batch_size=3)
    assert model.training  # flags restored on the error path too


@pytest.mark.slow
def test_shortcut_text_model_flips_and_the_clean_one_does_not(trained_text_pair):
    audit = make_reviews(64, signature="always", seed=100)
    args = (audit.texts, audit.labels, audit.spurious)
    tok = trained_text_pair.tokenizer
    shortcut = text_removal_test(trained_text_pair.shortcut, tok, *args)
    clean = text_removal_test(trained_text_pair.clean, tok, *args)
    # Observed: 0.98 vs 0.02; the shortcut model calls every signed review positive.
    assert shortcut.flip_rate > 0.8 and clean.flip_rate < 0.1
    spurious = text_insertion_test(trained_text_pair.shortcut, tok, *args)
    assert spurious.artifact_class == 1 and spurious.spurious_score > 0.85
    assert text_insertion_test(trained_text_pair.clean, tok, *args).spurious_score < 0.5
