"""Environment defaults: no library phones home (telemetry, analytics, hub downloads), and
Prefect's temporary server gets time to start on a small machine."""

from __future__ import annotations

import os

__all__ = ["OFFLINE_ENV", "apply_offline_defaults"]

OFFLINE_ENV = {
    "DO_NOT_TRACK": "1",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "GX_ANALYTICS_ENABLED": "false",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    # Quiet logs: no per-download progress bars in a gate's output.
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    # Prefect's temporary server migrates a fresh database on first start; on a small or busy
    # machine that takes longer than its default 20 s wait, and the gate would die for it.
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
}


def apply_offline_defaults() -> None:
    """Set each variable unless the caller already chose a value."""
    for key, value in OFFLINE_ENV.items():
        os.environ.setdefault(key, value)
