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

The verdict is bound to the model's bytes: before a protected alias moves (or a
version moves to a protected stage), the guard hashes the version's files where
the registry says they are and compares the digest with the signed
``xai_gate.model_sha256``; a mismatch, or files it cannot reach, is a refusal
that says which. The signature also names the version's source and creation
time, so a version deleted and registered again under the same number is not
the version that passed.

Other registry writes that would undo the gate are guarded too:

* ``transition_model_version_stage`` to a protected stage
  (``XAI_GATE_PROTECTED_STAGES``, default ``Production``; the deprecated stages)
  needs what a protected alias needs;
* ``delete_registered_model`` and ``delete_model_version`` are refused while the
  model (or that version) holds a protected alias, so the record of the version
  that serves is never deleted with it; delete the alias first (taking an alias
  away needs no verdict). ``XAI_GATE_GUARD_DELETES=false`` turns this off.

Its limit: a client that opens the database directly, not through the server,
bypasses it.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from mlflow.entities.model_registry import ModelVersionTag
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import PERMISSION_DENIED
from mlflow.store.model_registry.sqlalchemy_store import SqlAlchemyStore

from pipelines.verdict.decision import DEFAULT_ALIAS
from pipelines.verdict.model_digest import model_digest
from pipelines.verdict.signing import (
    TAG_MODEL_DIGEST,
    TAG_SIGNATURE,
    TAG_VERDICT,
    identity_of,
    secret_from_env,
    signature_age,
    verify_passed,
    verify_signature,
)

__all__ = [
    "DELETES_ENV",
    "GUARD_TAG_PREFIX",
    "MAX_AGE_ENV",
    "PREFIX",
    "PROTECTED_ENV",
    "STAGES_ENV",
    "TAG_ACCEPTED",
    "GuardedRegistryStore",
    "files_digest",
    "protected_aliases",
]

PREFIX = "xai-gate+"
PROTECTED_ENV = "XAI_GATE_PROTECTED_ALIASES"
STAGES_ENV = "XAI_GATE_PROTECTED_STAGES"
DELETES_ENV = "XAI_GATE_GUARD_DELETES"
MAX_AGE_ENV = "XAI_GATE_SIGNATURE_MAX_AGE"
GUARD_TAG_PREFIX = "xai_gate.guard."
TAG_ACCEPTED = GUARD_TAG_PREFIX + "accepted_signature"
"""The signature of the last verdict the guard saw written fresh; '' after any other."""


def protected_aliases() -> frozenset[str]:
    value = os.environ.get(PROTECTED_ENV, DEFAULT_ALIAS)
    return frozenset(alias.strip() for alias in value.split(",") if alias.strip())


def protected_stages() -> frozenset[str]:
    value = os.environ.get(STAGES_ENV, "Production")
    return frozenset(stage.strip().lower() for stage in value.split(",") if stage.strip())


def deletes_guarded() -> bool:
    return os.environ.get(DELETES_ENV, "true").strip().lower() not in ("false", "0", "no")


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
            problem = self._promotion_problem(name, str(version))
            if problem:
                raise MlflowException(
                    f"xai-gate refuses alias {alias!r} for {name} version {version}: {problem}",
                    error_code=PERMISSION_DENIED,
                )
        super().set_registered_model_alias(name, alias, version)

    def transition_model_version_stage(
        self, name: str, version: str, stage: str, archive_existing_versions: bool
    ) -> Any:
        if str(stage).strip().lower() in protected_stages():
            problem = self._promotion_problem(name, str(version))
            if problem:
                raise MlflowException(
                    f"xai-gate refuses stage {stage!r} for {name} version {version}: {problem}",
                    error_code=PERMISSION_DENIED,
                )
        return super().transition_model_version_stage(
            name, version, stage, archive_existing_versions
        )

    def delete_registered_model(self, name: str) -> None:
        if deletes_guarded():
            held = self._protected_holders(name)
            if held:
                raise _refuse(
                    f"refuses to delete registered model {name}: {held} (delete the alias "
                    f"first; {DELETES_ENV}=false allows it)"
                )
        super().delete_registered_model(name)

    def delete_model_version(self, name: str, version: str) -> None:
        if deletes_guarded():
            held = self._protected_holders(name, str(version))
            if held:
                raise _refuse(
                    f"refuses to delete {name} version {version}: {held} (delete the alias "
                    f"first; {DELETES_ENV}=false allows it)"
                )
        super().delete_model_version(name, version)

    def _protected_holders(self, name: str, version: str | None = None) -> str:
        """'version 3 holds protected alias 'champion'' for each protected alias held, or ''."""
        aliases: dict[str, str] = self.get_registered_model(name).aliases or {}
        protected = protected_aliases()
        held = [
            f"version {holder} holds protected alias {alias!r}"
            for alias, holder in sorted(aliases.items())
            if alias in protected and (version is None or str(holder) == version)
        ]
        return "; ".join(held)

    def _promotion_problem(self, name: str, version: str) -> str | None:
        """Why this version may not serve (None: a fresh signed pass on these very bytes)."""
        entity = self.get_model_version(name, version)
        tags = dict(entity.tags)
        problem = verify_passed(secret_from_env(), tags=tags, **identity_of(entity))
        if problem is None and tags.get(TAG_ACCEPTED) != tags.get(TAG_SIGNATURE):
            problem = (
                "its signed verdict was not fresh when it was written (an old verdict "
                "written back: a replay), or it was changed since"
            )
        if problem is None:
            problem = self._digest_problem(name, version, tags.get(TAG_MODEL_DIGEST, ""))
        return problem

    def _digest_problem(self, name: str, version: str, signed: str) -> str | None:
        """None when the version's files hash to the signed digest; else which way not."""
        location = str(self.get_model_version_download_uri(name, version))
        try:
            actual = files_digest(location)
        except Exception as exc:  # any failure to read the files is a refusal, never a pass
            return (
                f"the guard cannot reach the model's files at {location} to check them against "
                f"the signed digest ({type(exc).__name__}: {exc})"
            )
        if not actual:
            return f"the guard finds no model files at {location} to check the signed digest"
        if actual != signed:
            return (
                f"its files at {location} are not the files that passed (digest "
                f"{actual[:12]}, signed {signed[:12] or 'none'}): the model was changed after "
                "it was gated; gate it again"
            )
        return None

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
        entity = self.get_model_version(name, version)
        tags = dict(entity.tags)
        secret = secret_from_env()
        age = signature_age(tags)
        fresh = (
            secret is not None
            and verify_signature(secret, tags=tags, **identity_of(entity))
            and age is not None
            and abs(age) <= max_signature_age()
        )
        accepted = tags[TAG_SIGNATURE] if fresh else ""  # fresh: it verified, so it is there
        super().set_model_version_tag(name, version, ModelVersionTag(TAG_ACCEPTED, accepted))


def files_digest(location: str) -> str:
    """The model digest of the files at an artifact location, as the registry store sees it.

    A local path (or ``file://``) is hashed where it lies (cached by size and mtime);
    ``mlflow-artifacts:`` is resolved through the server's own artifact destination;
    anything else (``s3://``, ...) is downloaded to a temporary folder first.
    """
    parsed = urlparse(location)
    if parsed.scheme in ("", "file"):
        return model_digest(Path(unquote(parsed.path) if parsed.scheme else location))
    with tempfile.TemporaryDirectory(prefix="xai-gate-guard-") as folder:
        if parsed.scheme == "mlflow-artifacts":
            from mlflow.server.handlers import _get_artifact_repo_mlflow_artifacts

            relative = parsed.path.lstrip("/")
            local = _get_artifact_repo_mlflow_artifacts().download_artifacts(relative, folder)
        else:
            from mlflow.artifacts import download_artifacts

            local = download_artifacts(artifact_uri=location, dst_path=folder)
        return model_digest(Path(local))
