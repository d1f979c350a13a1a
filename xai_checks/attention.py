"""Raw attention of Hugging Face text models: extraction and text rollout.

Attention weights are the one explanation a transformer hands out for free,
but only with eager attention (fused SDPA / flash kernels never form the
matrix), only per word piece, and only up to each batch's padding. This
module refuses fused models before running and strips padding, so maps of
texts of different lengths line up; :mod:`xai_checks.words` groups the
pieces into words, :mod:`xai_checks.probes` reads them for pronouns, and
:mod:`xai_checks.text_models` loads models with eager attention.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from xai_checks._hf import require_eager_attention, restore_output_capture, returned_attentions
from xai_checks._model_state import explanation_mode
from xai_checks._text import token_limit
from xai_checks.compat import lazy_exports
from xai_checks.errors import XAICheckError
from xai_checks.precision import forward
from xai_checks.rollout import rollout
from xai_checks.words import word_spans

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

__all__ = ["AttentionMaps", "attention_maps", "text_rollout"]

_MOVED = {
    "xai_checks.text_models": ("DEFAULT_TEXT_MODEL", "default_text_model_path", "load_text_model"),
    "xai_checks.words": ("to_words", "word_level", "word_units"),
    "xai_checks.probes": ("PronounProbe", "pronoun_probe"),
}
"""Names that lived here in release 0.1: they import, with a warning, until the next release."""

__getattr__, _ = lazy_exports(
    __name__,
    {},
    renamed={name: f"{module}:{name}" for module, names in _MOVED.items() for name in names},
)


@dataclass(frozen=True)
class AttentionMaps:
    """Attention of N texts, padding removed, so texts of different lengths line up.

    ``weights`` is (N, L, H, T, T) float32 on the CPU with T the longest text;
    row q, column k is how much query token q attends to key token k. Every text
    starts at position 0, so text i's real tokens are positions
    ``0 .. len(tokens[i]) - 1``; rows and columns past them are exactly 0.
    ``word_ids`` maps each real token to its word (None for special tokens such
    as ``[CLS]``); ``words`` are those words as written in the text.
    ``layers``/``heads`` are the model indices the L/H axes hold;
    ``num_layers``/``num_heads`` are the model's totals, so a subset can be told
    apart from the whole (rollout needs every head).
    """

    weights: Tensor
    tokens: list[list[str]]
    attention_mask: Tensor
    word_ids: list[list[int | None]]
    words: list[list[str]]
    layers: tuple[int, ...]
    heads: tuple[int, ...]
    num_layers: int | None = None
    num_heads: int | None = None

    def __len__(self) -> int:
        return len(self.tokens)


def attention_maps(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    layers: Sequence[int] | None = None,
    heads: Sequence[int] | None = None,
    *,
    batch_size: int = 16,
    max_length: int = 256,
) -> AttentionMaps:
    """Per-head attention of ``texts`` through an eager-attention HF encoder or decoder.

    Layer and head indices may be negative (Python-style, ``-1`` is the last)
    and are stored non-negative, in the order given; duplicates are refused.
    Texts are truncated to ``max_length`` tokens and padded by this function, on
    the right, never by the tokenizer: padded keys are masked and, with right
    padding, no real token's position shifts, so the pad id never influences a
    real token's attention. The pad id is the tokenizer's pad token, else its
    EOS token (GPT-2 has no pad token), else 0; the tokenizer is not modified.
    Needs a fast tokenizer (word ids and offsets come from it).
    """
    if isinstance(texts, str):
        raise TypeError("texts must be a sequence of strings, not one string; wrap it in a list")
    texts = list(texts)
    if not texts:
        raise XAICheckError("texts is empty: attention maps need at least one text")
    if batch_size < 1 or max_length < 1:
        raise XAICheckError(
            f"batch_size and max_length must be >= 1, got {batch_size} and {max_length}"
        )
    config = _hugging_face_config(model)
    require_eager_attention(model, "attention maps")
    restore_output_capture(model)
    num_layers = _config_count(config, "num_hidden_layers")
    num_heads = _config_count(config, "num_attention_heads")
    layer_index = _resolve_indices(layers, num_layers, "layer")
    head_index = _resolve_indices(heads, num_heads, "head")
    if not getattr(tokenizer, "is_fast", False):
        raise XAICheckError(
            f"{type(tokenizer).__name__} is not a fast tokenizer: word ids and character "
            "offsets are needed to group word pieces into words"
        )

    encoded = tokenizer(
        texts,
        truncation=True,
        max_length=token_limit(model, max_length),
        return_offsets_mapping=True,
        return_attention_mask=False,
        return_token_type_ids=False,
    )
    all_ids: list[list[int]] = encoded["input_ids"]
    tokens: list[list[str]] = []
    word_ids: list[list[int | None]] = []
    words: list[list[str]] = []
    for i, text in enumerate(texts):
        if not all_ids[i]:
            raise XAICheckError(f"text {i} ({text!r}) has no tokens")
        tokens.append(list(tokenizer.convert_ids_to_tokens(all_ids[i])))
        ids, text_words = _renumbered_words(text, encoded.word_ids(i), encoded["offset_mapping"][i])
        word_ids.append(ids)
        words.append(text_words)

    lengths = torch.tensor([len(ids) for ids in all_ids])
    n, total = len(texts), int(lengths.max())
    weights = torch.zeros(n, len(layer_index), len(head_index), total, total)
    mask = torch.arange(total) < lengths[:, None]
    pad_id = _pad_id(tokenizer)
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    head_select = torch.tensor(head_index)
    all_heads = head_index == list(range(num_heads))
    with explanation_mode(model), torch.no_grad():
        for start in range(0, n, batch_size):
            stop = min(start + batch_size, n)
            width = int(lengths[start:stop].max())
            input_ids = torch.full((stop - start, width), pad_id, dtype=torch.long)
            for row, ids in enumerate(all_ids[start:stop]):
                input_ids[row, : len(ids)] = torch.tensor(ids)
            batch_mask = mask[start:stop, :width].long()
            output = forward(
                model,
                input_ids=input_ids.to(device),
                attention_mask=batch_mask.to(device),
                output_attentions=True,
                return_dict=True,
            )
            attentions = _checked_attentions(output, num_layers, num_heads)
            # One copy per layer straight into the result: no stacking or selection copies.
            for slot, layer in enumerate(layer_index):
                chosen = attentions[layer] if all_heads else attentions[layer][:, head_select]
                weights[start:stop, slot, :, :width, :width] = chosen
            for row in range(stop - start):  # padded queries and keys of shorter texts: zero
                length = int(lengths[start + row])
                if length < width:
                    weights[start + row, :, :, length:, :] = 0
                    weights[start + row, :, :, :, length:] = 0
    return AttentionMaps(
        weights=weights,
        tokens=tokens,
        attention_mask=mask,
        word_ids=word_ids,
        words=words,
        layers=tuple(layer_index),
        heads=tuple(head_index),
        num_layers=num_layers,
        num_heads=num_heads,
    )


def text_rollout(maps: AttentionMaps) -> Tensor:
    """(N, T, T) attention rollout over the layers ``maps`` holds, zero-padded to T.

    Computed per text on its real tokens only: the residual identity rollout
    adds would otherwise give padding positions mass of their own. Rollout
    averages heads, so ``maps`` must hold every head, and it composes layers in
    order, so ``maps.layers`` must be increasing; with a subset of layers the
    result is the rollout of that subset only.
    """
    all_heads = maps.num_heads is None or maps.heads == tuple(range(maps.num_heads))
    if not all_heads:
        raise XAICheckError(
            f"rollout averages all heads, but maps holds heads {maps.heads} of {maps.num_heads}; "
            "extract with heads=None"
        )
    if any(b <= a for a, b in zip(maps.layers, maps.layers[1:], strict=False)):
        raise XAICheckError(
            f"rollout composes layers in order, but maps holds layers {maps.layers}"
        )
    n, _, _, total, _ = maps.weights.shape
    result = torch.zeros(n, total, total, dtype=maps.weights.dtype)
    lengths = torch.tensor([len(tokens) for tokens in maps.tokens])
    for length in lengths.unique().tolist():  # texts of one length: one batched rollout
        rows = (lengths == length).nonzero().flatten()
        real = maps.weights[rows, :, :, :length, :length]  # (k, L, H, t, t)
        result[rows, :length, :length] = rollout(list(real.transpose(0, 1))).to(result.dtype)
    return result


def _hugging_face_config(model: nn.Module) -> Any:
    config = getattr(model, "config", None)
    if config is None:
        raise XAICheckError(
            f"{type(model).__name__} has no config: attention maps need a Hugging Face model"
        )
    return config


def _config_count(config: Any, name: str) -> int:
    value = getattr(config, name, None)
    if not isinstance(value, int):
        raise XAICheckError(f"the model config has no integer {name!r}: cannot index attention")
    return value


def _resolve_indices(requested: Sequence[int] | None, total: int, what: str) -> list[int]:
    if requested is None:
        return list(range(total))
    if isinstance(requested, int):
        raise TypeError(f"{what}s must be a sequence of ints, e.g. [{requested}]")
    resolved: list[int] = []
    for index in requested:
        if isinstance(index, bool) or not isinstance(index, int):
            raise TypeError(f"{what} indices must be ints, got {index!r}")
        if not -total <= index < total:
            raise XAICheckError(
                f"{what} {index} is out of range: the model has {total} {what}s "
                f"(0..{total - 1}, or -{total}..-1 from the end)"
            )
        resolved.append(index % total)
    if not resolved:
        raise XAICheckError(f"{what}s is empty: select at least one {what} or pass None for all")
    if len(set(resolved)) != len(resolved):
        raise XAICheckError(f"{what}s repeat an index: {list(requested)} -> {resolved}")
    return resolved


def _renumbered_words(
    text: str, word_ids: list[int | None], offsets: list[tuple[int, int]]
) -> tuple[list[int | None], list[str]]:
    """Word ids renumbered 0.. in order, and each word's text spanning its pieces' offsets."""
    spans = word_spans(word_ids, offsets)
    order = {word_id: i for i, word_id in enumerate(spans)}
    words = [text[start:end].strip() for start, end in spans.values()]
    return [None if w is None else order[w] for w in word_ids], words


def _pad_id(tokenizer: PreTrainedTokenizerBase) -> int:
    for candidate in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if isinstance(candidate, int):
            return candidate
    return 0


def _checked_attentions(output: object, num_layers: int, num_heads: int) -> tuple[Tensor, ...]:
    attentions = returned_attentions(output, "attention maps")
    if len(attentions) != num_layers or any(
        a is None or a.ndim != 4 or a.shape[1] != num_heads for a in attentions
    ):
        shapes = [None if a is None else tuple(a.shape) for a in attentions]
        raise XAICheckError(
            f"expected {num_layers} layers of (N, {num_heads}, T, T) attention, got {shapes}"
        )
    return attentions
