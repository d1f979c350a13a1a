"""Logging one gate run's evidence to MLflow: metrics, tables, figures, the HTML report."""

from __future__ import annotations

import io
import json
import math
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from pipelines.errors import GateError
from pipelines.tracking.config import EXPERIMENT, TAG_MODEL_NAME

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

__all__ = ["TIGHT", "EvidenceLoggingError", "evidence_logging", "log_gate_evidence"]

TIGHT = {"bbox_inches": "tight", "pad_inches": 0.1}
"""How review figures are saved: to their drawn content, titles included."""


class EvidenceLoggingError(GateError, RuntimeError):
    """MLflow failed while the evidence was being logged (a server that went away, a full disk)."""


def log_gate_evidence(
    *,
    model_name: str,
    model_version: str,
    params: dict[str, Any],
    metrics: dict[str, float],
    series: dict[str, list[float]],
    tables: dict[str, pd.DataFrame | str],
    documents: dict[str, Any],
    figures: dict[str, Callable[[], Figure] | bytes],
    pages: dict[str, str] | None = None,
    report: Callable[[dict[str, bytes]], str] | None = None,
    model_id: str | None = None,
) -> str:
    """Log one gate run's evidence to a new MLflow run; return its run id.

    The run is in the ``xai-gate`` experiment and tagged with the model
    version it audited. ``series`` are metrics with steps 1..k (a curve in the
    UI), ``tables`` CSV artifacts (frames, or CSV text as a judging worker wrote it),
    ``documents`` JSON artifacts, ``figures`` PNG artifacts (PNG bytes, or builders
    drawn only inside the run, each closed after logging), ``pages``
    self-contained HTML views. ``report`` turns the drawn PNGs into
    ``xai/report.html`` (figures inline, so MLflow's sandboxed viewer shows it).
    ``model_id`` (the version's MLflow 3 logged model) links the run to the model as
    an evaluation run is linked: the model is the run's input and the metrics are
    logged against it, so they show on the model's page beside its training metrics.
    """
    with evidence_logging():
        import matplotlib.pyplot as plt
        import mlflow

        from pipelines.report.html import compact_png

        mlflow.set_experiment(EXPERIMENT)
        run_name = f"gate-{model_name}-v{model_version}"
        tags = {TAG_MODEL_NAME: model_name, "xai_gate.model_version": model_version}
        with mlflow.start_run(run_name=run_name, tags=tags) as run:
            mlflow.log_params({k: str(v) for k, v in params.items()})
            model_id = model_id if model_id and _logged_model_exists(model_id) else None
            if model_id:
                from mlflow.entities import LoggedModelInput

                mlflow.MlflowClient().log_inputs(
                    run.info.run_id, models=[LoggedModelInput(model_id)]
                )
            finite = {k: v for k, v in metrics.items() if math.isfinite(v)}
            mlflow.log_metrics(finite, model_id=model_id)
            undefined = sorted(k for k, v in metrics.items() if not math.isfinite(v))
            if undefined:  # MLflow stores no NaN; say which numbers had no defined value
                mlflow.set_tag("xai_gate.undefined_metrics", ", ".join(undefined)[:4900])
            for key, values in series.items():
                for step, value in enumerate(values, start=1):
                    if math.isfinite(value):
                        mlflow.log_metric(key, value, step=step, model_id=model_id)
            for path, table in tables.items():
                csv = table if isinstance(table, str) else table.to_csv(index=False)
                mlflow.log_text(csv, path)
            for path, document in documents.items():
                mlflow.log_text(json.dumps(document, indent=2, default=str), path)
            for path, page in (pages or {}).items():
                mlflow.log_text(page, path)
            images: dict[str, bytes] = {}
            with tempfile.TemporaryDirectory(prefix="xai-gate-figures-") as folder:
                for path, draw in figures.items():
                    # Drawn once (drawing is most of a small model's gate): the same PNG is
                    # the artifact, and, with a palette, the report's copy.
                    png = draw if isinstance(draw, bytes) else _drawn(draw, plt)
                    staged = Path(folder, path)
                    staged.parent.mkdir(parents=True, exist_ok=True)
                    staged.write_bytes(png)
                    folder_in_run = str(PurePosixPath(path).parent)
                    mlflow.log_artifact(
                        str(staged), None if folder_in_run == "." else folder_in_run
                    )
                    images[path] = compact_png(png)
            if report is not None:
                mlflow.log_text(report(images), "xai/report.html")
            return run.info.run_id


def _drawn(draw: Callable[[], Figure], plt: Any) -> bytes:
    fig = draw()
    try:
        buffer = io.BytesIO()
        # Tight bounds: a long suptitle is never cut off at the figure's edge.
        fig.savefig(buffer, format="png", dpi=100, **TIGHT)
    finally:
        plt.close(fig)
    return buffer.getvalue()


def _logged_model_exists(model_id: str) -> bool:
    """Whether the version's logged model is still there (it may have been deleted; the
    evidence is then logged to the run alone)."""
    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        mlflow.MlflowClient().get_logged_model(model_id)
    except MlflowException:
        return False
    return True


@contextmanager
def evidence_logging() -> Iterator[None]:
    """MLflow failures while evidence is written become one ``EvidenceLoggingError`` line."""
    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        yield
    except (MlflowException, OSError) as exc:  # requests' connection errors are OSErrors
        from pipelines.tracking.config import store_full

        full = store_full(exc, mlflow.get_tracking_uri())
        if full is not None:
            raise EvidenceLoggingError(f"could not log the evidence: {full}") from None
        raise EvidenceLoggingError(
            f"could not log the evidence to MLflow at {mlflow.get_tracking_uri()}: "
            f"{_first_line(exc)}"
        ) from None


def _first_line(error: BaseException) -> str:
    text = getattr(error, "message", None) or str(error)
    return text.strip().splitlines()[0][:300] if text.strip() else type(error).__name__
