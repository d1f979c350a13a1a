"""`xai-gate policy init | check`: a commented example, and errors with key and line."""

from __future__ import annotations

from typer.testing import CliRunner

from flows.cli import app


def test_init_writes_an_example_that_check_accepts(tmp_path):
    path = tmp_path / "p.yaml"
    written = CliRunner().invoke(app, ["policy", "init", str(path)])
    assert written.exit_code == 0 and path.read_text().startswith("# xai-gate policy")
    again = CliRunner().invoke(app, ["policy", "init", str(path)])
    assert again.exit_code == 2 and "exists" in again.output
    checked = CliRunner().invoke(app, ["policy", "check", str(path)])
    assert checked.exit_code == 0, checked.output
    assert "valid; model lesion-classifier, protected champion" in checked.output
    assert "(audit set not found yet)" in checked.output


def test_check_names_the_bad_key_and_its_line(tmp_path):
    path = tmp_path / "p.yaml"
    CliRunner().invoke(app, ["policy", "init", str(path)])
    text = path.read_text()
    line = text[: text.index("max_flip_rate: 0.2")].count("\n") + 1  # the first: counterfactual
    path.write_text(text.replace("max_flip_rate: 0.2", "max_flip_rate: 2", 1))
    result = CliRunner().invoke(app, ["policy", "check", str(path)])
    assert result.exit_code == 2
    assert f"p.yaml:{line} checks.counterfactual.max_flip_rate: Input should be less than or" in (
        result.output
    )


def test_gate_needs_a_policy_or_a_model_and_an_audit_set():
    result = CliRunner().invoke(app, ["gate", "--version", "1"])
    assert result.exit_code == 2
    assert "give --policy FILE, or both --model and --audit-set" in result.output


def test_a_policy_that_requires_signing_refuses_to_run_without_the_secret(
    tmp_path, monkeypatch, tracking_uri, registry
):
    from mlflow import MlflowClient

    monkeypatch.delenv("XAI_GATE_SECRET", raising=False)
    client = MlflowClient()
    run = client.create_run(client.create_experiment("signing"))
    client.create_registered_model("lesion-classifier")
    client.create_model_version(
        "lesion-classifier", source=f"{run.info.artifact_uri}/model", run_id=run.info.run_id
    )
    path = tmp_path / "p.yaml"
    CliRunner().invoke(app, ["policy", "init", str(path)])
    path.write_text(path.read_text().replace("require_signature: false", "require_signature: true"))
    result = CliRunner().invoke(
        app, ["gate", "--policy", str(path), "--version", "1", "--tracking-uri", tracking_uri]
    )
    assert result.exit_code == 2
    assert "requires signed verdicts (require_signature: true) but XAI_GATE_SECRET is not set" in (
        result.output
    )
    state = registry("lesion-classifier", "1")  # no unsigned verdict, no alias, no run
    assert (state.verdict, state.alias_holder, state.tags) == (None, None, {})
    assert [r.info.run_id for r in client.search_runs([run.info.experiment_id])] == [
        run.info.run_id
    ]


def _example(tmp_path):
    path = tmp_path / "p.yaml"
    CliRunner().invoke(app, ["policy", "init", str(path)])
    return path, path.read_text()


def test_thresholds_are_decimal_numbers_not_booleans_or_hex(tmp_path):
    path, text = _example(tmp_path)
    line = text[: text.index("max_spurious_mass: 0.3")].count("\n") + 1
    for written, expected in (
        ("true", "must be a number, not true"),
        ("false", "must be a number, not false"),
        ("0x1", "'0x1' is not a decimal number"),
        ("1_000", "'1_000' is not a decimal number"),
        ("1:30", "'1:30' is not a decimal number"),
        ("017", "'017' is an octal number"),
    ):
        path.write_text(text.replace("max_spurious_mass: 0.3", f"max_spurious_mass: {written}"))
        result = CliRunner().invoke(app, ["policy", "check", str(path)])
        assert result.exit_code == 2, (written, result.output)
        assert f"p.yaml:{line}" in result.output and expected in result.output, result.output
    path.write_text(text.replace("max_spurious_mass: 0.3", "max_spurious_mass: 1"))
    assert CliRunner().invoke(app, ["policy", "check", str(path)]).exit_code == 0


def test_a_policy_that_can_block_nothing_is_said_loudly_and_exits_1(tmp_path):
    from pipelines.policy import load_policy

    path, text = _example(tmp_path)
    for key in ("max_spurious_mass", "max_flagged_fraction", "max_flip_rate", "max_spurious_lift"):
        text = "\n".join(
            line.split(":")[0] + ": 1.0" if line.strip().startswith(f"{key}:") else line
            for line in text.splitlines()
        )
    path.write_text(text)  # every threshold at its maximum, the sanity bound aside
    assert load_policy(path).blocking_checks() == ("sanity correlation <= 0.5",)
    off = text.replace("enabled: true", "enabled: false")  # counterfactual and sanity off
    path.write_text(off)
    assert load_policy(path).blocking_checks() == ()
    result = CliRunner().invoke(app, ["policy", "check", str(path)])
    assert result.exit_code == 1
    assert "valid; model" in result.output and "THIS POLICY CAN BLOCK NOTHING" in result.output
    # One threshold below its maximum is enough to block something.
    path.write_text(off.replace("max_spurious_mass: 1.0", "max_spurious_mass: 0.9", 1))
    assert load_policy(path).blocking_checks() == ("gradcam.spurious_mass <= 0.9",)
    assert CliRunner().invoke(app, ["policy", "check", str(path)]).exit_code == 0
