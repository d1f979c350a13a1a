"""CLI cold start: ``xai-gate --help`` must not import torch, MLflow, Prefect or GX.

Reports the median wall time of ``xai-gate --help`` in a fresh interpreter
beside the time of bare ``python -c pass`` and of importing each heavy
library alone, and which heavy modules the help run imported (none).

    python -m benchmarks.cold_start [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from functools import partial

from benchmarks._common import REPO, Row, median_seconds, print_rows

__all__ = ["HEAVY", "help_imports", "run"]

HEAVY = ("torch", "mlflow", "prefect", "great_expectations", "transformers", "matplotlib")

_HELP = (
    "import sys, json\n"
    "from typer.testing import CliRunner\n"
    "from flows.cli import app\n"
    "result = CliRunner().invoke(app, ['--help'])\n"
    "assert result.exit_code == 0, result.output\n"
    f"print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))\n"
)


def _python(code: str) -> str:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, check=True
    )
    return done.stdout


def help_imports() -> list[str]:
    """The heavy modules a fresh ``xai-gate --help`` imports."""
    return json.loads(_python(_HELP).strip().splitlines()[-1])


def run(*, quick: bool = False) -> list[Row]:
    repeats = 1 if quick else 5
    bare = median_seconds(partial(_python, "pass"), repeats=repeats)
    cli = median_seconds(partial(_python, _HELP), repeats=repeats)
    imported = help_imports()
    rows = [
        Row("cold_start", "python -c pass", bare, "s"),
        Row("cold_start", "xai-gate --help", cli, "s", cli / bare, "python",
            "imports none of " + "/".join(HEAVY[:4]), not imported),
    ]  # fmt: skip
    for module in HEAVY[:4]:
        seconds = median_seconds(partial(_python, f"import {module}"), repeats=repeats)
        rows.append(Row("cold_start", f"import {module} (avoided)", seconds, "s"))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one repeat: a smoke run")
    print_rows(run(quick=parser.parse_args().quick), "CLI cold start")


if __name__ == "__main__":
    main()
