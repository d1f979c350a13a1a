"""The catalogue's fault cases, run for real: the CLI killed -9 at a named moment of writing
a verdict, two CLI gates at once, a crashed flow run. Each asserts the registry afterwards
(verdict tag, signature, alias, evidence run) and what the next gate does."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow import MlflowClient

from flows.sweep import ungated_versions
from pipelines.verdict.signing import verify_passed

pytestmark = pytest.mark.slow
SECRET = "fault-secret"
KILLPOINT = Path(__file__).with_name("killpoint.py")


def _cli_env(tmp_path: Path) -> dict[str, str]:
    """A user's CLI: Prefect's ephemeral mode with its own home, the signing secret set."""
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect-home"), "XAI_GATE_SECRET": SECRET}
    env.pop("PREFECT_API_URL", None)
    return env


def _gate(
    tmp_path: Path, policy: Path, *, kill_before: str | None = None, nth: int = 1, how="KILL"
):
    """``xai-gate gate`` in its own process (group), optionally signalled before a tag write
    (``tests/flows/killpoint.py``)."""
    args = ["gate", "--policy", str(policy), "--version", "1"]
    killpoint = [str(KILLPOINT), str(kill_before), str(nth), how, "--"]
    prefix = killpoint if kill_before else ["-m", "flows.cli"]
    return subprocess.run(
        [sys.executable, *prefix, *args], cwd=tmp_path, env=_cli_env(tmp_path),
        capture_output=True, text=True, timeout=600, start_new_session=True,
    )  # fmt: skip


@pytest.fixture(autouse=True)
def _signing(monkeypatch) -> None:
    """Every gate here signs (the CLI processes get the secret from ``_cli_env``)."""
    monkeypatch.setenv("XAI_GATE_SECRET", SECRET)


def test_killed_while_writing_a_first_verdict_it_stays_pending_and_is_gated_again(
    trained_pair, lesion_gate, tracking_uri, tmp_path, registry
):
    """Killed after the run, reason, policy hash and time are written, before the signature."""
    model = "killed-first-verdict"
    lesion_gate.register(trained_pair.clean, model)
    policy = lesion_gate.policy(tmp_path, model)
    killed = _gate(tmp_path, policy, kill_before="xai_gate.signature")
    assert killed.returncode == -9, killed.stdout + killed.stderr
    assert "killpoint: SIGKILL before writing xai_gate.signature" in killed.stdout
    state = registry(model, "1")
    assert state.verdict == "pending" and state.alias_holder is None
    assert "xai_gate.signature" not in state.tags and not state.signature_verifies
    assert verify_passed(SECRET.encode(), tags=state.tags, **state.identity)
    assert "xai_gate.history" not in state.tags  # the attempt never finished
    cut_off_run = state.run_id
    assert MlflowClient().get_run(cut_off_run).data.metrics["gradcam.spurious_mass"] >= 0
    assert ungated_versions(model) == ["1"]  # the sweeper takes it again

    again = _gate(tmp_path, policy)
    assert again.returncode == 0, again.stdout + again.stderr
    assert f"{model} v1 passed" in again.stdout and "reused" not in again.stdout
    state = registry(model, "1")
    assert (state.verdict, state.alias_holder, state.signature_verifies) == ("passed", "1", True)
    assert state.run_id not in ("", cut_off_run)
    assert ungated_versions(model) == []


def test_killed_before_the_verdict_tag_over_an_old_pass_leaves_a_pass_that_does_not_verify(
    trained_pair, lesion_gate, tracking_uri, tmp_path, registry
):
    """The shortcut model passed a lax policy (and took the alias); gated under the strict one,
    it is killed after the new 'blocked' signature is written but before the verdict tag."""
    model = "killed-over-a-pass"
    lesion_gate.register(trained_pair.shortcut, model)
    lax = lesion_gate.policy(
        tmp_path / "lax",
        model,
        rules={
            "max_spurious_mass": 1.0,
            "max_flagged_fraction": 1.0,
            "counterfactual": False,
            "on_uninformative": "warn",
        },
    )
    strict = lesion_gate.policy(tmp_path / "strict", model)
    first = _gate(tmp_path, lax)
    assert first.returncode == 0, first.stdout + first.stderr
    passed = registry(model, "1")
    assert (passed.verdict, passed.alias_holder, passed.signature_verifies) == ("passed", "1", True)

    killed = _gate(tmp_path, strict, kill_before="xai_gate.verdict", nth=1)
    assert killed.returncode == -9, killed.stdout + killed.stderr
    state = registry(model, "1")
    # The old verdict tag beside the new run, time and signature: they do not belong together,
    # so the signature does not verify and a guarded registry refuses the alias.
    assert state.verdict == "passed" and state.run_id != passed.run_id
    assert not state.signature_verifies
    problem = verify_passed(SECRET.encode(), tags=state.tags, **state.identity)
    assert problem is not None and "does not verify" in problem
    assert state.alias_holder == "1"  # what it held before the gate began: nothing moved it

    again = _gate(tmp_path, strict)  # not reused: the tags do not verify
    assert again.returncode == 1, again.stdout + again.stderr
    assert f"{model} v1 blocked" in again.stdout and "reused" not in again.stdout
    state = registry(model, "1")
    assert (state.verdict, state.signature_verifies) == ("blocked", True)


def test_two_cli_gates_at_once_give_one_signed_verdict_and_one_evidence_run(
    trained_pair, lesion_gate, tracking_uri, tmp_path, registry
):
    model = "two-at-once"
    lesion_gate.register(trained_pair.clean, model)
    policy = lesion_gate.policy(tmp_path, model)
    command = [sys.executable, "-m", "flows.cli", "gate", "--policy", str(policy), "--version", "1"]
    env = _cli_env(tmp_path)
    options = {"stdout": subprocess.PIPE, "stderr": subprocess.STDOUT, "text": True}
    gates = [
        subprocess.Popen(command, cwd=tmp_path, env=env, start_new_session=True, **options)
        for _ in range(2)
    ]
    outputs = [gate.communicate(timeout=600)[0] for gate in gates]
    assert [gate.returncode for gate in gates] == [0, 0], outputs
    assert sum("reused" in output for output in outputs) == 1, outputs  # one gated, one waited
    state = registry(model, "1")
    assert (state.verdict, state.alias_holder, state.signature_verifies) == ("passed", "1", True)
    experiment = MlflowClient().get_experiment_by_name("xai-gate")
    runs = MlflowClient().search_runs([experiment.experiment_id])
    assert [run.info.run_id for run in runs] == [state.run_id]
    history = json.loads(state.tags["xai_gate.history"])
    assert [entry["verdict"] for entry in history] == ["passed"]


def test_a_gate_stopped_by_sigterm_crashes_and_its_on_crashed_hook_records_error(
    trained_pair, lesion_gate, tracking_uri, tmp_path, registry
):
    """SIGTERM (a worker or ``docker stop``) just before the verdict is written: Prefect marks the
    flow run crashed, no gate code catches it, and the on_crashed hook must leave 'error'."""
    model = "terminated-model"
    lesion_gate.register(trained_pair.clean, model)
    policy = lesion_gate.policy(tmp_path, model)
    stopped = _gate(tmp_path, policy, kill_before="xai_gate.verdict", how="TERM")
    output = stopped.stdout + stopped.stderr
    # 128 + SIGTERM, one line; and the run returned at all: Prefect's temporary server, which
    # shares the output pipes, was stopped with the CLI instead of being left running.
    assert stopped.returncode == 143, output
    assert "terminated: xai-gate stopped" in stopped.stderr
    assert "killpoint: SIGTERM before writing xai_gate.verdict" in stopped.stdout
    assert "Running hook 'record_error_verdict' in response to entering state 'Crashed'" in output
    state = registry(model, "1")
    assert (state.verdict, state.alias_holder, state.run_id) == ("error", None, "")
    history = json.loads(state.tags["xai_gate.history"])
    assert [entry["verdict"] for entry in history] == ["error"]
    assert ungated_versions(model) == []  # recorded: an error, gated again by the next gate

    again = _gate(tmp_path, policy)
    assert again.returncode == 0, again.stdout + again.stderr
    state = registry(model, "1")
    assert (state.verdict, state.alias_holder, state.signature_verifies) == ("passed", "1", True)
