"""Loading a registered model version as a torch module, with its class names and tokenizer.

MLflow is imported inside the functions that need it, so importing this module
stays cheap.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from torch import nn

from pipelines.errors import ModelLoadError
from pipelines.tracking.exported import exported_archive, load_exported

__all__ = [
    "STATE_DICT_FILE",
    "TOKENIZER_FILES",
    "FetchedModel",
    "LoadedModel",
    "ModelLoadError",
    "fetch_model_uri",
    "fetch_model_version",
    "load_fetched",
    "load_model_uri",
    "load_model_version",
    "weights_only_metadata",
]


@dataclass(frozen=True)
class LoadedModel:
    module: nn.Module
    name: str
    version: str
    uri: str
    class_names: tuple[str, ...] | None
    source_run_id: str | None
    tokenizer: Any = None
    """The text model's tokenizer, logged beside it; None for image models."""
    max_batch: int | None = None
    """The inputs per forward pass a pt2 export with a static batch was fixed to; None when
    any number works."""
    input_size: tuple[int, int] | None = None
    """(H, W) a pt2 export was fixed to; None when any size works."""
    model_id: str | None = None
    """The version's logged model (MLflow 3), whose page shows the gate's metrics; None for a
    version registered from a run path without one."""
    digest: str = ""
    """SHA-256 of every file of the model as it was loaded (``model_digest``): the verdict is
    signed over these bytes, not over the version's name."""
    source: str = ""
    """The version's source as the registry holds it (``models:/m-...`` or a run path)."""
    created: str = ""
    """The version's creation time (ms since the epoch): with the source, which version
    this is, so a model deleted and registered again is not the one that was gated."""


@dataclass(frozen=True)
class FetchedModel:
    """A model's files on local disk, hashed, with what the registry says of the version.

    Nothing of it has run: fetching reads bytes and the registry's records only, so
    the process that holds the signing key may fetch, and the judge loads from here.
    """

    uri: str
    folder: Path
    digest: str
    """SHA-256 of every file under ``folder`` (``pipelines.verdict.model_digest``)."""
    name: str = ""
    version: str = ""
    source_run_id: str | None = None
    model_id: str | None = None
    source: str = ""
    """The version's source as the registry holds it (``models:/m-...`` or a run path)."""
    created: str = ""
    """The version's creation time (ms since the epoch)."""


def fetch_model_version(name: str, version: str | int) -> FetchedModel:
    """Download ``models:/name/version`` once and hash it; the version's identity with it."""
    import mlflow
    from mlflow.exceptions import MlflowException

    version = str(version)
    try:
        model_version = mlflow.MlflowClient().get_model_version(name, version)
    except MlflowException as exc:
        raise ModelLoadError(f"cannot load models:/{name}/{version}: {exc.message}") from None
    fetched = fetch_model_uri(f"models:/{name}/{version}")
    return replace(
        fetched,
        name=name,
        version=version,
        source_run_id=model_version.run_id,
        model_id=logged_model_id(model_version),
        source=str(model_version.source or ""),
        created=str(model_version.creation_timestamp or ""),
    )


def fetch_model_uri(uri: str) -> FetchedModel:
    """Download any model URI's files once into a new folder and hash them."""
    import mlflow
    from mlflow.exceptions import MlflowException

    from pipelines.verdict.model_digest import model_digest

    try:
        folder = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri))
    except MlflowException as exc:
        raise ModelLoadError(f"cannot load {uri}: {exc.message}") from None
    except OSError as exc:
        raise ModelLoadError(f"cannot download {uri}: {exc}") from None
    if not (folder / "MLmodel").is_file():
        raise ModelLoadError(f"{uri} is not an MLflow model: it has no MLmodel file")
    return FetchedModel(uri=uri, folder=folder, digest=model_digest(folder), name=uri)


def load_model_version(
    name: str, version: str | int, *, builders: tuple[str, ...] = ()
) -> LoadedModel:
    """Load ``models:/name/version`` as a torch module, with its class names if logged.

    ``mlflow.pytorch``'s ``pickle`` format gives back the original module; its
    default ``pt2`` format is loaded as its ``ExportedProgram`` and unflattened
    (``pipelines.tracking.exported``), so its layers can be hooked and
    nothing is unpickled.
    """
    return load_fetched(fetch_model_version(name, version), builders=builders)


def logged_model_id(model_version: Any) -> str | None:
    """The version's MLflow 3 logged model: its ``model_id``, which the client often leaves
    empty, else the id in a ``models:/m-...`` source; None for a version from a run path."""
    model_id = getattr(model_version, "model_id", None)
    if model_id:
        return str(model_id)
    source = str(getattr(model_version, "source", "") or "")
    match = re.fullmatch(r"models:/(m-[0-9a-f]+)", source)
    return match.group(1) if match else None


def load_model_uri(uri: str, *, builders: tuple[str, ...] = ()) -> LoadedModel:
    """Load any ``mlflow.pytorch`` model URI (a version, ``models:/<model_id>``, a run path)."""
    return load_fetched(fetch_model_uri(uri), builders=builders)


def load_fetched(fetched: FetchedModel, *, builders: tuple[str, ...] = ()) -> LoadedModel:
    """The fetched files as a torch module: this runs the model's code where it has any.

    The module is loaded from the copy that was hashed, so ``LoadedModel.digest``
    names the bytes that were judged.

    With metadata ``architecture`` (an allowed builder, ``pipelines.tracking.builders``)
    and a ``state_dict.pt`` among its ``extra_files``, the module is built by that
    builder and its weights read with ``torch.load(weights_only=True)``:
    nothing from the registry is unpickled and no code it names runs. A ``pt2``
    model (MLflow 3's default) is unflattened from its ``ExportedProgram``,
    pickle-checked as MLflow checks it. Otherwise MLflow's pytorch flavour loads
    the pickled module, which runs whatever code the pickle holds.
    """
    import mlflow
    from mlflow.exceptions import MlflowException
    from mlflow.models import Model

    uri, local = fetched.uri, fetched.folder
    try:
        info = Model.load(str(local / "MLmodel"))
    except MlflowException as exc:
        raise ModelLoadError(f"cannot load {uri}: {exc.message}") from None
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:  # garbled MLmodel
        raise ModelLoadError(f"cannot load {uri}: its MLmodel file is unreadable ({exc})") from None
    metadata = info.metadata or {}
    if not isinstance(metadata, dict):
        raise ModelLoadError(f"{uri}: its metadata is a {type(metadata).__name__}, not a mapping")
    flavors = info.flavors if isinstance(info.flavors, dict) else {}
    flavor = flavors.get("pytorch")
    if flavor is None and "transformers" in flavors:
        from pipelines.tracking.hf_flavour import load_transformers

        components = load_transformers(uri, str(local))
        return _identified(
            LoadedModel(
                module=components.module,
                name=uri,
                version="",
                uri=uri,
                class_names=components.class_names,
                source_run_id=info.run_id,
                tokenizer=components.tokenizer,
            ),
            fetched,
        )
    if flavor is None and not metadata.get("architecture"):
        logged = ", ".join(sorted(f for f in flavors if f != "python_function")) or "none"
        raise ModelLoadError(
            f"{uri} has no pytorch or transformers flavour (it was logged with: {logged}); "
            "log it with mlflow.pytorch.log_model or mlflow.transformers.log_model"
        )
    max_batch = input_size = None
    if metadata.get("architecture"):
        module = _load_weights_only(uri, local, metadata, builders)
    else:
        archive = exported_archive(local, flavor or {})
        if archive is not None:
            exported = load_exported(archive, uri)
            module, max_batch, input_size = exported.module, exported.batch, exported.size
        else:
            try:
                module = mlflow.pytorch.load_model(str(local), map_location="cpu")
            except MlflowException as exc:
                raise ModelLoadError(f"cannot load {uri}: {exc.message}") from None
    if not isinstance(module, nn.Module):
        raise ModelLoadError(f"{uri} is a {type(module).__name__}, not a torch.nn.Module")
    names = _class_names(uri, metadata)
    modality = metadata.get("modality", "image")
    if modality not in ("image", "text"):
        raise ModelLoadError(
            f"{uri}: metadata key 'modality' must be 'image' or 'text', got {modality!r:.100}"
        )
    tokenizer = _load_tokenizer(uri, local) if modality == "text" else None
    loaded = LoadedModel(
        module=module,
        name=uri,
        version="",
        uri=uri,
        class_names=names,
        source_run_id=info.run_id,
        tokenizer=tokenizer,
        max_batch=max_batch,
        input_size=input_size,
    )
    return _identified(loaded, fetched)


def _class_names(uri: str, metadata: dict[str, Any]) -> tuple[str, ...] | None:
    """Metadata ``class_names``: a list of at least two distinct names (strings or numbers)."""
    names = metadata.get("class_names")
    if names is None or names == []:
        return None
    if (
        not isinstance(names, list)
        or len(names) < 2
        or not all(isinstance(n, str | int | float) and not isinstance(n, bool) for n in names)
        or len({str(n) for n in names}) != len(names)
    ):
        raise ModelLoadError(
            f"{uri}: metadata key 'class_names' must be a list of two or more distinct names, "
            f"got {names!r:.100}"
        )
    return tuple(str(n) for n in names)


def _identified(loaded: LoadedModel, fetched: FetchedModel) -> LoadedModel:
    """The loaded module with the fetched version's name, identity and digest, a one-logit
    binary classifier read as two classes (``xai_checks.binary``)."""
    from xai_checks.binary import as_two_classes

    as_two_classes(loaded.module)
    if not fetched.version:
        return replace(loaded, digest=fetched.digest)
    return replace(
        loaded,
        name=fetched.name,
        version=fetched.version,
        source_run_id=fetched.source_run_id,
        model_id=fetched.model_id,
        source=fetched.source,
        created=fetched.created,
        digest=fetched.digest,
    )


STATE_DICT_FILE = "state_dict.pt"


def weights_only_metadata(architecture: str, **init_kwargs: Any) -> dict[str, Any]:
    """Metadata for ``log_model`` so the gate rebuilds the model without unpickling it.

    Log the weights beside it: ``torch.save(model.state_dict(), "state_dict.pt")``
    and ``extra_files=["state_dict.pt"]``.
    """
    return {"architecture": architecture, "init_kwargs": init_kwargs}


def _load_weights_only(
    uri: str, local: Path, metadata: dict[str, Any], builders: tuple[str, ...]
) -> nn.Module:
    """Build the module with an allowed builder, then read ``state_dict.pt`` as tensors only."""
    import torch

    from pipelines.tracking.builders import resolve_builder

    build = resolve_builder(
        metadata.get("architecture"), metadata.get("init_kwargs"), extra=builders, where=uri
    )
    weights = local / "extra_files" / STATE_DICT_FILE
    if not weights.is_file():
        raise ModelLoadError(
            f"{uri}: metadata names an architecture but extra_files has no {STATE_DICT_FILE}"
        )
    reference = metadata["architecture"]
    try:
        module = build()
    except (TypeError, ValueError) as exc:  # the registrant's init_kwargs do not fit
        raise ModelLoadError(
            f"{uri}: metadata key 'init_kwargs' does not fit {reference}: {exc}"
        ) from None
    if not isinstance(module, nn.Module):
        raise ModelLoadError(f"{uri}: {reference} built a {type(module).__name__}, not a module")
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
        module.load_state_dict(state)
    except (RuntimeError, OSError, ValueError, TypeError) as exc:
        raise ModelLoadError(
            f"{uri}: cannot load {STATE_DICT_FILE} into {reference}: {exc}"
        ) from None
    return module.eval()


TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
)
"""What a text model logs with ``extra_files`` so the gate can tokenise like training did."""


def _load_tokenizer(uri: str, model_folder: Path) -> Any:
    """The tokenizer saved in the model's ``extra_files`` (metadata ``modality: text``)."""
    from transformers import AutoTokenizer

    local = model_folder / "extra_files"
    if not local.is_dir():
        raise ModelLoadError(
            f"{uri} is a text model but has no tokenizer: log it with "
            f"mlflow.pytorch.log_model(..., extra_files=[<{', '.join(TOKENIZER_FILES)}>])"
        )
    try:
        return AutoTokenizer.from_pretrained(str(local), local_files_only=True)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"{uri}: cannot load its tokenizer from extra_files: {exc}") from None
