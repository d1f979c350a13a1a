"""``python -m benchmarks`` (``make bench``): every benchmark, one table of ratios.

``--quick`` runs each at tiny sizes (a smoke test, not a measurement);
``--json PATH`` also writes the rows.
"""

from __future__ import annotations

import argparse
import importlib
from pathlib import Path

from benchmarks._common import print_rows, rows_to_json
from pipelines.offline import apply_offline_defaults

BENCHMARKS = (
    "gradcam_speed",
    "gradcam_memory",
    "precision_speed",
    "attention_speed",
    "scaling",
    "gate_overhead",
    "cold_start",
    "shortcut_zoo",
    "real_scale",
    "webhook_latency",
)


def main() -> None:
    apply_offline_defaults()  # before any benchmark imports a library, or starts a child
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run")
    parser.add_argument("--json", type=Path, help="also write the rows to this file")
    parser.add_argument("names", nargs="*", help="default: all")
    args = parser.parse_args()
    rows = []
    for name in args.names or BENCHMARKS:
        found = importlib.import_module(f"benchmarks.{name}").run(quick=args.quick)
        print_rows(found, name)  # as each finishes: a later failure loses nothing
        rows += found
    print_rows(rows, "xai-gate benchmarks" + (" (quick: smoke sizes)" if args.quick else ""))
    if args.json:
        rows_to_json(rows, args.json)


if __name__ == "__main__":
    main()
