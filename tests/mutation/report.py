"""``make mutation``'s verdict: the mutation score per module, and every survivor explained.

Reads ``mutmut results --all true`` after ``mutmut run``. A mutant that survived is
a change to the safety logic that no test notices; it fails this report unless
``equivalent.toml`` (beside this file) lists it with the reason it cannot change
behaviour. Listed mutants that no longer exist or are now killed are reported as
stale, so the list cannot rot. Run from the repository root.
"""

from __future__ import annotations

import subprocess
import sys
import tomllib
from collections import Counter, defaultdict
from pathlib import Path

EQUIVALENT = Path(__file__).with_name("equivalent.toml")
CAUGHT = {"killed", "timeout", "caught by type check"}


def _results() -> dict[str, str]:
    """Mutant name -> status, for every mutant of the last run."""
    done = subprocess.run(
        [sys.executable, "-m", "mutmut", "results", "--all", "true"],
        capture_output=True,
        text=True,
        check=True,
    )
    statuses = {}
    for line in done.stdout.splitlines():
        name, sep, status = line.strip().rpartition(": ")
        if sep and "__mutmut_" in name:
            statuses[name] = status
    return statuses


def _module(mutant: str) -> str:
    return mutant.split("__mutmut_")[0].rsplit(".", 1)[0]


def main() -> int:
    statuses = _results()
    if not statuses:
        print("no mutation results: run `mutmut run` first (`make mutation` does)")
        return 2
    equivalent: dict[str, dict[str, str]] = tomllib.loads(EQUIVALENT.read_text())
    by_module: dict[str, Counter[str]] = defaultdict(Counter)
    unexplained = []
    for mutant, status in sorted(statuses.items()):
        counts = by_module[_module(mutant)]
        counts["mutants"] += 1
        if status in CAUGHT:
            counts["killed"] += 1
        elif mutant in equivalent and status == "survived":
            counts["equivalent"] += 1
        elif status == "not checked":  # the run was stopped before it reached this one
            counts["not run"] += 1
            unexplained.append(f"{mutant}: {status}")
        else:
            counts["unexplained"] += 1
            unexplained.append(f"{mutant}: {status}")
    stale = [m for m in equivalent if statuses.get(m) != "survived"]

    print(
        "| module | mutants | run | killed | equivalent (listed) | survived | score of those run |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for module, counts in sorted(by_module.items()):
        run = counts["mutants"] - counts["not run"]
        judged = run - counts["equivalent"]
        score = 100 * counts["killed"] / judged if judged else 100.0
        print(
            f"| `{module}` | {counts['mutants']} | {run} | {counts['killed']} | "
            f"{counts['equivalent']} | {counts['unexplained']} | {score:.1f} % |"
        )
    for line in unexplained:
        print(f"not caught: {line}  (see: mutmut show {line.split(':')[0]})")
    for mutant in stale:
        print(f"stale entry in {EQUIVALENT.name}: {mutant} is {statuses.get(mutant, 'gone')}")
    return 1 if unexplained or stale else 0


if __name__ == "__main__":
    sys.exit(main())
