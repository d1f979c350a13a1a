"""An MLflow model-registry store that enforces the gate: protected aliases need a signed pass.

Registered for the URI schemes ``xai-gate+sqlite`` and ``xai-gate+postgresql``
(entry point ``mlflow.model_registry_store``). It is MLflow's own SQLAlchemy
registry store on the URI without the ``xai-gate+`` prefix, except that
``set_registered_model_alias`` for a protected alias (``XAI_GATE_PROTECTED_ALIASES``,
comma-separated, default ``champion``) is refused unless the version carries a
``passed`` verdict signed with ``XAI_GATE_SECRET``. Run it server-side::

    mlflow server --backend-store-uri sqlite:///mlflow.db \\
                  --registry-store-uri xai-gate+sqlite:///mlflow.db

A replayed verdict (an old signed ``passed`` written back over a later
``blocked``) verifies as a signature, so the guard also watches the verdict
tag: when it is written, the guard records the signature as accepted only if
it verifies and was made within ``XAI_GATE_SIGNATURE_MAX_AGE`` seconds
(default 300). The alias needs the accepted signature. Tags under
``xai_gate.guard.`` are the guard's own: clients may not write or delete them.

Its limit: a client that opens the database directly, not through the server,
bypasses it.
"""

from __future__ import annotations

import os
from typing import Any

from mlflow.entities.model_registry import ModelVersionTag
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import PERMISSION_DENIED
from mlflow.store.model_registry.sqlalchemy_store import SqlAlchemyStore

from pipelines.verdict.decision import DEFAULT_ALIAS
from pipelines.verdict.signing import (
    TAG_SIGNATURE,
    TAG_VERDICT,
    secret_from_env,
    signature_age,
    verify_passed,
    verify_signature,
)

__all__ = [
    "GUARD_TAG_PREFIX",
    "MAX_AGE_ENV",
    "PREFIX",
    "PROTECTED_ENV",
    "TAG_ACCEPTED",
    "GuardedRegistryStore",
    "protected_aliases",
]

PREFIX = "xai-gate+"
PROTECTED_ENV = "XAI_GATE_PROTECTED_ALIASES"
MAX_AGE_ENV = "XAI_GATE_SIGNATURE_MAX_AGE"
GUARD_TAG_PREFIX = "xai_gate.guard."
TAG_ACCEPTED = GUARD_TAG_PREFIX + "accepted_signature"
"""The signature of the last verdict the guard saw written fresh; '' after any other."""


def protected_aliases() -> frozenset[str]:
    value = os.environ.get(PROTECTED_ENV, DEFAULT_ALIAS)
    return frozenset(alias.strip() for alias in value.split(",") if alias.strip())


def max_signature_age() -> float:
    return float(os.environ.get(MAX_AGE_ENV, "300"))


def _refuse(message: str) -> MlflowException:
    return MlflowException(f"xai-gate: {message}", error_code=PERMISSION_DENIED)


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
            if problem is None and tags.get(TAG_ACCEPTED) != tags.get(TAG_SIGNATURE):
                problem = (
                    "its signed verdict was not fresh when it was written (an old verdict "
                    "written back: a replay), or it was changed since"
                )
            if problem:
                raise MlflowException(
                    f"xai-gate refuses alias {alias!r} for {name} version {version}: {problem}",
                    error_code=PERMISSION_DENIED,
                )
        super().set_registered_model_alias(name, alias, version)

    def set_model_version_tag(self, name: str, version: str, tag: ModelVersionTag) -> None:
        if tag.key.startswith(GUARD_TAG_PREFIX):
            raise _refuse(f"tag {tag.key!r} is written by the registry guard only")
        super().set_model_version_tag(name, version, tag)
        if tag.key == TAG_VERDICT:
            self._judge_written_verdict(name, str(version))

    def delete_model_version_tag(self, name: str, version: str, key: str) -> None:
        # Deleting the verdict needs no judgement: without it no alias can be set, and
        # writing it again is judged like any write.
        if key.startswith(GUARD_TAG_PREFIX):
            raise _refuse(f"tag {key!r} is written by the registry guard only")
        super().delete_model_version_tag(name, version, key)

    def create_model_version(self, name: str, source: str, *args: Any, **kwargs: Any) -> Any:
        tags = kwargs.get("tags") if "tags" in kwargs else (args[1] if len(args) > 1 else None)
        if any(tag.key.startswith(GUARD_TAG_PREFIX) for tag in tags or ()):
            raise _refuse(f"tags under {GUARD_TAG_PREFIX!r} are written by the registry guard only")
        return super().create_model_version(name, source, *args, **kwargs)

    def _judge_written_verdict(self, name: str, version: str) -> None:
        """Accept the verdict just written only if it is signed and was signed just now."""
        tags = dict(self.get_model_version(name, version).tags)
        secret = secret_from_env()
        age = signature_age(tags)
        fresh = (
            secret is not None
            and verify_signature(secret, model=name, version=version, tags=tags)
            and age is not None
            and abs(age) <= max_signature_age()
        )
        accepted = tags[TAG_SIGNATURE] if fresh else ""  # fresh: it verified, so it is there
        super().set_model_version_tag(name, version, ModelVersionTag(TAG_ACCEPTED, accepted))
