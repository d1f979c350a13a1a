"""Fixtures shared by the xai_checks tests of text models."""

from __future__ import annotations

import pytest
from torch import nn
from transformers import PreTrainedTokenizerBase

from xai_checks.text_models import load_text_model


@pytest.fixture(scope="session")
def minilm() -> tuple[nn.Module, PreTrainedTokenizerBase]:
    """The packaged MiniLM with eager attention; tests copy it before changing it."""
    return load_text_model()
