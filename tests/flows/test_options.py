"""The gate's rule flags come from the policy schema: a new rule is one field."""

from __future__ import annotations

from pathlib import Path

import typer
from pydantic import Field, create_model
from typer.testing import CliRunner

from flows.cli import app
from flows.options import with_policy_options
from pipelines.policy import Checks, GatePolicy, HeatmapChecks, example_policy, policy_options


def _schema_with_a_new_threshold() -> type[GatePolicy]:
    """GatePolicy with one more field in checks.heatmaps, and nothing else written."""
    heatmaps = create_model(
        "ExtendedHeatmapChecks",
        __base__=HeatmapChecks,
        max_pointing_rate=(
            float,
            Field(1.0, ge=0.0, le=1.0, description="Upper bound on the pointing-game hit rate."),
        ),
    )
    checks = create_model("ExtendedChecks", __base__=Checks, heatmaps=(heatmaps, heatmaps()))
    return create_model("ExtendedPolicy", __base__=GatePolicy, checks=(checks, checks()))


def test_a_new_field_is_an_option_a_flag_and_a_line_of_the_example():
    schema = _schema_with_a_new_threshold()
    (option,) = [o for o in policy_options(schema) if o.name == "max_pointing_rate"]
    assert (
        option.key == "checks.heatmaps.max_pointing_rate" and option.flag == "--max-pointing-rate"
    )
    policy = schema.from_options(model="m", audit_set=Path("a.csv"), max_pointing_rate=0.2)
    assert policy.checks.heatmaps.max_pointing_rate == 0.2
    assert "max_pointing_rate: 1.0  # Upper bound on the pointing-game hit rate." in (
        example_policy(schema)
    )

    seen = {}

    def gate(**rules: object) -> None:
        seen.update(rules)

    command = typer.Typer()
    command.command()(with_policy_options(gate, schema=schema))
    result = CliRunner().invoke(command, ["--max-pointing-rate", "0.3", "--flag-mass", "0.6"])
    assert result.exit_code == 0, result.output
    assert seen["max_pointing_rate"] == 0.3 and seen["flag_mass"] == 0.6
    assert seen["max_spurious_mass"] is None  # unset: the schema's default applies
    help_text = CliRunner().invoke(command, ["--help"], env={"COLUMNS": "200"}).output
    assert "Upper bound on the pointing-game hit rate." in help_text


def test_every_policy_rule_is_a_gate_flag_with_its_description():
    help_text = CliRunner().invoke(app, ["gate", "--help"], env={"COLUMNS": "250"}).output
    for option in policy_options():
        assert option.flag in help_text, option.flag
        assert option.key in help_text, option.key


def test_rule_flags_reach_the_policy(tmp_path, monkeypatch):
    import flows.run

    captured = {}

    def fake_run_gate(model, version, audit_set=None, **kwargs):
        captured["policy"] = flows.run.gate_policy(
            model,
            audit_set,
            **{k: v for k, v in kwargs.items() if k in {o.name for o in policy_options()}},
        )
        raise typer.Exit(0)

    monkeypatch.setattr(flows.run, "run_gate", fake_run_gate)
    args = ["gate", "--version", "1", "--model", "m", "--audit-set", str(tmp_path / "a.csv")]
    extra = ["--method", "hirescam,gradcam", "--no-sanity", "--max-flip-rate", "0.3"]
    result = CliRunner().invoke(app, [*args, *extra, "--alias", "prod"])
    assert result.exit_code == 0, result.output
    policy = captured["policy"]
    assert policy.checks.heatmaps.methods == ("hirescam", "gradcam")
    assert not policy.sanity.enabled and policy.checks.counterfactual.max_flip_rate == 0.3
    assert policy.alias == "prod" and policy.checks.heatmaps.max_spurious_mass == 0.30


def test_rule_flags_beside_a_policy_file_are_named_as_ignored(tmp_path, monkeypatch):
    import flows.run
    from pipelines.policy import GatePolicy, write_policy

    policy = write_policy(GatePolicy(model="m", audit_set=tmp_path / "a.csv"), tmp_path / "p.yaml")
    seen = {}

    def fake_run_gate(model, version, audit_set=None, **kwargs):
        seen.update(kwargs, model=model)
        raise typer.Exit(0)

    monkeypatch.setattr(flows.run, "run_gate", fake_run_gate)
    args = ["gate", "--version", "1", "--policy", str(policy), "--method", "hirescam"]
    result = CliRunner().invoke(app, [*args, "--max-flip-rate", "0.3"])
    assert result.exit_code == 0, result.output
    assert "note: --method, --max-flip-rate ignored" in result.output
    assert seen["model"] == "m" and seen["policy_file"] == policy
    assert "max_flip_rate" not in seen  # the file's rules, untouched
