"""The pronoun probe: word-level attention from a pronoun to its candidate antecedents."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from xai_checks.attention import attention_maps
from xai_checks.errors import XAICheckError
from xai_checks.probes import pronoun_probe
from xai_checks.words import word_level

BALL_BOX = "The ball didn't fit in the box because it was too big."


def test_pronoun_probe_prefers_ball(
    minilm: tuple[nn.Module, PreTrainedTokenizerBase], minilm_ball_box: torch.Tensor
) -> None:
    model, tokenizer = minilm
    probe = pronoun_probe(model, tokenizer, BALL_BOX, "It", ["ball", "Box"])
    assert probe.weights.shape == (6, 12, 2)
    # Every weight equals transformers' own output_attentions ('ball', 'box', 'it' are one
    # token each, so word level is token level).
    torch.testing.assert_close(probe.weights, minilm_ball_box, atol=1e-6, rtol=0)
    average = probe.head_average
    assert average.shape == (6, 2)
    torch.testing.assert_close(average, minilm_ball_box.mean(1), atol=1e-6, rtol=0)
    # Read off MiniLM (tests/conftest.py pins its weights' SHA-256) and equal to the above.
    assert (average[3:, 0] > average[3:, 1]).all()
    assert average[5, 0].item() == pytest.approx(0.210, abs=2e-3)
    assert average[5, 1].item() == pytest.approx(0.071, abs=2e-3)
    assert probe.winner_by_layer()[3:] == ["ball"] * 3

    resolved = probe.resolved()
    assert len(resolved) == 6 * 12
    assert list(resolved.columns) == ["layer", "head", "candidate", "weight", "margin"]
    assert (resolved["margin"] >= 0).all()
    row = resolved[(resolved["layer"] == 5) & (resolved["head"] == 3)].iloc[0]
    best = probe.weights[5, 3].max().item()
    assert row.weight == pytest.approx(best)
    assert row.candidate == ["ball", "Box"][int(probe.weights[5, 3].argmax())]

    table = probe.table()
    assert len(table) == 6 * 12 * 2
    assert list(table.columns) == ["layer", "head", "candidate", "weight"]
    layer5 = table[table["layer"] == 5].groupby("candidate")["weight"].mean()
    assert layer5["ball"] == pytest.approx(average[5, 0].item(), abs=1e-6)


def test_pronoun_probe_single_candidate_and_last_occurrence(
    minilm: tuple[nn.Module, PreTrainedTokenizerBase],
) -> None:
    model, tokenizer = minilm
    # 'the' occurs twice before 'it': the key must be the second one (unit 8: '[CLS]' + 7 words).
    probe = pronoun_probe(model, tokenizer, BALL_BOX, "it", ["the"])
    labels, weights = word_level(attention_maps(model, tokenizer, [BALL_BOX]), 0)
    query = labels.index("it")
    assert labels[8] == "the" and labels[1] == "The"
    torch.testing.assert_close(probe.weights[..., 0], weights[:, :, query, 8])
    assert probe.resolved()["margin"].isna().all()


def test_unknown_words_are_refused(minilm: tuple[nn.Module, PreTrainedTokenizerBase]) -> None:
    model, tokenizer = minilm
    with pytest.raises(XAICheckError, match=r"'she'.*'ball'"):
        pronoun_probe(model, tokenizer, BALL_BOX, "she", ["ball", "box"])
    with pytest.raises(XAICheckError, match="'table'"):
        pronoun_probe(model, tokenizer, BALL_BOX, "it", ["ball", "table"])
    with pytest.raises(XAICheckError, match="before the pronoun"):
        pronoun_probe(model, tokenizer, BALL_BOX, "it", ["ball", "big"])
    with pytest.raises(XAICheckError, match="not a word"):
        pronoun_probe(model, tokenizer, BALL_BOX, "it", ["cls"])  # '[CLS]' is no word
