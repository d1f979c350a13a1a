"""The judging worker's environment carries no credential; a dying worker is a clear error."""

from __future__ import annotations

import pytest

from pipelines.judging.sandbox import worker_environment

PARENT = {
    "PATH": "/usr/bin",
    "HOME": "/home/gate",
    "LANG": "C.UTF-8",
    "HF_HUB_OFFLINE": "1",
    "OMP_NUM_THREADS": "2",
    "MLFLOW_ALLOW_PICKLE_DESERIALIZATION": "true",
    "XAI_GATE_MAX_PIXELS": "1000000",
    "XAI_GATE_SECRET": "the-signing-key",
    "XAI_GATE_WEBHOOK_SECRET": "the-webhook-key",
    "MLFLOW_TRACKING_URI": "http://127.0.0.1:5000",
    "MLFLOW_TRACKING_USERNAME": "admin",
    "MLFLOW_TRACKING_PASSWORD": "hunter2",
    "MLFLOW_TRACKING_TOKEN": "t0ken",
    "MLFLOW_REGISTRY_URI": "http://127.0.0.1:5000",
    "PREFECT_API_URL": "http://127.0.0.1:4200/api",
    "PREFECT_API_KEY": "pnu_x",
    "AWS_SECRET_ACCESS_KEY": "aws",
    "HF_TOKEN": "hf_x",
    "XAI_GATE_API_KEY": "k",
    "TORCH_AUTH_HEADER": "Bearer x",
    "DATABASE_URL": "postgresql://u:p@db/x",
}


def test_the_worker_keeps_what_a_model_needs_and_no_credential():
    env = worker_environment(PARENT)
    kept = set(env) - {"PYTHONPATH"}
    assert kept == {
        "PATH",
        "HOME",
        "LANG",
        "HF_HUB_OFFLINE",
        "OMP_NUM_THREADS",
        "MLFLOW_ALLOW_PICKLE_DESERIALIZATION",
        "XAI_GATE_MAX_PIXELS",
    }
    for value in ("the-signing-key", "the-webhook-key", "hunter2", "t0ken", "aws", "hf_x"):
        assert value not in env.values()


@pytest.mark.parametrize(
    "name",
    ["MY_SECRET", "ghp_token", "DB_PASSWORD", "SERVICE_KEY", "XAI_GATE_SIGNING_KEY", "OAUTH_X"],
)
def test_any_name_that_looks_like_a_credential_is_dropped_whatever_its_prefix(name):
    assert name not in worker_environment({name: "x", **{f"XAI_GATE_{name}": "x"}})
    assert f"XAI_GATE_{name}" not in worker_environment({f"XAI_GATE_{name}": "x"})


def test_a_worker_without_capabilities_cannot_read_the_gates_environ_or_memory():
    """Root included: a non-dumpable process is open only to CAP_SYS_PTRACE, which is gone."""
    import os

    from pipelines.judging import sandbox

    sandbox._prctl(sandbox._PR_SET_DUMPABLE, 0)  # what the gate does before its first fork
    parent = os.getpid()
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - the child reports through the pipe
        answer = "crashed"
        try:
            sandbox.drop_privileges()
            seen = []
            for name in ("environ", "mem"):
                try:
                    with open(f"/proc/{parent}/{name}", "rb") as handle:
                        handle.read(1)
                    seen.append(f"{name}:read")
                except OSError as exc:
                    seen.append(f"{name}:{exc.errno}")
            caps = sandbox._capabilities()
            seen.append(f"caps:{caps['CapEff']}:{caps['CapPrm']}:{caps['CapBnd']}")
            answer = " ".join(seen)
        finally:
            os.write(write_end, answer.encode())
            os._exit(0)
    os.close(write_end)
    os.waitpid(child, 0)
    with os.fdopen(read_end, "rb") as handle:
        answer = handle.read().decode()
    assert answer == "environ:13 mem:13 caps:0:0:0"


def test_commands_that_run_a_model_in_process_refuse_beside_the_gates_secrets():
    from pipelines.judging.contract import JudgingError
    from pipelines.judging.sandbox import refuse_beside_secrets

    refuse_beside_secrets("xai-gate discover", {"PATH": "/bin", "SSH_AUTH_SOCK": "/tmp/a"})
    with pytest.raises(JudgingError) as refused:
        refuse_beside_secrets("xai-gate discover", {"XAI_GATE_SECRET": "k"})
    assert str(refused.value).startswith(
        "xai-gate discover runs the model in this process, so it refuses to while "
        "XAI_GATE_SECRET is set"
    )


def test_discover_refuses_while_the_signing_secret_is_set(monkeypatch):
    from flows.discover import run_discover
    from pipelines.judging.contract import JudgingError

    monkeypatch.setenv("XAI_GATE_SECRET", "k")
    with pytest.raises(JudgingError, match="xai-gate discover runs the model in this process"):
        run_discover("any-model", "1", "no/such/manifest.csv")
