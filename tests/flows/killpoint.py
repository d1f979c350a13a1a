"""Run the real ``xai-gate`` CLI and signal it at a named moment of writing a verdict.

``python killpoint.py TAG NTH SIGNAL -- <xai-gate arguments>``, just before the NTH
write of model-version tag ``TAG``, so every tag written before it is in the registry:

* ``KILL``: the whole process group (the CLI and Prefect's temporary server) gets
  SIGKILL. A real kill: no ``finally``, hook or handler of the gate runs.
* ``TERM``: the CLI gets SIGTERM, as a worker or ``docker stop`` sends it; Prefect turns
  it into a crash of the flow run (its ``on_crashed`` hooks run) and exits by it.

Start it with ``start_new_session=True`` so a kill reaches only its group.
"""

from __future__ import annotations

import os
import signal
import sys


def main() -> None:
    split = sys.argv.index("--")
    tag, nth, how = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    from mlflow import MlflowClient

    original = MlflowClient.set_model_version_tag
    seen = {"writes": 0}

    def set_model_version_tag(self, name, version, key, value):  # type: ignore[no-untyped-def]
        if key == tag:
            seen["writes"] += 1
            if seen["writes"] == nth:
                sys.stdout.write(f"killpoint: SIG{how} before writing {key}\n")
                sys.stdout.flush()
                if how == "KILL":
                    os.killpg(os.getpgrp(), signal.SIGKILL)
                os.kill(os.getpid(), signal.SIGTERM)
        return original(self, name, version, key, value)

    MlflowClient.set_model_version_tag = set_model_version_tag  # type: ignore[method-assign]
    from flows.cli import app

    sys.argv = ["xai-gate", *sys.argv[split + 1 :]]
    app()


if __name__ == "__main__":
    main()
