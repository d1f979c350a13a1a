"""Where the gate's MLflow runs go: the tracking URI, the experiment, bounded HTTP retries.

The tracking URI is whatever MLflow resolves (``MLFLOW_TRACKING_URI`` first),
defaulting to ``sqlite:///mlflow.db`` rather than MLflow's own default. MLflow
is imported inside the function, so importing this module stays cheap.
"""

from __future__ import annotations

import os

from pipelines.errors import GateError

__all__ = [
    "DEFAULT_TRACKING_URI",
    "EXPERIMENT",
    "HTTP_LIMITS",
    "TAG_MODEL_NAME",
    "TrackingUnreachable",
    "configure_tracking",
]

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
EXPERIMENT = "xai-gate"
TAG_MODEL_NAME = "xai_gate.model_name"


HTTP_LIMITS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "20",
}
"""Bounded retries for a tracking server: MLflow's defaults wait minutes before failing."""


class TrackingUnreachable(GateError, ConnectionError):
    """The MLflow tracking server did not answer within the bounded retries."""


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
