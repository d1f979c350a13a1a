"""What every benchmark shares: timing, peak memory in a fresh process, and the result rows."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

__all__ = [
    "STAGE_CLOCK",
    "Row",
    "interleaved_medians",
    "median_seconds",
    "peak_rss_mb",
    "print_rows",
    "rows_to_json",
]

REPO = Path(__file__).resolve().parents[1]

STAGE_CLOCK = """
import json, time
clock = time.perf_counter()
seconds = {}
def lap(name):
    global clock
    now = time.perf_counter()
    seconds[name] = now - clock
    clock = now
"""
"""The head of a script that times its stages with ``lap(name)``; it prints ``seconds`` last."""


@dataclass(frozen=True)
class Row:
    """One measured line: ``value`` in ``unit``, and its ratio to the anchor named ``versus``."""

    benchmark: str
    name: str
    value: float
    unit: str
    ratio: float | None = None
    versus: str = ""
    goal: str = ""
    met: bool | None = None


def median_seconds(run: Callable[[], object], *, repeats: int, warmup: int = 1) -> float:
    """Median wall time of ``run`` over ``repeats`` calls, after ``warmup`` untimed ones."""
    for _ in range(warmup):
        run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def interleaved_medians(
    runs: dict[str, Callable[[], object]], *, repeats: int, warmup: int = 1
) -> dict[str, float]:
    """Median wall time of each run, timed round-robin so machine drift hits all alike."""
    for run in runs.values():
        for _ in range(warmup):
            run()
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def peak_rss_mb(module: str, *args: str) -> dict[str, float]:
    """Run ``python -m module args`` in a fresh process; it prints one JSON line last.

    A fresh process per case, so no case inherits another's peak. The child
    reports its own peak resident memory next to its baseline.
    """
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{module} {' '.join(args)} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def current_peak_mb() -> float:
    """This process's peak resident memory (``VmHWM``).

    Not ``ru_maxrss``: Linux keeps that across ``execve``, so a child started
    by a big parent would report the parent's peak.
    """
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024  # kB
    raise RuntimeError("no VmHWM in /proc/self/status: peak memory needs Linux")


def print_rows(rows: Sequence[Row], title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for column in ("benchmark", "measure", "value", "ratio", "goal", "met"):
        table.add_column(column, justify="right" if column in {"value", "ratio"} else "left")
    for row in rows:
        ratio = "" if row.ratio is None else f"{row.ratio:.2f}x {row.versus}"
        met = "" if row.met is None else ("yes" if row.met else "NO")
        table.add_row(row.benchmark, row.name, f"{row.value:.3f} {row.unit}", ratio, row.goal, met)
    Console(width=160).print(table)


def rows_to_json(rows: Sequence[Row], path: Path) -> None:
    path.write_text(json.dumps([asdict(row) for row in rows], indent=2))
