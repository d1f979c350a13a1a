"""Attention maps of HF text models: padding, layer and head selection, rollout, errors."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerBase

import xai_checks.attention as attention
from xai_checks import probes, text_models, words
from xai_checks.attention import AttentionMaps, attention_maps, text_rollout
from xai_checks.errors import XAICheckError
from xai_checks.rollout import rollout
from xai_checks.words import word_level

BALL_BOX = "The ball didn't fit in the box because it was too big."
TEXTS = [BALL_BOX, "Hi there, unbelievably short.", "A tokenization test for attention maps."]


@pytest.fixture(scope="module")
def maps(minilm: tuple[nn.Module, PreTrainedTokenizerBase]) -> AttentionMaps:
    model, tokenizer = minilm
    return attention_maps(model, tokenizer, TEXTS, batch_size=2)


def _gpt2(vocab_size: int) -> nn.Module:
    torch.manual_seed(0)
    config = GPT2Config(
        n_layer=2,
        n_head=2,
        n_embd=16,
        n_positions=64,
        vocab_size=vocab_size,
        bos_token_id=0,
        eos_token_id=0,
        attn_implementation="eager",
    )
    return GPT2LMHeadModel(config)


def test_shapes_padding_and_mask(maps: AttentionMaps) -> None:
    lengths = [len(tokens) for tokens in maps.tokens]
    total = max(lengths)
    assert len(maps) == 3
    assert maps.weights.shape == (3, 6, 12, total, total)
    assert maps.weights.dtype == torch.float32
    assert maps.layers == tuple(range(6)) and maps.heads == tuple(range(12))
    assert len(set(lengths)) == 3  # really different lengths
    assert maps.tokens[0][:3] == ["[CLS]", "the", "ball"] and maps.tokens[0][-1] == "[SEP]"
    assert maps.attention_mask.dtype == torch.bool
    for i, length in enumerate(lengths):
        assert maps.attention_mask[i].tolist() == [True] * length + [False] * (total - length)
        real = maps.weights[i, :, :, :length, :length]
        torch.testing.assert_close(real.sum(-1), torch.ones(6, 12, length), atol=1e-5, rtol=0)
        assert (maps.weights[i, :, :, length:, :] == 0).all()
        assert (maps.weights[i, :, :, :, length:] == 0).all()
        assert len(maps.word_ids[i]) == length
        assert maps.word_ids[i][0] is None and maps.word_ids[i][-1] is None
    assert maps.words[0][:4] == ["The", "ball", "didn", "'"]  # original casing, BERT's split


def test_maps_are_the_models_own_output_attentions(
    minilm: tuple[nn.Module, PreTrainedTokenizerBase], maps: AttentionMaps
) -> None:
    """Independent of xai-gate: each text alone through transformers, output_attentions on."""
    model, tokenizer = minilm
    for i, text in enumerate(TEXTS):
        encoded = tokenizer(text, return_tensors="pt")
        with torch.no_grad():
            own = model(**encoded, output_attentions=True).attentions
        length = encoded["input_ids"].shape[1]
        assert maps.tokens[i] == tokenizer.convert_ids_to_tokens(encoded["input_ids"][0])
        expected = torch.stack([layer[0] for layer in own])  # (layers, heads, T, T)
        torch.testing.assert_close(
            maps.weights[i, :, :, :length, :length], expected, atol=1e-5, rtol=0
        )


def test_batch_size_one_equals_batched(
    minilm: tuple[nn.Module, PreTrainedTokenizerBase], maps: AttentionMaps
) -> None:
    model, tokenizer = minilm
    for i, text in enumerate(TEXTS):
        single = attention_maps(model, tokenizer, [text], batch_size=1)
        length = len(single.tokens[0])
        assert single.tokens[0] == maps.tokens[i]
        torch.testing.assert_close(
            single.weights[0],
            maps.weights[i, :, :, :length, :length],
            atol=1e-5,
            rtol=0,
        )


def test_layer_and_head_selection(
    minilm: tuple[nn.Module, PreTrainedTokenizerBase], maps: AttentionMaps
) -> None:
    model, tokenizer = minilm
    picked = attention_maps(model, tokenizer, TEXTS, layers=[4, -1], heads=[0, 7, 11])
    assert picked.layers == (4, 5) and picked.heads == (0, 7, 11)
    assert picked.weights.shape[1:3] == (2, 3)
    expected = maps.weights[:, [4, 5]][:, :, [0, 7, 11]]
    torch.testing.assert_close(picked.weights, expected, atol=1e-5, rtol=0)


def test_text_rollout_matches_rollout_per_text(maps: AttentionMaps) -> None:
    result = text_rollout(maps)
    total = maps.weights.shape[-1]
    assert result.shape == (3, total, total)
    for i, tokens in enumerate(maps.tokens):
        n = len(tokens)
        by_hand = rollout([maps.weights[i : i + 1, layer, :, :n, :n] for layer in range(6)])[0]
        torch.testing.assert_close(result[i, :n, :n], by_hand)
        torch.testing.assert_close(result[i, :n, :n].sum(-1), torch.ones(n))
        assert (result[i, n:] == 0).all() and (result[i, :, n:] == 0).all()


def test_text_rollout_needs_all_heads(minilm: tuple[nn.Module, PreTrainedTokenizerBase]) -> None:
    model, tokenizer = minilm
    some_heads = attention_maps(model, tokenizer, ["Hi"], heads=[0, 1])
    with pytest.raises(XAICheckError, match="all heads"):
        text_rollout(some_heads)


def test_sdpa_model_is_refused_with_a_fix(
    minilm: tuple[nn.Module, PreTrainedTokenizerBase],
) -> None:
    model, tokenizer = minilm
    sdpa = copy.deepcopy(model)
    sdpa.set_attn_implementation("sdpa")
    assert sdpa.config._attn_implementation == "sdpa"
    with pytest.raises(XAICheckError, match="eager") as caught:
        attention_maps(sdpa, tokenizer, ["Hi"])
    assert "sdpa" in str(caught.value) and "load_text_model" in str(caught.value)
    assert model.config._attn_implementation == "eager"


def test_gpt2_style_decoder_is_causal(minilm: tuple[nn.Module, PreTrainedTokenizerBase]) -> None:
    _, tokenizer = minilm
    model = _gpt2(len(tokenizer))
    model.train()
    no_pad = copy.deepcopy(tokenizer)
    no_pad.pad_token = None  # GPT-2 tokenizers have none: padding must not need one
    assert no_pad.pad_token_id is None
    maps = attention_maps(model, no_pad, TEXTS[:2])
    assert model.training and all(p.requires_grad for p in model.parameters())  # state restored
    assert maps.weights.shape[1:3] == (2, 2)
    upper = torch.triu(torch.ones_like(maps.weights[0, 0, 0], dtype=torch.bool), diagonal=1)
    assert (maps.weights[..., upper] == 0).all()
    for i, tokens in enumerate(maps.tokens):
        n = len(tokens)
        real = maps.weights[i, :, :, :n, :n]
        torch.testing.assert_close(real.sum(-1), torch.ones(2, 2, n), atol=1e-5, rtol=0)
        alone = attention_maps(model, no_pad, [TEXTS[i]]).weights[0]
        torch.testing.assert_close(alone, real, atol=1e-5, rtol=0)


def test_bad_indices_and_empty_texts(minilm: tuple[nn.Module, PreTrainedTokenizerBase]) -> None:
    model, tokenizer = minilm
    with pytest.raises(XAICheckError, match=r"layer 6 is out of range.*0\.\.5"):
        attention_maps(model, tokenizer, ["Hi"], layers=[6])
    with pytest.raises(XAICheckError, match=r"head -13 is out of range.*0\.\.11"):
        attention_maps(model, tokenizer, ["Hi"], heads=[-13])
    with pytest.raises(XAICheckError, match="repeat"):
        attention_maps(model, tokenizer, ["Hi"], layers=[1, -5])
    with pytest.raises(XAICheckError, match="empty"):
        attention_maps(model, tokenizer, [])
    with pytest.raises(TypeError, match="not one string"):
        attention_maps(model, tokenizer, "Hi")
    with pytest.raises(XAICheckError, match="out of range"):
        word_level(attention_maps(model, tokenizer, ["Hi"]), 1)


def test_text_rollout_on_a_hand_built_padded_stack():
    """Two texts, two layers, one head; the second text has one padding position.

    Text 2 (2 tokens): A1 = [[.5, .5], [0, 1]] -> 0.5 A + 0.5 I = [[.75, .25], [0, 1]];
    A2 = [[1, 0], [.5, .5]] -> [[1, 0], [.25, .75]]; R = Â2 Â1 =
    [[.75, .25], [.25 * .75, .25 * .25 + .75]] = [[.75, .25], [.1875, .8125]].
    Text 1 (3 tokens, uniform attention U): Â = 0.5 U + 0.5 I; Â Â = 0.25 U + 0.5 U + 0.25 I
    (U U = U), so R = 0.75 U + 0.25 I: 1/3 * .75 + .25 = .5 on the diagonal, .25 elsewhere.
    """
    weights = torch.zeros(2, 2, 1, 3, 3)
    weights[0, :, 0] = torch.full((3, 3), 1 / 3)
    weights[1, 0, 0, :2, :2] = torch.tensor([[0.5, 0.5], [0.0, 1.0]])
    weights[1, 1, 0, :2, :2] = torch.tensor([[1.0, 0.0], [0.5, 0.5]])
    maps = AttentionMaps(
        weights=weights,
        tokens=[["[CLS]", "a", "[SEP]"], ["[CLS]", "[SEP]"]],
        attention_mask=torch.tensor([[True, True, True], [True, True, False]]),
        word_ids=[[None, 0, None], [None, None]],
        words=[["a"], []],
        layers=(0, 1),
        heads=(0,),
        num_layers=2,
        num_heads=1,
    )
    result = text_rollout(maps)
    torch.testing.assert_close(result[1, :2, :2], torch.tensor([[0.75, 0.25], [0.1875, 0.8125]]))
    assert (result[1, 2] == 0).all() and (result[1, :, 2] == 0).all()  # padding stays empty
    expected = torch.full((3, 3), 0.25) + torch.eye(3) * 0.25
    torch.testing.assert_close(result[0], expected)


@pytest.mark.parametrize(
    ("name", "module"),
    [
        ("DEFAULT_TEXT_MODEL", text_models),
        ("default_text_model_path", text_models),
        ("load_text_model", text_models),
        ("to_words", words),
        ("word_level", words),
        ("word_units", words),
        ("PronounProbe", probes),
        ("pronoun_probe", probes),
    ],
)
def test_names_that_moved_out_still_import_from_here_with_a_warning(name, module) -> None:
    with pytest.warns(DeprecationWarning, match=rf"xai_checks\.attention\.{name} is now "):
        moved = getattr(attention, name)
    if name == "DEFAULT_TEXT_MODEL":  # a str made on each access: equal, not identical
        assert moved == module.DEFAULT_TEXT_MODEL
    else:
        assert moved is getattr(module, name)
    with pytest.raises(AttributeError, match="no attribute 'no_such_name'"):
        attention.no_such_name  # noqa: B018
