"""A tiny BERT review classifier and its CPU training loop.

Built from a config (two layers, four heads, 64 wide) with the packaged
MiniLM's WordPiece tokenizer, so nothing is downloaded and a model trains in
seconds. Eager attention, so its attention weights can be read.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from xai_checks._text import encode_texts
from xai_checks.examples.toy_models import TrainReport
from xai_checks.predict import predict_text_labels

__all__ = [
    "encode",
    "predict_texts",
    "text_accuracy",
    "tiny_bert_classifier",
    "train_text_classifier",
]

_MAX_LENGTH = 64
"""Tokens per text in training and prediction: the tiny model's position embeddings."""


def tiny_bert_classifier(vocab_size: int, num_labels: int = 2, *, seed: int = 0) -> nn.Module:
    """A 2-layer, 4-head ``BertForSequenceClassification`` with eager attention."""
    from transformers import BertConfig, BertForSequenceClassification

    config = BertConfig(
        vocab_size=vocab_size,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=128,
        max_position_embeddings=64,
        num_labels=num_labels,
        attn_implementation="eager",
    )
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return BertForSequenceClassification(config).eval()


def encode(tokenizer, texts: Sequence[str], max_length: int = _MAX_LENGTH) -> dict[str, Tensor]:
    """Padded, truncated input ids and attention masks, as the model takes them."""
    return dict(encode_texts(tokenizer, texts, max_length=max_length))


def train_text_classifier(
    model: nn.Module,
    tokenizer,
    texts: Sequence[str],
    labels: Tensor,
    *,
    epochs: int = 4,
    batch_size: int = 32,
    lr: float = 1e-3,
    seed: int = 0,
) -> TrainReport:
    """AdamW + cross-entropy on the CPU; deterministic by ``seed``."""
    generator = torch.Generator().manual_seed(seed)
    optimiser = torch.optim.AdamW(model.parameters(), lr=lr)
    loss_fn = nn.CrossEntropyLoss()
    texts = list(texts)
    model.train()
    loss = torch.tensor(float("nan"))
    with torch.random.fork_rng():
        torch.manual_seed(seed)  # dropout
        for _ in range(epochs):
            order = torch.randperm(len(texts), generator=generator).tolist()
            for start in range(0, len(order), batch_size):
                idx = order[start : start + batch_size]
                batch = encode(tokenizer, [texts[i] for i in idx])
                optimiser.zero_grad(set_to_none=True)
                loss = loss_fn(model(**batch).logits, labels[idx])
                loss.backward()
                optimiser.step()
    model.eval()
    return TrainReport(epochs, loss.item(), text_accuracy(model, tokenizer, texts, labels))


def predict_texts(
    model: nn.Module, tokenizer, texts: Sequence[str], batch_size: int = 128
) -> Tensor:
    """Predicted class per text, truncated to 64 tokens as in training (see :func:`encode`)."""
    return predict_text_labels(
        model, tokenizer, texts, batch_size=batch_size, max_length=_MAX_LENGTH
    )


def text_accuracy(model: nn.Module, tokenizer, texts: Sequence[str], labels: Tensor) -> float:
    return float((predict_texts(model, tokenizer, texts) == labels).float().mean())
