"""MLflow's ``pt2`` format (``torch.export``, its default): the module hierarchy restored.

``mlflow.pytorch.load_model`` returns ``ExportedProgram.module()``, a graph in
which every layer is inlined, so no forward hook can fire. The archive itself
keeps the ``ExportedProgram``, and ``torch.export.unflatten`` rebuilds the
original hierarchy from it (``conv1``, ``layer4``, ``encoder.layers.…``):
hooks fire, gradients flow and the outputs equal the eager model's. Nothing
in the archive is unpickled unless MLflow itself would allow it: where MLflow
refuses pickle (its default outside Databricks), the archive is checked to
be pickle-free first, as ``mlflow.pytorch.load_model`` does.

An export fixes the shapes it was not told were dynamic: MLflow makes the
batch dynamic only for an input example of two or more rows (and a signature
that leaves the batch as -1). A static batch of one is run one input at a
time. A static batch of B > 1 is run B inputs at a time: a shorter batch is
padded up to B with copies of its last input and the outputs are cut back to
the real rows (``StaticBatchModule``); the explanation methods cut their
hooked captures the same way. An image size other than the exported one is
refused with both sizes named.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.export.unflatten import UnflattenedModule
from torch.utils._pytree import tree_map

from pipelines.errors import GateError

__all__ = [
    "EXPORTED_FILE",
    "ExportedModel",
    "StaticBatchModule",
    "exported_archive",
    "load_exported",
]

EXPORTED_FILE = "model.pt2"


class ExportError(GateError, RuntimeError):
    """The pt2 archive cannot be gated as it is; the message says why and what to do."""


@dataclass(frozen=True)
class ExportedModel:
    module: nn.Module
    """The unflattened module: the original hierarchy, hookable."""
    batch: int | None
    """The exported batch size when it is static, else None."""
    size: tuple[int, int] | None
    """The exported (H, W) when static, for image inputs."""


class StaticBatchModule(UnflattenedModule):
    """An unflattened export whose batch is fixed at ``static_batch`` rows.

    A batch of fewer rows is padded with copies of its last row (real values:
    nothing a normalisation or a NaN check could trip on) and every output is
    cut back to the real rows, so the caller never sees the padding. The layers
    inside do see it: hooks that keep per-row tensors cut them to the input's
    rows. A longer batch runs in chunks of ``static_batch``.
    """

    static_batch: int

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        inputs = args[0] if args else None
        if not isinstance(inputs, Tensor) or inputs.shape[0] in (0, self.static_batch):
            return super().forward(*args, **kwargs)  # as it is (no rows: nothing to copy)
        rows = inputs.shape[0]
        if rows > self.static_batch:
            chunks = [
                self.forward(chunk, *args[1:], **kwargs)
                for chunk in inputs.split(self.static_batch)
            ]
            return tree_map(lambda *parts: torch.cat(parts), *chunks)
        padding = inputs[-1:].expand(self.static_batch - rows, *inputs.shape[1:])
        output = super().forward(torch.cat([inputs, padding]), *args[1:], **kwargs)
        return tree_map(lambda value: _real_rows(value, rows, self.static_batch), output)


def _real_rows(value: object, rows: int, padded: int) -> object:
    """A batched output without its padding rows; anything else as it is."""
    if isinstance(value, Tensor) and value.ndim > 0 and value.shape[0] == padded:
        return value[:rows]
    return value


def exported_archive(local: Path, flavor: dict[str, object]) -> Path | None:
    """The ``model.pt2`` of a downloaded ``mlflow.pytorch`` model, or None (pickle format)."""
    archive = Path(local) / str(flavor.get("model_data", "data")) / EXPORTED_FILE
    return archive if archive.is_file() else None


def load_exported(archive: Path, uri: str) -> ExportedModel:
    """Load the archive as an ``ExportedProgram`` and unflatten it, pickle-checked."""
    _check_pickle_free(archive, uri)
    try:
        program = torch.export.load(str(archive))
        module = torch.export.unflatten(program)
    except Exception as exc:  # torch raises many kinds here; each says what broke
        raise ExportError(
            f"{uri}: cannot load its pt2 archive with torch.export ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0][:300] if str(exc) else ''})"
        ) from None
    _drop_fake_tensors(module)
    shapes = _user_input_shapes(program)
    if len(shapes) != 1:
        raise ExportError(
            f"{uri}: its pt2 export takes {len(shapes)} inputs; the gate explains models that "
            "take one image batch (log text models with their tokenizer in the pickle format "
            "or with mlflow.transformers)"
        )
    shape = shapes[0]
    batch = shape[0] if shape else None
    if batch is not None and batch > 1:
        module.__class__ = StaticBatchModule  # the same module, padded up to its batch
        module.static_batch = batch
    size = (shape[2], shape[3]) if len(shape) == 4 and None not in shape[2:] else None
    return ExportedModel(module=module, batch=batch, size=size)  # type: ignore[arg-type]


def _drop_fake_tensors(module: nn.Module) -> None:
    """Remove the tracing-time fake tensors from the graphs' node metadata.

    They describe shapes for the compiler, running does not read them, and a
    symbolic one (a dynamic batch) cannot be deep-copied, which the sanity
    check's randomised twin needs.
    """
    for part in module.modules():
        graph = getattr(part, "graph", None)
        for node in getattr(graph, "nodes", ()):
            for key in ("val", "example_value", "tensor_meta"):
                node.meta.pop(key, None)


def _user_input_shapes(program: object) -> list[tuple[int | None, ...]]:
    """Each user input's shape: ints where static, None where dynamic."""
    from torch.export.graph_signature import InputKind

    names = [
        spec.arg.name
        for spec in program.graph_signature.input_specs  # type: ignore[attr-defined]
        if spec.kind == InputKind.USER_INPUT
    ]
    shapes = []
    for node in program.graph.nodes:  # type: ignore[attr-defined]
        if node.op == "placeholder" and node.name in names:
            value = node.meta.get("val")
            dims = getattr(value, "shape", ())
            shapes.append(tuple(d if isinstance(d, int) else None for d in dims))
    return shapes


def _check_pickle_free(archive: Path, uri: str) -> None:
    """Refuse what MLflow would refuse: a pt2 archive with pickle payloads, when pickle is off.

    Fails closed: with pickle off and no MLflow validator to check the archive, it is refused.
    """
    from mlflow.exceptions import MlflowException

    if pickle_loading_allowed():
        return
    try:
        from mlflow.pytorch import _validate_pt2_archive_is_pickle_free
    except ImportError:
        raise ExportError(
            f"{uri}: pickle loading is off and this MLflow cannot check a pt2 archive for "
            "pickle payloads; the archive is refused"
        ) from None
    try:
        _validate_pt2_archive_is_pickle_free(str(archive))
    except MlflowException as exc:
        raise ExportError(f"{uri}: {exc.message}") from None


PICKLE_VARIABLES = ("MLFLOW_ALLOW_MODEL_CODE_EXECUTION", "MLFLOW_ALLOW_PICKLE_DESERIALIZATION")
"""MLflow's switches for code from a model (3.18 renamed the first; the second still counts)."""


def pickle_loading_allowed() -> bool:
    """Whether MLflow would unpickle a model here: its own answer where it has one (3.17 and
    3.18 name the function differently), else the environment read as MLflow reads it."""
    for module_name, function in (
        ("mlflow.utils.model_utils", "_is_pickle_loading_allowed"),
        ("mlflow.pytorch", "_is_pickle_deserialization_allowed"),
    ):
        try:
            module = __import__(module_name, fromlist=[function])
            return bool(getattr(module, function)())
        except (ImportError, AttributeError):
            continue
    return all(
        os.environ.get(name, "true").strip().lower() in ("true", "1") for name in PICKLE_VARIABLES
    )
