"""Batched predictions of image and text classifiers, the one way every check predicts.

The counterfactual tests, the sanity check's fixed targets and the toy models'
accuracy all need the model's answer without changing the model: eval mode
with frozen parameters, both restored afterwards (``explanation_mode``), no
autograd, and outside any inference mode of the caller's. Probabilities are
checked for NaN and Inf, since the argmax of a NaN row is an arbitrary class
that would read as a flip; labels stay the plain argmax of the logits.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn

from xai_checks._inputs import as_logits, check_batch_size, check_image_batch, prepare_images
from xai_checks._model_state import explanation_mode
from xai_checks._text import encode_texts
from xai_checks.errors import NonFiniteError
from xai_checks.precision import forward

__all__ = [
    "Texts",
    "batch_proba",
    "predict_labels",
    "predict_proba",
    "predict_text_labels",
    "predict_text_proba",
    "predicting",
]

Texts = Sequence[str]
"""Texts to classify, one string each."""


@contextmanager
def predicting(model: nn.Module) -> Iterator[None]:
    """Eval mode, frozen parameters and no autograd for ``model``, restored on exit.

    Leaves an outer inference mode: tensors made there could not later take
    part in the autograd of an explanation pass.
    """
    with torch.inference_mode(False), explanation_mode(model), torch.no_grad():
        yield


def batch_proba(model: nn.Module, images: Tensor) -> Tensor:
    """One batch's softmax (B, classes) on the CPU; call it inside :func:`predicting`."""
    return _checked_softmax(as_logits(forward(model, prepare_images(model, images))))


def predict_proba(model: nn.Module, images: Tensor, *, batch_size: int = 64) -> Tensor:
    """Softmax probabilities (N, classes) on the CPU; the model's flags are restored.

    ``images`` is (N, C, H, W): a tensor, or a lazy stack that slices into tensors.
    """
    with predicting(model):
        return torch.cat([batch_proba(model, batch) for batch in _slices(images, batch_size)])


def predict_labels(model: nn.Module, images: Tensor, *, batch_size: int = 64) -> Tensor:
    """The predicted class per image (N,) on the CPU; the model's flags are restored."""
    with predicting(model):
        return torch.cat(
            [
                as_logits(forward(model, prepare_images(model, batch))).argmax(dim=1).cpu()
                for batch in _slices(images, batch_size)
            ]
        )


def predict_text_proba(
    model: nn.Module, tokenizer: Any, texts: Texts, *, batch_size: int = 64, max_length: int = 256
) -> Tensor:
    """Softmax probabilities (N, classes) of ``texts`` on the CPU; the model's flags are restored.

    Texts are right-padded and truncated to ``max_length`` tokens (at most the
    model's positions), as every text check tokenises them.
    """
    with predicting(model):
        return torch.cat(
            [
                _checked_softmax(logits)
                for logits in _text_logits(model, tokenizer, texts, batch_size, max_length)
            ]
        )


def predict_text_labels(
    model: nn.Module, tokenizer: Any, texts: Texts, *, batch_size: int = 64, max_length: int = 256
) -> Tensor:
    """The predicted class per text (N,) on the CPU; the model's flags are restored."""
    with predicting(model):
        return torch.cat(
            [
                logits.argmax(dim=1).cpu()
                for logits in _text_logits(model, tokenizer, texts, batch_size, max_length)
            ]
        )


def _slices(images: Tensor, batch_size: int) -> Iterator[Tensor]:
    check_batch_size(batch_size)
    n = check_image_batch(images)
    for start in range(0, n, batch_size):
        yield images[start : start + batch_size]


def _text_logits(
    model: nn.Module, tokenizer: Any, texts: Texts, batch_size: int, max_length: int
) -> Iterator[Tensor]:
    """Each batch's logits; the caller holds :func:`predicting`, so an error restores the model."""
    check_batch_size(batch_size)
    texts = list(texts)
    device = next(model.parameters()).device
    for start in range(0, len(texts), batch_size):
        encoded = encode_texts(
            tokenizer, texts[start : start + batch_size], model=model, max_length=max_length
        )
        yield as_logits(forward(model, **{key: value.to(device) for key, value in encoded.items()}))


def _checked_softmax(logits: Tensor) -> Tensor:
    """Softmax in float32 on the CPU; NaN or Inf is an error, since its argmax means nothing."""
    probabilities = logits.float().softmax(dim=1)
    if not torch.isfinite(probabilities).all():
        raise NonFiniteError("the model's outputs contain NaN or Inf")
    return probabilities.cpu()
