"""An MLflow model-registry store that enforces the gate: protected aliases need a signed pass.

Registered for the URI schemes ``xai-gate+sqlite`` and ``xai-gate+postgresql``
(entry point ``mlflow.model_registry_store``). It is MLflow's own SQLAlchemy
registry store on the URI without the ``xai-gate+`` prefix, except that
``set_registered_model_alias`` for a protected alias (``XAI_GATE_PROTECTED_ALIASES``,
comma-separated, default ``champion``) is refused unless the version carries a
``passed`` verdict signed with ``XAI_GATE_SECRET``. Run it server-side::

    mlflow server --backend-store-uri sqlite:///mlflow.db \\
                  --registry-store-uri xai-gate+sqlite:///mlflow.db

Its limit: a client that opens the database directly, not through the server,
bypasses it.
"""

from __future__ import annotations

import os

from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import PERMISSION_DENIED
from mlflow.store.model_registry.sqlalchemy_store import SqlAlchemyStore

from pipelines.signing import secret_from_env, verify_passed

__all__ = ["PREFIX", "PROTECTED_ENV", "GuardedRegistryStore", "protected_aliases"]

PREFIX = "xai-gate+"
PROTECTED_ENV = "XAI_GATE_PROTECTED_ALIASES"


def protected_aliases() -> frozenset[str]:
    value = os.environ.get(PROTECTED_ENV, "champion")
    return frozenset(alias.strip() for alias in value.split(",") if alias.strip())


class GuardedRegistryStore(SqlAlchemyStore):
    """MLflow's SQLAlchemy registry store, with protected aliases enforced."""

    def __init__(self, store_uri: str, tracking_uri: str | None = None) -> None:
        if not store_uri.startswith(PREFIX):
            raise MlflowException(
                f"xai-gate registry store URIs start with {PREFIX!r}: {store_uri}"
            )
        super().__init__(store_uri.removeprefix(PREFIX))

    def set_registered_model_alias(self, name: str, alias: str, version: str) -> None:
        if alias in protected_aliases():
            tags = dict(self.get_model_version(name, version).tags)
            problem = verify_passed(secret_from_env(), model=name, version=str(version), tags=tags)
            if problem:
                raise MlflowException(
                    f"xai-gate refuses alias {alias!r} for {name} version {version}: {problem}",
                    error_code=PERMISSION_DENIED,
                )
        super().set_registered_model_alias(name, alias, version)
