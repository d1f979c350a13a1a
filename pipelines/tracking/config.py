"""Where the gate's MLflow runs go: the tracking URI, the experiment, bounded HTTP retries.

The tracking URI is whatever MLflow resolves (``MLFLOW_TRACKING_URI`` first),
defaulting to ``sqlite:///mlflow.db`` rather than MLflow's own default. MLflow
is imported inside the function, so importing this module stays cheap.
"""

from __future__ import annotations

import errno
import logging
import os

from pipelines.errors import GateError

__all__ = [
    "DEFAULT_TRACKING_URI",
    "EXPERIMENT",
    "HTTP_LIMITS",
    "TAG_MODEL_NAME",
    "TrackingReadOnly",
    "TrackingUnreachable",
    "canonical_version",
    "check_writable",
    "configure_tracking",
    "store_identity",
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


class TrackingReadOnly(GateError, PermissionError):
    """The tracking store refuses writes: a gate could audit but never record its verdict."""


def store_identity(uri: str) -> str:
    """One name per store, however it is spelled: what locks and messages are keyed on.

    ``sqlite:///mlflow.db``, ``sqlite:////abs/path/mlflow.db`` and a symlink to
    the same file name one database; ``http://Host:80/`` and ``http://host``
    name one server.
    """
    from urllib.parse import urlsplit, urlunsplit

    scheme, _, rest = uri.partition(":")
    scheme = scheme.lower().removeprefix("xai-gate+")
    if scheme == "sqlite" and rest.startswith("///"):
        path = rest[3:].split("?", 1)[0]
        return f"sqlite:{os.path.realpath(path)}" if path not in {"", ":memory:"} else uri
    if scheme == "file" or (not rest.startswith("//") and scheme not in {"http", "https"}):
        path = rest.removeprefix("//") if scheme == "file" else uri
        return f"file:{os.path.realpath(path)}"
    parts = urlsplit(f"{scheme}:{rest}")
    host = (parts.hostname or "").lower()
    default = {"http": 80, "https": 443, "postgresql": 5432}.get(scheme)
    port = f":{parts.port}" if parts.port and parts.port != default else ""
    user = f"{parts.username}@" if parts.username else ""
    return urlunsplit((scheme, f"{user}{host}{port}", parts.path.rstrip("/"), parts.query, ""))


def check_writable(uri: str) -> None:
    """One harmless write (an experiment tag) before any compute, so a read-only store is an
    error naming it now, not eleven tracebacks after the whole audit."""
    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        experiment = mlflow.set_experiment(EXPERIMENT)
        mlflow.MlflowClient().set_experiment_tag(
            experiment.experiment_id, "xai_gate.writable_check", "ok"
        )
    except (MlflowException, OSError) as exc:
        full = store_full(exc, uri)
        if full is not None:
            raise full from None
        cause = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
        raise TrackingReadOnly(
            f"the MLflow tracking store {uri} refuses writes, so no verdict could be "
            f"recorded: {cause}"
        ) from None
    except Exception as exc:  # e.g. sqlalchemy's OperationalError: "readonly database"
        full = store_full(exc, uri)
        if full is not None:
            raise full from None
        if "readonly" not in str(exc).lower() and "read-only" not in str(exc).lower():
            raise
        raise TrackingReadOnly(
            f"the MLflow tracking store {uri} is read-only, so no verdict could be recorded"
        ) from None


class StoreFull(GateError):
    """The tracking database or the artifact store has no space left."""


_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
_DB_FULL = ("database or disk is full", "disk full", "no space left on device")


def _chain(error: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    while error is not None and error not in seen and len(seen) < 20:
        seen.append(error)
        error = error.__cause__ or error.__context__  # type: ignore[assignment]
    return seen


def store_full(error: BaseException, tracking_uri: str) -> StoreFull | None:
    """``error`` as one line naming the full store, or None if no store is full.

    A database that cannot grow (sqlite's "database or disk is full", PostgreSQL's
    "could not extend file") is the tracking store; a file that cannot be written
    (``ENOSPC``) while evidence is logged is the artifact store.
    """
    for cause in _chain(error):
        text = " ".join(str(cause).split()).lower()
        if "database or disk is full" in text or "could not extend file" in text:
            return StoreFull(
                f"the MLflow tracking database {tracking_uri} is full (no space left for "
                "its tables): free space there; no verdict could be recorded"
            )
    for cause in _chain(error):
        errno_of = getattr(cause, "errno", None)
        text = " ".join(str(cause).split()).lower()
        if errno_of in _DISK_FULL or any(part in text for part in _DB_FULL[1:]):
            where = artifact_location()
            return StoreFull(
                f"the MLflow artifact store {where} is full (no space left on device): "
                "free space there or point the experiment's artifacts elsewhere"
            )
    return None


def artifact_location() -> str:
    """Where the gate's evidence runs keep their artifacts (as far as MLflow says)."""
    import mlflow

    try:
        experiment = mlflow.get_experiment_by_name(EXPERIMENT)
    except Exception:  # the store itself may be what failed
        return "(unknown)"
    return experiment.artifact_location if experiment is not None else "(unknown)"


def canonical_version(name: str, version: str) -> str:
    """The version as MLflow names it (``02`` is ``2``); an error naming the model if none."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    try:
        return str(MlflowClient().get_model_version(name, str(version)).version)
    except MlflowException as exc:
        raise GateError(
            f"model {name!r} has no version {version!r}: {str(exc).splitlines()[0][:200]}"
        ) from None


def _not_a_store_traceback(record: logging.LogRecord) -> bool:
    """MLflow's SQL store logs every database error with its traceback and SQL before it
    raises; the gate reports the error itself, in one line (``store_full``, ``error``)."""
    return not record.getMessage().startswith("SQLAlchemy database error")


def quiet_store_errors() -> None:
    """Install :func:`_not_a_store_traceback` on MLflow's SQL store logger, once."""
    logger = logging.getLogger("mlflow.store.db.utils")
    if _not_a_store_traceback not in logger.filters:
        logger.addFilter(_not_a_store_traceback)


def configure_tracking(tracking_uri: str | None = None, *, check: bool = False) -> str:
    """Point MLflow at ``tracking_uri``, ``$MLFLOW_TRACKING_URI`` or the sqlite default.

    For an HTTP server, retries are bounded (``HTTP_LIMITS``, unless the caller
    set them) and ``check=True`` asks it once, so an unreachable server is a
    clear error within about a minute instead of a hang or a deep traceback.
    """
    import mlflow

    quiet_store_errors()
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
