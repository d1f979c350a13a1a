"""Gradient x input saliency on text: the formula, batching, state hygiene, word sums."""

from __future__ import annotations

import pytest
import torch

from xai_checks.errors import NonFiniteError, XAICheckError
from xai_checks.examples.toy_text_models import tiny_bert_classifier
from xai_checks.saliency import token_saliency, word_scores

TEXTS = ["the kettle was unremarkable .", "a lovely lamp", "my chair is flimsy and poor ."]


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    from xai_checks.text_models import default_text_model_path

    return AutoTokenizer.from_pretrained(str(default_text_model_path()))


@pytest.fixture(scope="module")
def model(tokenizer):
    return tiny_bert_classifier(tokenizer.vocab_size, seed=3)


def test_scores_are_the_norm_of_gradient_times_embedding(model, tokenizer):
    result = token_saliency(model, tokenizer, TEXTS[:1], targets=1)
    encoded = tokenizer(TEXTS[:1], return_tensors="pt")
    embeddings = model.get_input_embeddings()(encoded["input_ids"]).detach().requires_grad_(True)
    captured = {}

    def swap(_module, _inputs, _output):
        captured["leaf"] = embeddings
        return embeddings

    handle = model.get_input_embeddings().register_forward_hook(swap)
    try:
        logits = model(**encoded).logits
    finally:
        handle.remove()
    (grad,) = torch.autograd.grad(logits[0, 1], embeddings)
    expected = (grad * embeddings).norm(dim=-1)[0]
    torch.testing.assert_close(
        result.scores[0, : expected.shape[0]], expected, rtol=1e-4, atol=1e-7
    )
    assert result.targets.tolist() == [1]


def test_batches_pad_with_zeros_and_match_single_texts(model, tokenizer):
    batched = token_saliency(model, tokenizer, TEXTS, batch_size=2)
    for i, text in enumerate(TEXTS):
        alone = token_saliency(model, tokenizer, [text])
        n = len(batched.tokens[i])
        torch.testing.assert_close(batched.scores[i, :n], alone.scores[0, :n], rtol=1e-4, atol=1e-6)
        assert (batched.scores[i, n:] == 0).all()
        assert batched.attention_mask[i].sum() == n
    assert batched.words[0] == ["the", "kettle", "was", "unremarkable", "."]
    assert batched.predictions.tolist() == batched.targets.tolist()


def test_words_sum_their_pieces(model, tokenizer):
    result = token_saliency(model, tokenizer, TEXTS[:1])
    ids = result.word_ids[0]
    pieces = [t for t, w in zip(result.tokens[0], ids, strict=True) if w == 3]
    assert len(pieces) > 1  # 'unremarkable' splits into word pieces
    words = word_scores(result.scores[0, : len(ids)], ids)
    assert words.shape == (5,)
    mask = torch.tensor([w == 3 for w in ids])
    assert words[3] == pytest.approx(float(result.scores[0, : len(ids)][mask].sum()))


def test_state_is_restored_and_bad_input_is_refused(model, tokenizer):
    model.train()
    token_saliency(model, tokenizer, TEXTS[:1])
    assert model.training and all(p.requires_grad for p in model.parameters())
    assert all(p.grad is None for p in model.parameters())
    model.eval()
    with pytest.raises(XAICheckError, match="non-empty sequence"):
        token_saliency(model, tokenizer, [])
    with pytest.raises(ValueError, match="out of range"):
        token_saliency(model, tokenizer, TEXTS[:1], targets=5)


class _InfiniteGradient(torch.autograd.Function):
    """Identity forward, Inf backward: finite logits over a poisoned gradient."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return torch.full_like(grad, float("inf"))


def _assert_restored(model: torch.nn.Module) -> None:
    assert model.training  # flags restored on the error path too
    assert all(p.grad is None for p in model.parameters())
    assert sum(len(m._forward_hooks) for m in model.modules()) == 0


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_logits_are_an_error_naming_the_text(tokenizer, value):
    """A NaN/Inf classifier head: no prediction, so no score may come out of it."""
    poisoned = tiny_bert_classifier(tokenizer.vocab_size, seed=3)
    with torch.no_grad():
        poisoned.classifier.weight.fill_(value)
    poisoned.train()
    with pytest.raises(NonFiniteError, match=r"^the model's logits for text 0 contain NaN or Inf$"):
        token_saliency(poisoned, tokenizer, TEXTS)
    _assert_restored(poisoned)


def test_non_finite_saliency_over_finite_logits_is_an_error(tokenizer):
    model = tiny_bert_classifier(tokenizer.vocab_size, seed=3)
    model.train()
    handle = model.classifier.register_forward_pre_hook(
        lambda _module, args: (_InfiniteGradient.apply(args[0]),)
    )
    try:
        with pytest.raises(NonFiniteError, match=r"^token saliency contains NaN or Inf$"):
            token_saliency(model, tokenizer, TEXTS)
    finally:
        handle.remove()
    _assert_restored(model)
