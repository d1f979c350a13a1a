"""MLflow side of the gate: load the model version, log the evidence.

MLflow is imported inside the functions that need it, so importing the
package (and the CLI's ``--help``) stays fast. The tracking URI is whatever
MLflow resolves (``MLFLOW_TRACKING_URI`` first), defaulting to
``sqlite:///mlflow.db`` rather than MLflow's own default.
"""

from __future__ import annotations

import io
import json
import math
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import nn

from pipelines.errors import GateError

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

__all__ = [
    "DEFAULT_TRACKING_URI",
    "EXPERIMENT",
    "TOKENIZER_FILES",
    "EvidenceLoggingError",
    "LoadedModel",
    "ModelLoadError",
    "TrackingUnreachable",
    "close_orphaned_runs",
    "configure_tracking",
    "evidence_logging",
    "load_model_uri",
    "load_model_version",
    "log_gate_evidence",
    "weights_only_metadata",
]

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
EXPERIMENT = "xai-gate"
TAG_MODEL_NAME = "xai_gate.model_name"


class ModelLoadError(GateError, RuntimeError):
    """The model version cannot be found or loaded as a torch module."""


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


HTTP_LIMITS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "20",
}
"""Bounded retries for a tracking server: MLflow's defaults wait minutes before failing."""


class TrackingUnreachable(GateError, ConnectionError):
    """The MLflow tracking server did not answer within the bounded retries."""


class EvidenceLoggingError(GateError, RuntimeError):
    """MLflow failed while the evidence was being logged (a server that went away, a full disk)."""


def configure_tracking(tracking_uri: str | None = None, *, check: bool = False) -> str:
    """Point MLflow at ``tracking_uri``, ``$MLFLOW_TRACKING_URI`` or the sqlite default.

    For an HTTP server, retries are bounded (``HTTP_LIMITS``, unless the caller
    set them) and ``check=True`` asks it once, so an unreachable server is a
    clear error within about a minute instead of a hang or a deep traceback.
    """
    import mlflow

    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI
    mlflow.set_tracking_uri(uri)
    if uri.startswith(("http://", "https://")):
        for key, value in HTTP_LIMITS.items():
            os.environ.setdefault(key, value)
        if check:
            from mlflow.exceptions import MlflowException

            try:
                mlflow.MlflowClient(uri).search_experiments(max_results=1)
            except (MlflowException, OSError) as exc:
                raise TrackingUnreachable(
                    f"cannot reach the MLflow tracking server at {uri}: "
                    f"{str(exc).splitlines()[0][:300]}"
                ) from None
    return uri


def load_model_version(name: str, version: str | int) -> LoadedModel:
    """Load ``models:/name/version`` as a torch module, with its class names if logged.

    ``mlflow.pytorch``'s ``pickle`` format gives back the original module. Its
    default ``pt2`` format gives a ``torch.export`` graph in which every layer
    is inlined: forward hooks never fire, so such versions are refused with a
    message saying how to re-log them.
    """
    import mlflow
    from mlflow.exceptions import MlflowException

    version = str(version)
    try:
        model_version = mlflow.MlflowClient().get_model_version(name, version)
    except MlflowException as exc:
        raise ModelLoadError(f"cannot load models:/{name}/{version}: {exc.message}") from None
    loaded = load_model_uri(f"models:/{name}/{version}")
    return LoadedModel(
        module=loaded.module,
        name=name,
        version=version,
        uri=loaded.uri,
        class_names=loaded.class_names,
        source_run_id=model_version.run_id,
        tokenizer=loaded.tokenizer,
    )


def load_model_uri(uri: str) -> LoadedModel:
    """Load any ``mlflow.pytorch`` model URI (a version, ``models:/<model_id>``, a run path).

    With metadata ``architecture`` (``"package.module:Factory"``) and a
    ``state_dict.pt`` among its ``extra_files``, the module is built from that
    installed code and its weights read with ``torch.load(weights_only=True)``:
    nothing from the registry is unpickled. Otherwise MLflow's pytorch flavour
    loads the pickled module, so gate only models from registries you trust.
    """
    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        info = mlflow.models.get_model_info(uri)
    except MlflowException as exc:
        raise ModelLoadError(f"cannot load {uri}: {exc.message}") from None
    metadata = info.metadata or {}
    if metadata.get("architecture"):
        module = _load_weights_only(uri, metadata)
    else:
        try:
            module = mlflow.pytorch.load_model(uri, map_location="cpu")
        except MlflowException as exc:
            raise ModelLoadError(f"cannot load {uri}: {exc.message}") from None
    if not isinstance(module, nn.Module):
        raise ModelLoadError(f"{uri} is a {type(module).__name__}, not a torch.nn.Module")
    if _has_no_hookable_layers(module):
        raise ModelLoadError(
            f"{uri} was logged in MLflow's pt2 format (torch.export): its layers are inlined "
            "into one graph, so no layer can be hooked for Grad-CAM. Log the model with "
            "mlflow.pytorch.log_model(..., serialization_format='pickle') to gate it."
        )
    names = metadata.get("class_names")
    tokenizer = _load_tokenizer(uri) if metadata.get("modality") == "text" else None
    return LoadedModel(
        module=module,
        name=uri,
        version="",
        uri=uri,
        class_names=tuple(str(n) for n in names) if names else None,
        source_run_id=info.run_id,
        tokenizer=tokenizer,
    )


STATE_DICT_FILE = "state_dict.pt"
TIGHT = {"bbox_inches": "tight", "pad_inches": 0.1}
"""How review figures are saved: to their drawn content, titles included."""


def weights_only_metadata(architecture: str, **init_kwargs: Any) -> dict[str, Any]:
    """Metadata for ``log_model`` so the gate rebuilds the model without unpickling it.

    Log the weights beside it: ``torch.save(model.state_dict(), "state_dict.pt")``
    and ``extra_files=["state_dict.pt"]``.
    """
    return {"architecture": architecture, "init_kwargs": init_kwargs}


def _load_weights_only(uri: str, metadata: dict[str, Any]) -> nn.Module:
    import importlib

    import mlflow
    import torch
    from mlflow.exceptions import MlflowException

    reference = str(metadata["architecture"])
    module_name, _, attribute = reference.partition(":")
    try:
        factory = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError, ValueError):
        raise ModelLoadError(
            f"{uri}: architecture {reference!r} is not importable here "
            "(expected 'package.module:ClassOrFactory' of an installed package)"
        ) from None
    try:
        folder = mlflow.artifacts.download_artifacts(artifact_uri=f"{uri}/extra_files")
    except (MlflowException, OSError):
        raise ModelLoadError(
            f"{uri}: metadata names an architecture but extra_files has no {STATE_DICT_FILE}"
        ) from None
    weights = Path(folder) / STATE_DICT_FILE
    if not weights.is_file():
        raise ModelLoadError(f"{uri}: extra_files has no {STATE_DICT_FILE}")
    module = factory(**dict(metadata.get("init_kwargs") or {}))
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
        module.load_state_dict(state)
    except (RuntimeError, OSError, ValueError) as exc:
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


def _load_tokenizer(uri: str) -> Any:
    """The tokenizer saved in the model's ``extra_files`` (metadata ``modality: text``)."""
    import mlflow
    from mlflow.exceptions import MlflowException
    from transformers import AutoTokenizer

    try:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=f"{uri}/extra_files"))
    except (MlflowException, OSError) as exc:
        raise ModelLoadError(
            f"{uri} is a text model but has no tokenizer: log it with "
            f"mlflow.pytorch.log_model(..., extra_files=[<{', '.join(TOKENIZER_FILES)}>]) "
            f"({exc})"
        ) from None
    try:
        return AutoTokenizer.from_pretrained(str(local), local_files_only=True)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"{uri}: cannot load its tokenizer from extra_files: {exc}") from None


def log_gate_evidence(
    *,
    model_name: str,
    model_version: str,
    params: dict[str, Any],
    metrics: dict[str, float],
    series: dict[str, list[float]],
    tables: dict[str, pd.DataFrame],
    documents: dict[str, Any],
    figures: dict[str, Callable[[], Figure]],
    pages: dict[str, str] | None = None,
    report: Callable[[dict[str, bytes]], str] | None = None,
) -> str:
    """Log one gate run's evidence to a new MLflow run; return its run id.

    The run is in the ``xai-gate`` experiment and tagged with the model
    version it audited. ``series`` are metrics with steps 1..k (a curve in the
    UI), ``tables`` CSV artifacts, ``documents`` JSON artifacts, ``figures``
    PNG artifacts drawn only inside the run, each closed after logging, ``pages``
    self-contained HTML views. ``report`` turns the drawn PNGs into
    ``xai/report.html`` (figures inline, so MLflow's sandboxed viewer shows it).
    """
    with evidence_logging():
        return _log_evidence_run(
            model_name, model_version, params, metrics, series, tables, documents, figures,
            pages, report,
        )  # fmt: skip


@contextmanager
def evidence_logging() -> Iterator[None]:
    """MLflow failures while evidence is written become one ``EvidenceLoggingError`` line."""
    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        yield
    except (MlflowException, OSError) as exc:  # requests' connection errors are OSErrors
        raise EvidenceLoggingError(
            f"could not log the evidence to MLflow at {mlflow.get_tracking_uri()}: "
            f"{_first_line(exc)}"
        ) from None


def _first_line(error: BaseException) -> str:
    text = getattr(error, "message", None) or str(error)
    return text.strip().splitlines()[0][:300] if text.strip() else type(error).__name__


def _log_evidence_run(
    model_name: str,
    model_version: str,
    params: dict[str, Any],
    metrics: dict[str, float],
    series: dict[str, list[float]],
    tables: dict[str, pd.DataFrame],
    documents: dict[str, Any],
    figures: dict[str, Callable[[], Figure]],
    pages: dict[str, str] | None,
    report: Callable[[dict[str, bytes]], str] | None,
) -> str:
    import matplotlib.pyplot as plt
    import mlflow

    from pipelines.report import compact_png

    mlflow.set_experiment(EXPERIMENT)
    run_name = f"gate-{model_name}-v{model_version}"
    tags = {TAG_MODEL_NAME: model_name, "xai_gate.model_version": model_version}
    with mlflow.start_run(run_name=run_name, tags=tags) as run:
        mlflow.log_params({k: str(v) for k, v in params.items()})
        mlflow.log_metrics({k: v for k, v in metrics.items() if math.isfinite(v)})
        undefined = sorted(k for k, v in metrics.items() if not math.isfinite(v))
        if undefined:  # MLflow stores no NaN; say which numbers had no defined value
            mlflow.set_tag("xai_gate.undefined_metrics", ", ".join(undefined)[:4900])
        for key, values in series.items():
            for step, value in enumerate(values, start=1):
                if math.isfinite(value):
                    mlflow.log_metric(key, value, step=step)
        for path, table in tables.items():
            mlflow.log_text(table.to_csv(index=False), path)
        for path, document in documents.items():
            mlflow.log_text(json.dumps(document, indent=2, default=str), path)
        for path, page in (pages or {}).items():
            mlflow.log_text(page, path)
        images: dict[str, bytes] = {}
        for path, draw in figures.items():
            fig = draw()
            try:
                buffer = io.BytesIO()
                # Tight bounds: a long suptitle is never cut off at the figure's edge.
                fig.savefig(buffer, format="png", dpi=100, **TIGHT)
                images[path] = compact_png(buffer.getvalue())
                mlflow.log_figure(fig, path, save_kwargs=TIGHT)
            finally:
                plt.close(fig)
        if report is not None:
            mlflow.log_text(report(images), "xai/report.html")
        return run.info.run_id


def close_orphaned_runs(model_name: str, model_version: str) -> list[str]:
    """Mark this version's evidence runs still ``RUNNING`` as ``FAILED``; return their ids.

    Call it holding the version's gate lock: then no live gate owns such a run,
    and it was left by a gate that died (killed, or its server went away).
    """
    from mlflow import MlflowClient

    client = MlflowClient()
    experiment = client.get_experiment_by_name(EXPERIMENT)
    if experiment is None:
        return []
    runs = client.search_runs(
        [experiment.experiment_id],
        filter_string=(
            f"tags.`xai_gate.model_version` = '{int(model_version)}' "
            "and attributes.status = 'RUNNING'"
        ),
    )
    orphans = [r.info.run_id for r in runs if r.data.tags.get(TAG_MODEL_NAME) == model_name]
    for run_id in orphans:
        client.set_tag(run_id, "xai_gate.orphaned", "left unfinished by a gate that died")
        client.set_terminated(run_id, status="FAILED")
    return orphans


def _has_no_hookable_layers(module: nn.Module) -> bool:
    """True for graphs (torch.export) that call no submodule, so hooks cannot fire."""
    import torch.fx

    if not isinstance(module, torch.fx.GraphModule):
        return False
    called = [node.target for node in module.graph.nodes if node.op == "call_module"]
    # torch.export leaves only parameter-free helpers (its guard function) as calls.
    return not any(
        next(module.get_submodule(str(target)).parameters(), None) is not None for target in called
    )
