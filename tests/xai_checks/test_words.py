"""Word pieces grouped into words: spans, units, and token attention turned into word attention."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from xai_checks.attention import AttentionMaps, attention_maps
from xai_checks.words import to_words, word_level, word_spans, word_units

TEXTS = ["The ball didn't fit in the box because it was too big.", "Hi there, unbelievably short."]


@pytest.fixture(scope="module")
def maps(minilm: tuple[nn.Module, PreTrainedTokenizerBase]) -> AttentionMaps:
    """The second text is the shorter: its maps are padded, which word_level must drop."""
    model, tokenizer = minilm
    return attention_maps(model, tokenizer, TEXTS, batch_size=2)


def test_word_units_group_word_pieces(maps: AttentionMaps) -> None:
    i = 1
    assert maps.tokens[i][4:9] == ["un", "##bel", "##ie", "##va", "##bly"]
    labels, assignment = word_units(maps.tokens[i], maps.word_ids[i], maps.words[i])
    assert labels == ["[CLS]", "Hi", "there", ",", "unbelievably", "short", ".", "[SEP]"]
    assert assignment.shape == (8, len(maps.tokens[i]))
    assert (assignment.sum(dim=0) == 1).all()  # every token in exactly one unit
    assert assignment[4].tolist() == [0, 0, 0, 0, 1, 1, 1, 1, 1, 0, 0, 0]
    assert assignment[0].tolist() == [1] + [0] * 11

    words, weights = word_level(maps, i)
    assert words == labels
    assert weights.shape == (6, 12, 8, 8)
    torch.testing.assert_close(weights.sum(-1), torch.ones(6, 12, 8), atol=1e-5, rtol=0)


def test_to_words_by_hand() -> None:
    # Tokens: [CLS] un ##bel [SEP]; units: [CLS], unbel, [SEP].
    weights = torch.tensor(
        [
            [0.4, 0.1, 0.2, 0.3],
            [0.1, 0.2, 0.3, 0.4],
            [0.5, 0.0, 0.5, 0.0],
            [0.25, 0.25, 0.25, 0.25],
        ]
    )
    labels, assignment = word_units(
        ["[CLS]", "un", "##bel", "[SEP]"], [None, 0, 0, None], ["unbel"]
    )
    assert labels == ["[CLS]", "unbel", "[SEP]"]
    expected = torch.tensor(
        [
            [0.4, 0.1 + 0.2, 0.3],
            [(0.1 + 0.5) / 2, (0.2 + 0.3 + 0.0 + 0.5) / 2, (0.4 + 0.0) / 2],
            [0.25, 0.5, 0.25],
        ]
    )
    result = to_words(weights, assignment)
    torch.testing.assert_close(result, expected)
    torch.testing.assert_close(result.sum(-1), torch.ones(3))
    stacked = to_words(weights.expand(2, 3, 4, 4), assignment)  # leading dims pass through
    torch.testing.assert_close(stacked, expected.expand(2, 3, 3, 3))


def test_word_spans_cover_each_words_pieces_and_skip_special_tokens() -> None:
    # "[CLS] un ##bel hi [SEP]" over the text "unbel hi".
    word_ids = [None, 0, 0, 1, None]
    offsets = [(0, 0), (0, 2), (2, 5), (6, 8), (0, 0)]
    assert word_spans(word_ids, offsets) == {0: (0, 5), 1: (6, 8)}
    assert word_spans(word_ids, torch.tensor(offsets)) == {0: (0, 5), 1: (6, 8)}  # as tensors
