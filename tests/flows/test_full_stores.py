"""A full artifact store or tracking database is one line naming it, never a traceback.

Each store lives on a small tmpfs of its own, filled to the last byte before the gate.
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from flows.run import run_gate
from pipelines.tracking.config import EXPERIMENT
from pipelines.verdict.decision import Verdict

pytestmark = pytest.mark.slow
MODEL = "full-store-model"


@contextlib.contextmanager
def _small_disk(folder: Path, size: str = "64m") -> Iterator[Path]:
    folder.mkdir(parents=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        if os.environ.get("CI") == "true":
            pytest.fail(f"a tmpfs is required under CI=true: {mounted.stderr.strip()}")
        pytest.skip(f"SKIPPED LOUDLY: cannot mount a tmpfs here ({mounted.stderr.strip()})")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def _fill(disk: Path) -> None:
    """Write until the device refuses another byte."""
    descriptor = os.open(disk / "filler", os.O_WRONLY | os.O_CREAT)
    try:
        while True:
            os.write(descriptor, b"\0" * 65536)
    except OSError:
        pass
    try:
        while True:
            os.write(descriptor, b"\0")
    except OSError:
        pass
    os.close(descriptor)


def _use_store(uri: str, folder: Path, monkeypatch) -> None:
    monkeypatch.chdir(folder)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment("tests")


def test_a_full_artifact_store_is_named_as_such(
    trained_pair, lesion_gate, tmp_path, monkeypatch, caplog
):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    _use_store(uri, tmp_path, monkeypatch)
    lesion_gate.register(trained_pair.clean, MODEL)
    policy = lesion_gate.policy(tmp_path, MODEL)
    with _small_disk(tmp_path / "artifact-disk") as disk:
        mlflow.create_experiment(EXPERIMENT, artifact_location=str(disk))
        _fill(disk)
        with caplog.at_level(logging.INFO):
            outcome = run_gate(MODEL, "1", policy_file=str(policy))
    assert outcome.verdict is Verdict.ERROR
    assert outcome.reasons == [
        f"could not log the evidence: the MLflow artifact store {disk} is full (no space left "
        "on device): free space there or point the experiment's artifacts elsewhere"
    ]
    assert "Traceback" not in caplog.text
    tags = MlflowClient().get_model_version(MODEL, "1").tags
    assert tags["xai_gate.verdict"] == "error"
    with pytest.raises(MlflowException):
        MlflowClient().get_model_version_by_alias(MODEL, "champion")


def test_a_full_tracking_database_is_named_as_such(
    trained_pair, lesion_gate, tmp_path, monkeypatch, caplog
):
    with _small_disk(tmp_path / "db-disk") as disk:
        uri = f"sqlite:///{disk / 'mlflow.db'}"
        _use_store(uri, tmp_path, monkeypatch)
        lesion_gate.register(trained_pair.clean, MODEL)
        policy = lesion_gate.policy(tmp_path, MODEL)
        _fill(disk)
        with caplog.at_level(logging.INFO):
            outcome = run_gate(MODEL, "1", policy_file=str(policy))
        assert outcome.verdict is Verdict.ERROR
        (reason,) = outcome.reasons
        assert f"the MLflow tracking database {uri} is full" in reason, reason
        assert "\n" not in reason and "Traceback" not in caplog.text
        assert "sqlalchemy" not in reason.lower()
        (disk / "filler").unlink()  # room again: nothing was promoted
        with pytest.raises(MlflowException):
            MlflowClient().get_model_version_by_alias(MODEL, "champion")
        mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'other.db'}")  # let go of the disk
