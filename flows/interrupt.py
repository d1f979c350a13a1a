"""Ctrl-C ends a command within seconds: one line, exit 130, nothing half-written.

Why not let ``KeyboardInterrupt`` unwind: the terminal sends SIGINT to the
whole process group, so Prefect's temporary API server dies with it, and
Prefect's crash handling then retries its calls against the dead server for
minutes, printing tracebacks, and the run ended with the exit code of
"blocked". Instead the handler stops the temporary server and leaves at once.

What a kill leaves is already safe (the README's "What happens when…"):
the verdict tag is written last, the per-version file lock dies with the
process, and the next gate closes the evidence run left open and gates
again. The one place an interrupt waits for is :func:`uninterrupted`, around
writing a verdict, so a version never carries half of one.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

__all__ = ["EXIT_INTERRUPTED", "handle_interrupts", "uninterrupted"]

EXIT_INTERRUPTED = 130
"""128 + SIGINT, what shells report for a command stopped by Ctrl-C."""

_state = {"critical": 0, "pending": False}
_lock = threading.Lock()


def handle_interrupts(what: str = "xai-gate") -> None:
    """Install the SIGINT handler (main thread only; elsewhere this does nothing)."""
    if threading.current_thread() is not threading.main_thread():
        return

    def on_interrupt(signum: int, frame: FrameType | None) -> None:
        with _lock:
            if _state["critical"]:
                _state["pending"] = True  # leave once the verdict is written
                return
        _leave(what)

    signal.signal(signal.SIGINT, on_interrupt)


@contextmanager
def uninterrupted() -> Iterator[None]:
    """Defer Ctrl-C until the block ends: a verdict is written whole or not at all."""
    with _lock:
        _state["critical"] += 1
    try:
        yield
    finally:
        with _lock:
            _state["critical"] -= 1
            leave = _state["pending"] and not _state["critical"]
        if leave:
            _leave("xai-gate")


def _leave(what: str) -> None:
    sys.stderr.write(
        f"\ninterrupted: {what} stopped (a verdict is written whole or not at all; "
        "an unfinished gate is gated again next time)\n"
    )
    sys.stderr.flush()
    _stop_temporary_prefect_servers()
    os._exit(EXIT_INTERRUPTED)


def _stop_temporary_prefect_servers() -> None:
    """Terminate the API servers Prefect started for this process (if Ctrl-C spared them)."""
    server_module = sys.modules.get("prefect.server.api.server")
    if server_module is None:
        return
    for server in list(getattr(server_module.SubprocessASGIServer, "_instances", {}).values()):
        process = getattr(server, "server_process", None)
        if process is not None and process.poll() is None:
            process.terminate()
