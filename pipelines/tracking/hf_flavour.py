"""MLflow's ``transformers`` flavour: a text classifier and its tokenizer, as users log them.

``mlflow.transformers.log_model({"model": ..., "tokenizer": ...},
task="text-classification")`` stores the Hugging Face model and tokenizer;
``load_model(..., return_type="components")`` gives them back. Class names
come from the model's ``id2label``; attention is switched to the eager
implementation (SDPA returns no attention weights), and a model that cannot
run eagerly is refused by name. Image classifiers logged this way
(``ViTForImageClassification`` with its image processor) are wrapped so they
take the audit set's [0, 1] images and apply the processor's own
normalisation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from pipelines.errors import GateError

__all__ = ["ProcessorNormalised", "TransformersComponents", "load_transformers"]


class TransformersFlavourError(GateError, RuntimeError):
    """The ``transformers`` model cannot be gated as logged; the message says why."""


class ProcessorNormalised(nn.Module):
    """An image classifier that takes [0, 1] images and normalises them as its processor does.

    The wrapped model stays a submodule (``model``), so its layers keep their
    names under ``model.`` for ``--target-layer``; logits come out as a tensor.
    """

    def __init__(self, model: nn.Module, mean: Tensor, std: Tensor) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("mean", mean.view(1, -1, 1, 1))
        self.register_buffer("std", std.view(1, -1, 1, 1))

    def forward(self, pixels: Tensor) -> Tensor:
        output = self.model(pixel_values=(pixels - self.mean) / self.std)
        return output.logits if hasattr(output, "logits") else output


@dataclass(frozen=True)
class TransformersComponents:
    """What the gate needs from the flavour: the module, the tokenizer, the class names."""

    module: nn.Module
    tokenizer: Any
    class_names: tuple[str, ...] | None


def load_transformers(uri: str, location: str | None = None) -> TransformersComponents:
    """Load a ``transformers``-flavour model as a torch module plus tokenizer or wrapper.

    ``location``: a local copy of ``uri`` to load from (the bytes the gate hashed);
    messages name ``uri``.
    """
    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        components = mlflow.transformers.load_model(location or uri, return_type="components")
    except (MlflowException, OSError, ValueError) as exc:
        raise TransformersFlavourError(
            f"cannot load {uri} with mlflow.transformers: {exc}"
        ) from None
    model = components.get("model")
    if not isinstance(model, nn.Module):
        raise TransformersFlavourError(
            f"{uri}: the transformers flavour holds a {type(model).__name__}, not a PyTorch "
            "model (TensorFlow and JAX models cannot be gated)"
        )
    _eager_attention(model, uri)
    model.eval()
    names = _class_names(model)
    tokenizer = components.get("tokenizer")
    if tokenizer is not None:
        return TransformersComponents(model, tokenizer, names)
    processor = components.get("image_processor") or components.get("feature_extractor")
    if processor is None:
        raise TransformersFlavourError(
            f"{uri}: logged without a tokenizer or an image processor; log "
            '{"model": ..., "tokenizer": ...} or {"model": ..., "image_processor": ...}'
        )
    mean = torch.tensor(getattr(processor, "image_mean", [0.0, 0.0, 0.0]), dtype=torch.float32)
    std = torch.tensor(getattr(processor, "image_std", [1.0, 1.0, 1.0]), dtype=torch.float32)
    if getattr(processor, "do_normalize", True) is False:
        mean, std = torch.zeros_like(mean), torch.ones_like(std)
    return TransformersComponents(ProcessorNormalised(model, mean, std).eval(), None, names)


def _eager_attention(model: nn.Module, uri: str) -> None:
    """Attention weights need the eager implementation; refuse a model that cannot run it."""
    setter = getattr(model, "set_attn_implementation", None)
    config = getattr(model, "config", None)
    current = getattr(config, "_attn_implementation", None)
    if current in (None, "eager"):
        return
    try:
        if callable(setter):
            setter("eager")
        else:
            config._attn_implementation = "eager"  # type: ignore[union-attr]
    except (ValueError, AttributeError, NotImplementedError) as exc:
        raise TransformersFlavourError(
            f"{uri}: {type(model).__name__} cannot run eager attention ({exc}); the gate needs "
            "attention weights, which SDPA and flash attention do not return"
        ) from None


def _class_names(model: nn.Module) -> tuple[str, ...] | None:
    """``config.id2label`` in index order, unless it is the generic LABEL_0, LABEL_1, ..."""
    mapping = getattr(getattr(model, "config", None), "id2label", None) or {}
    if not mapping:
        return None
    names = tuple(str(mapping[index]) for index in sorted(mapping, key=int))
    generic = all(name == f"LABEL_{i}" for i, name in enumerate(names))
    return None if generic else names
