"""Ctrl-C ends a command within seconds: one line, exit 130, nothing half-written.

SIGTERM (a worker, ``docker stop``, ``kill``) ends it with 143 the same way, after
Prefect has marked a running gate crashed and its ``on_crashed`` hook has recorded
``error``: Prefect turns SIGTERM into a crash while a flow runs, then sends it again to
the handler it found, this one. Without it the process would die by the signal and
leave Prefect's temporary API server running, orphaned, for ever.

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

__all__ = ["EXIT_INTERRUPTED", "EXIT_TERMINATED", "handle_interrupts", "uninterrupted"]

EXIT_INTERRUPTED = 130
"""128 + SIGINT, what shells report for a command stopped by Ctrl-C."""
EXIT_TERMINATED = 143
"""128 + SIGTERM."""

_state: dict[str, int | bool] = {"critical": 0, "pending": False, "code": EXIT_INTERRUPTED}
_lock = threading.Lock()


def handle_interrupts(what: str = "xai-gate") -> None:
    """Install the SIGINT handler (main thread only; elsewhere this does nothing)."""
    if threading.current_thread() is not threading.main_thread():
        return

    def on_signal(signum: int, frame: FrameType | None) -> None:
        code = EXIT_TERMINATED if signum == signal.SIGTERM else EXIT_INTERRUPTED
        with _lock:
            if _state["critical"]:
                _state["pending"], _state["code"] = True, code  # leave once it is written
                return
        _leave(what, code)

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)


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
            _leave("xai-gate", int(_state["code"]))


def _leave(what: str, code: int = EXIT_INTERRUPTED) -> None:
    how = "terminated" if code == EXIT_TERMINATED else "interrupted"
    sys.stderr.write(
        f"\n{how}: {what} stopped (a verdict is written whole or not at all; "
        "an unfinished gate is gated again next time)\n"
    )
    sys.stderr.flush()
    _stop_temporary_prefect_servers()
    os._exit(code)


def _stop_temporary_prefect_servers() -> None:
    """Terminate the API servers Prefect started for this process (if Ctrl-C spared them)."""
    server_module = sys.modules.get("prefect.server.api.server")
    if server_module is None:
        return
    for server in list(getattr(server_module.SubprocessASGIServer, "_instances", {}).values()):
        process = getattr(server, "server_process", None)
        if process is not None and process.poll() is None:
            process.terminate()
