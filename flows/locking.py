"""One gate at a time per model version, even when a gate is killed while holding the lock.

The gate flow holds the lock from the moment it knows the version until its
verdict is written (an ``error`` included), so two gates started at once, by
hand, by two sweepers or both, give one consistent verdict: the second finds
the first's verdict and reuses it.

Which lock depends on where Prefect runs:

* **A Prefect server** (``PREFECT_API_URL`` set): a global concurrency limit of
  one slot per version, shared by every machine that talks to that server. The
  slot is leased and renewed while held; the server's repossessor service frees
  the slot of a killed gate once its lease (``LEASE_SECONDS``) has run out.
* **No server** (Prefect's ephemeral mode, the CLI's default): each process
  starts its own temporary API, which runs no repossessor and keeps leases in
  memory, so a killed gate would hold a slot for ever. Gates on this machine
  then share a file lock under ``PREFECT_HOME`` instead (``filelock``, an
  ``flock``), which the kernel releases the moment its holder dies.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from pathlib import Path

from pipelines.errors import GateError

__all__ = [
    "LEASE_SECONDS",
    "LockTimeout",
    "file_lock_path",
    "lock_name",
    "uses_prefect_server",
    "version_lock",
]

LEASE_SECONDS = 60.0
"""How long a killed holder keeps a Prefect slot (a live holder renews it)."""


class LockTimeout(GateError, TimeoutError):
    """Another gate of the same version held the lock for longer than the wait allowed."""


def lock_name(model: str, version: str) -> str:
    return f"xai-gate-{model}-v{version}"


def uses_prefect_server() -> bool:
    """True when a Prefect API URL is configured (a server, or Prefect's test harness)."""
    from prefect.settings import get_current_settings

    return bool(get_current_settings().api.url)


def file_lock_path(model: str, version: str, scope: str, home: Path | None = None) -> Path:
    """The lock file of ``model`` v``version`` in the registry ``scope`` (its tracking URI),
    under ``home`` (default ``PREFECT_HOME``)."""
    from prefect.settings import get_current_settings

    readable = re.sub(r"[^A-Za-z0-9._-]+", "_", lock_name(model, version))[:80]
    digest = hashlib.sha256(f"{scope}\x1f{model}\x1f{version}".encode()).hexdigest()[:16]
    home = Path(home) if home is not None else Path(get_current_settings().home)
    return home / "xai-gate-locks" / f"{readable}-{digest}.lock"


@contextmanager
def version_lock(
    model: str, version: str, *, scope: str = "", timeout_seconds: float = 3600
) -> Iterator[None]:
    """Hold the version's lock; ``scope`` (the tracking URI) keeps unrelated stores apart."""
    if uses_prefect_server():
        lock = _prefect_slot(lock_name(model, version), timeout_seconds)
    else:
        lock = _file_lock(file_lock_path(model, version, scope), timeout_seconds)
    with ExitStack() as held:
        try:
            held.enter_context(lock)
        except TimeoutError:  # filelock's Timeout and Prefect's both are TimeoutErrors
            raise LockTimeout(
                f"another gate of {model} v{version} held its lock for over {timeout_seconds:.0f} s"
            ) from None
        yield


@contextmanager
def _file_lock(path: Path, timeout_seconds: float) -> Iterator[None]:
    from filelock import FileLock

    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(path, timeout=timeout_seconds):
        yield


@contextmanager
def _prefect_slot(name: str, timeout_seconds: float) -> Iterator[None]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
    from prefect.concurrency.sync import concurrency
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            # Another gate may create it at the same moment: then it is the same lock.
            with suppress(ObjectAlreadyExists):
                client.create_global_concurrency_limit(
                    GlobalConcurrencyLimitCreate(name=name, limit=1)
                )
    with concurrency(
        name, occupy=1, strict=True, timeout_seconds=timeout_seconds, lease_duration=LEASE_SECONDS
    ):
        yield
