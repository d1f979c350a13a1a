"""Run the gate flow and turn its final state into an outcome and an exit code."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from flows._console import hide_expected_tracebacks
from flows.xai_gate import EXPECTED_ERRORS, GateOutcome, xai_gate
from pipelines.gate import Verdict

__all__ = ["EXIT_CODES", "dask_runner", "exit_code", "run_gate"]

EXIT_CODES = {Verdict.PASSED: 0, Verdict.BLOCKED: 1, Verdict.ERROR: 2, Verdict.INCONCLUSIVE: 3}


def run_gate(
    model_name: str,
    version: str,
    audit_set: Path | None = None,
    *,
    task_runner: str = "threads",
    dask_address: str | None = None,
    dask_workers: int = 2,
    **options: Any,
) -> GateOutcome:
    """Run ``xai_gate`` and return its outcome; an unexpected crash becomes ``error``.

    ``options`` are the flow's keyword arguments, ``policy_file`` among them.
    ``task_runner="dask"`` runs the stages on Dask: on the cluster at
    ``dask_address`` (``tcp://host:8786``), or on a local cluster of
    ``dask_workers`` processes; the image audit is then sharded over the
    workers unless ``shards`` says otherwise.
    """
    hide_expected_tracebacks(EXPECTED_ERRORS)
    manifest = Path(audit_set) if audit_set is not None else None
    gate = xai_gate
    if task_runner == "dask":
        gate = xai_gate.with_options(task_runner=dask_runner(dask_address, dask_workers))
        options.setdefault("shards", dask_workers)
    elif task_runner != "threads":
        raise ValueError(f"task_runner must be 'threads' or 'dask', got {task_runner!r}")
    state = gate(model_name, str(version), manifest, return_state=True, **options)
    try:
        result = state.result(raise_on_failure=False)
    except Exception as exc:  # the state carries no result: a crash
        result = exc
    if isinstance(result, GateOutcome):
        return result
    message = (
        f"{type(result).__name__}: {result}" if isinstance(result, BaseException) else state.message
    )
    return GateOutcome(model_name, str(version), Verdict.ERROR, [message or "flow run crashed"])


def dask_runner(address: str | None, workers: int) -> Any:
    """prefect-dask's runner: join ``address``, or start a local cluster of ``workers``.

    Local workers are processes with one thread each and their torch threads
    set to their share of the cores, so they do not fight over them.
    """
    from prefect_dask import DaskTaskRunner

    if address:
        return DaskTaskRunner(address=address)
    threads = max(1, (os.cpu_count() or 1) // max(1, workers))
    return DaskTaskRunner(
        cluster_kwargs={
            "n_workers": workers,
            "threads_per_worker": 1,
            "processes": True,
            "dashboard_address": None,
            "env": {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)},
        }
    )


def exit_code(outcome: GateOutcome) -> int:
    return EXIT_CODES[outcome.verdict]
