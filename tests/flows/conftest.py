"""Flow tests run against Prefect's real test harness (one ephemeral server per session)."""

from __future__ import annotations

import warnings

import pytest

DRAIN_SECONDS = 60
"""How long the session's end waits for Prefect's log and event workers to send what they hold."""


@pytest.fixture(scope="session", autouse=True)
def prefect_harness():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield
        _drain_prefect_workers(DRAIN_SECONDS)


def _drain_prefect_workers(seconds: float) -> None:
    """Drain the log and event workers with a bound, before the harness drains them unbounded.

    In one shuffled order a full run hung at the very end: the harness's own drain waited
    forever on a worker whose queue thread was gone, and pytest-timeout would have failed
    the last test. Drained (and so deregistered) here, the harness finds none left to wait on.
    """
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    for worker in (APILogWorker, EventsWorker):
        _, pending = worker.drain_all(timeout=seconds, at_exit=False)
        if pending:
            warnings.warn(
                f"Prefect's {worker.__name__} did not drain within {seconds} s; left behind",
                stacklevel=1,
            )
