"""Where the model runs: a forked worker whose environment never held a credential.

The parent (the gate, which holds ``XAI_GATE_SECRET`` and the registry's
credentials) starts one *zygote* per process: ``python -m
pipelines.judging.sandbox``, with :func:`worker_environment`, which imports
torch, MLflow and Great Expectations once and then only forks. Each judgement
is a fresh fork (its own process group, killed with the zygote), so no model
shares a process with another model or with the key, and a gate pays the
imports once, not per judgement. The parent makes itself non-dumpable first:
another process of the same user can then read neither its memory nor its
``/proc/<pid>/environ``.

The parent talks to the zygote in JSON lines (a request file and an output
folder in, the child's pid out); the child's answer is the files it leaves
(``contract``), its exit code the file ``exit`` the zygote writes when it reaps it.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import re
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from pipelines.judging.contract import (
    DaskOptions,
    FetchedFiles,
    JudgeRequest,
    JudgingError,
    read_error,
)

__all__ = [
    "drop_privileges",
    "judge_in_worker",
    "judge_request",
    "refuse_beside_secrets",
    "stop_judging",
    "worker_environment",
]

EXIT_FILE = "exit"
LOG_FILE = "log.txt"

_KEPT_NAMES = frozenset(
    {
        "PATH",
        "HOME",
        "USER",
        "LOGNAME",
        "LANG",
        "LANGUAGE",
        "TZ",
        "TERM",
        "TMPDIR",
        "TMP",
        "TEMP",
        "VIRTUAL_ENV",
        "LD_LIBRARY_PATH",
        "DO_NOT_TRACK",
        "PYTHONHASHSEED",
        "PYTHONDONTWRITEBYTECODE",
        "PYTHONWARNINGS",
        "PYTHONUNBUFFERED",
        "GE_USAGE_STATISTICS_ENABLED",
    }
)
_KEPT_PREFIXES = (
    "LC_",
    "XDG_",
    "HF_",
    "TRANSFORMERS_",
    "TOKENIZERS_",
    "TORCH",
    "PYTORCH_",
    "CUDA",
    "CUBLAS_",
    "NVIDIA_",
    "OMP_",
    "MKL_",
    "KMP_",
    "OPENBLAS_",
    "MPL",
    "DASK_",
    "GX_",
    "XAI_GATE_",
    "MLFLOW_ALLOW_",
    "MLFLOW_DISABLE_TELEMETRY",
    "MLFLOW_ENABLE_",
)
_CREDENTIAL = re.compile(
    r"SECRET|TOKEN|PASSW|CREDENTIAL|AUTH|COOKIE|SESSION|PRIVATE|(?:^|_)(?:API_)?KEY(?:S|_|$)",
    re.IGNORECASE,
)


def worker_environment(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The judging worker's environment: an allow-list of the parent's, less every credential.

    Kept: locale, paths, thread counts, the hub's offline switches, MLflow's
    deserialisation switches, xai-gate's own options. Never kept: a name that
    looks like a credential (``*SECRET*``, ``*TOKEN*``, ``*PASSWORD*``, ``*_KEY``,
    ``*AUTH*``), the tracking and registry URIs and their users, Prefect's API,
    cloud credentials: the model has nothing to reach but its files.
    """
    source = os.environ if environ is None else environ
    kept = {
        name: value
        for name, value in source.items()
        if (name in _KEPT_NAMES or name.startswith(_KEPT_PREFIXES)) and not _CREDENTIAL.search(name)
    }
    kept["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    return kept


_GATE_SECRETS = ("XAI_GATE_SECRET", "XAI_GATE_WEBHOOK_SECRET")
"""The keys the gate's trust rests on: a process that runs a model must not hold them."""


def refuse_beside_secrets(what: str, environ: Mapping[str, str] | None = None) -> None:
    """``what`` runs a model in this process: refused while a credential is in its
    environment, since the model's code could read it (``os.environ``, ``/proc/self``)."""
    source = os.environ if environ is None else environ
    held = [name for name in _GATE_SECRETS if source.get(name)]
    if held:
        raise JudgingError(
            f"{what} runs the model in this process, so it refuses to while "
            f"{', '.join(held)} is set (the model's code could read it): unset it for this "
            "command; `xai-gate gate` judges in a worker that holds no secret"
        )


def _prctl(option: int, value: int) -> None:
    """Linux's prctl(2); a no-op where there is none."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(option, value, 0, 0, 0)
    except (OSError, AttributeError):
        pass


_PR_SET_PDEATHSIG = 1
_PR_SET_DUMPABLE = 4
_PR_CAPBSET_DROP = 24
_PR_SET_SECUREBITS = 28
_PR_SET_NO_NEW_PRIVS = 38
_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL = 47, 4
_SECURE_NOROOT = 0b1111  # NOROOT and NO_SETUID_FIXUP, both locked
_CAPABILITY_VERSION_3 = 0x20080522


def drop_privileges() -> None:
    """Give up every capability for good, so a process of the gate's user (root included)
    cannot read the gate's memory or ``/proc/<pid>/environ``: a non-dumpable process is
    open only to ``CAP_SYS_PTRACE``. Nothing gains them back: the bounding set is
    empty, root's exec rule is off (``SECBIT_NOROOT``, locked) and no new privileges.

    Raises :class:`JudgingError` when any is left, so a model never runs with them.
    """
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
    libc.prctl(_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)
    libc.prctl(_PR_SET_SECUREBITS, _SECURE_NOROOT, 0, 0, 0)  # needs CAP_SETPCAP: first
    try:
        last = int(Path("/proc/sys/kernel/cap_last_cap").read_text())
    except (OSError, ValueError):
        last = 63
    for capability in range(last + 1):
        libc.prctl(_PR_CAPBSET_DROP, capability, 0, 0, 0)
    header = (ctypes.c_uint32 * 2)(_CAPABILITY_VERSION_3, 0)
    data = (ctypes.c_uint32 * 6)()  # effective, permitted, inheritable: twice, all empty
    libc.capset(ctypes.byref(header), ctypes.byref(data))
    left = _capabilities()
    held = {name: mask for name, mask in left.items() if name != "CapBnd" and mask}
    if os.getuid() == 0 and left.get("CapBnd"):
        held["CapBnd"] = left["CapBnd"]  # root would get them back at the next exec
    if held:
        raise JudgingError(
            "the judging worker could not give up its capabilities ("
            + ", ".join(f"{name} {mask:#x}" for name, mask in held.items())
            + "), so the model it would run could read the gate's key; run the gate "
            "where a process may drop them (CAP_SETPCAP), or as a user without them"
        )


def _capabilities() -> dict[str, int]:
    found = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
            found[name] = int(value.strip(), 16)
    return found


class _Zygote:
    """The parent's handle on its zygote, started on first use, restarted if it died."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._process: subprocess.Popen[bytes] | None = None
        self._log: Path | None = None
        self.in_flight: set[int] = set()
        self.stopped: str | None = None
        """Why every judgement is refused and killed (``stop_judging``); None while open."""

    def fork(self, request: Path, out: Path) -> int:
        with self._lock:
            if self.stopped is not None:
                raise JudgingError(self.stopped)
            process = self._running()
            assert process.stdin is not None and process.stdout is not None
            try:
                order = {"request": str(request), "out": str(out)}
                process.stdin.write((json.dumps(order) + "\n").encode())
                process.stdin.flush()
                reply = process.stdout.readline()
            except OSError:
                reply = b""
            if not reply:
                self._process = None
                raise JudgingError(f"the judging worker could not start: {self._tail()}")
            pid = int(json.loads(reply)["pid"])
            self.in_flight.add(pid)
            return pid

    def stop(self, reason: str) -> None:
        with self._lock:
            self.stopped = reason
            for pid in self.in_flight:
                with contextlib.suppress(OSError):
                    os.killpg(pid, signal.SIGKILL)

    def alive(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def _running(self) -> subprocess.Popen[bytes]:
        if self._process is not None and self._process.poll() is None:
            return self._process
        _prctl(_PR_SET_DUMPABLE, 0)  # no same-user process reads this one's memory or environ
        handle, name = tempfile.mkstemp(prefix="xai-gate-zygote-", suffix=".log")
        self._log = Path(name)
        self._process = subprocess.Popen(
            [sys.executable, "-m", "pipelines.judging.sandbox"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=handle,
            env=worker_environment(),
            close_fds=True,
        )
        os.close(handle)
        atexit.register(self.close)
        return self._process

    def _tail(self) -> str:
        if self._log is None or not self._log.is_file():
            return "no output"
        lines = self._log.read_text(errors="replace").strip().splitlines()
        return lines[-1][:500] if lines else "it exited without a word"

    def close(self) -> None:
        process = self._process
        if process is not None and process.stdin is not None:
            with contextlib.suppress(OSError):
                process.stdin.close()  # the zygote kills its children and leaves
        with contextlib.suppress(OSError):
            if self._log is not None:
                self._log.unlink(missing_ok=True)


_ZYGOTE = _Zygote()


def stop_judging(reason: str) -> None:
    """Kill every judgement in flight and refuse new ones: each gate ends ``error`` with
    ``reason`` (a listener that is stopped records why, as the CLI does)."""
    _ZYGOTE.stop(reason)


def judge_request(
    fetched: Any,
    policy: Any,
    *,
    shards: int = 1,
    dask_address: str | None = None,
    dask_workers: int = 0,
    title: str = "",
) -> JudgeRequest:
    """The request for ``fetched`` (a ``FetchedModel``) under ``policy`` (a ``GatePolicy``),
    with the worker's environment, import path and working folder as they are now."""
    files = FetchedFiles(
        uri=fetched.uri,
        folder=str(fetched.folder),
        digest=fetched.digest,
        name=fetched.name,
        version=fetched.version,
        source_run_id=fetched.source_run_id,
        model_id=fetched.model_id,
        source=fetched.source,
        created=fetched.created,
    )
    dask = (
        DaskOptions(address=dask_address, workers=max(1, dask_workers))
        if dask_address or dask_workers
        else None
    )
    return JudgeRequest(
        model=files,
        policy=policy.model_dump(mode="json"),
        shards=shards,
        dask=dask,
        title=title,
        env=worker_environment(),
        sys_path=[p for p in sys.path if p],
        cwd=os.getcwd(),
    )


def judge_in_worker(
    request: JudgeRequest, out: Path, *, on_line: Callable[[str], None] | None = None
) -> int:
    """Have a fresh worker answer ``request`` into ``out``; its exit code.

    ``on_line`` receives each line the worker logs (its stages); the worker is
    killed (its whole process group) if this call ends any other way than by
    its exit, Ctrl-C and errors included. A worker that exits without an
    answer raises :class:`JudgingError` with its message or its exit status.
    """
    out.mkdir(parents=True, exist_ok=True)
    request_file = out.parent / f"{out.name}.request.json"
    request_file.write_text(request.model_dump_json(), encoding="utf-8")
    os.chmod(request_file, 0o600)
    pid = _ZYGOTE.fork(request_file, out)
    finished = False
    try:
        code = _wait(pid, out, on_line or (lambda line: None))
        finished = True
    finally:
        if not finished:
            with contextlib.suppress(OSError):
                os.killpg(pid, signal.SIGKILL)
        _ZYGOTE.in_flight.discard(pid)
    if code != 0 and _ZYGOTE.stopped is not None:
        raise JudgingError(_ZYGOTE.stopped)
    if code != 0:
        message = read_error(out)
        if message is None:
            how = f"was killed by signal {-code}" if code < 0 else f"exited with status {code}"
            message = f"the judging worker of {request.model.uri} {how} before it answered"
            if code == -signal.SIGKILL:
                message += " (out of memory?)"
        raise JudgingError(message)
    return code


def _wait(pid: int, out: Path, on_line: Callable[[str], None]) -> int:
    log, position, partial = out / LOG_FILE, 0, b""
    exit_file = out / EXIT_FILE
    while True:
        done = exit_file.is_file()
        if log.is_file():
            with log.open("rb") as handle:
                handle.seek(position)
                chunk = handle.read()
            position += len(chunk)
            *lines, partial = (partial + chunk).split(b"\n")
            for line in lines:
                on_line(line.decode("utf-8", "replace"))
        if done:
            return int(exit_file.read_text().strip())
        if not _ZYGOTE.alive():
            raise JudgingError(
                _ZYGOTE.stopped or "the judging worker's zygote died while it judged"
            )
        time.sleep(0.1)


# --- the zygote ------------------------------------------------------------------------


def _preload() -> None:
    """Everything a judgement imports, once, before the first fork."""
    import matplotlib

    matplotlib.use("Agg")
    import great_expectations  # noqa: F401
    import matplotlib.pyplot
    import mlflow.pytorch  # noqa: F401

    import pipelines.judging.worker
    import pipelines.stages.assembly
    import pipelines.tracking.models  # noqa: F401


def _child(request_file: Path, out: Path, zygote: int) -> int:
    os.setpgid(0, 0)  # its own group: the parent kills it and its Dask workers as one
    _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != zygote:  # the zygote died before the line above
        return 70
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    log = os.open(out / LOG_FILE, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.dup2(log, 1)
    os.dup2(log, 2)
    try:
        drop_privileges()
    except JudgingError as exc:
        from pipelines.judging.contract import write_error

        write_error(out, str(exc))
        return 1
    request: dict[str, Any] = json.loads(request_file.read_bytes())
    os.environ.clear()
    os.environ.update(request.get("env") or {})
    sys.path[:] = list(request.get("sys_path") or sys.path)
    os.chdir(request.get("cwd") or ".")
    from pipelines.judging.worker import run_request

    def say(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    return run_request(request_file, out, say)


def _reap(children: dict[int, Path]) -> None:
    while children:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        out = children.pop(pid, None)
        if out is not None:
            staged = out / f".{EXIT_FILE}"
            staged.write_text(str(os.waitstatus_to_exitcode(status)))
            staged.rename(out / EXIT_FILE)


def _serve() -> None:
    """Fork a child per order line until the parent closes stdin; then kill them all."""
    # Ctrl-C and SIGTERM to the gate's process group are the gate's to handle (it kills
    # its judgements); the zygote leaves when the gate closes its stdin or dies.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _preload()
    zygote, children, buffer = os.getpid(), {}, b""
    stdin = sys.stdin.buffer.fileno()
    while True:
        ready, _, _ = select.select([stdin], [], [], 0.1)
        if ready:
            chunk = os.read(stdin, 65536)
            if not chunk:
                break
            buffer += chunk
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                order = json.loads(line)
                out = Path(order["out"])
                sys.stdout.flush()
                pid = os.fork()
                if pid == 0:
                    code = 70
                    try:
                        code = _child(Path(order["request"]), out, zygote)
                    finally:
                        sys.stdout.flush()
                        sys.stderr.flush()
                        os._exit(code)
                children[pid] = out
                sys.stdout.write(json.dumps({"pid": pid}) + "\n")
                sys.stdout.flush()
        _reap(children)
    for pid in list(children):
        with contextlib.suppress(OSError):
            os.killpg(pid, signal.SIGKILL)
    time.sleep(0.2)
    _reap(children)


if __name__ == "__main__":
    _serve()
