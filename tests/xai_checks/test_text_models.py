"""Loading local text models: the packaged MiniLM, eager attention, offline, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from torch import nn
from transformers import BertModel, PreTrainedTokenizerBase

import xai_checks.text_models as text_models
from xai_checks.errors import XAICheckError
from xai_checks.text_models import load_text_model


def test_default_model_loads_bert_with_eager_attention(
    minilm: tuple[nn.Module, PreTrainedTokenizerBase],
) -> None:
    model, tokenizer = minilm
    assert isinstance(model, BertModel)
    assert model.config._attn_implementation == "eager"
    assert tokenizer.is_fast
    assert Path(text_models.DEFAULT_TEXT_MODEL) == text_models.default_text_model_path()
    assert (Path(text_models.DEFAULT_TEXT_MODEL) / "config.json").is_file()


def test_missing_model_path_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-model"
    with pytest.raises(XAICheckError, match="no-such-model"):
        load_text_model(missing)
