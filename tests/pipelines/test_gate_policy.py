"""The one policy: YAML with line-numbered errors, and everything derived from it."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipelines.gate_policy import EXAMPLE_POLICY, GatePolicy, PolicyError, load_policy
from pipelines.policy import AuditPlan, DiscoveryPlan, Thresholds

POLICIES = Path(__file__).parents[2] / "pipelines" / "policies"


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(text)
    return path


def test_the_example_loads_and_maps_onto_thresholds_and_plan(tmp_path):
    policy = load_policy(_write(tmp_path, EXAMPLE_POLICY))
    assert policy.model == "lesion-classifier" and policy.alias == "champion"
    assert policy.audit_set == tmp_path / "audit" / "manifest.csv"  # relative to the file
    assert policy.thresholds() == Thresholds()  # the example states the defaults
    assert policy.plan() == AuditPlan()
    assert policy.inconclusive == "hold" and policy.approval is False


def test_shipped_example_policies_are_valid():
    image = load_policy(POLICIES / "lesion-classifier.yaml")
    text = load_policy(POLICIES / "review-classifier.yaml")
    assert image.model == "lesion-classifier" and image.audit_set.name == "manifest.csv"
    assert text.model == "review-classifier" and text.modality == "text"
    assert not text.sanity.enabled


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            ("max_spurious_mass: 0.30", "max_spurious_mass: 3"),
            r"policy.yaml:13 checks.heatmaps.max_spurious_mass: Input should be less than or "
            "equal to 1",
        ),
        (
            ("flag_mass: 0.50", "flag_mass: 0.50\n    typo_key: 1"),
            r"policy.yaml:16 checks.heatmaps.typo_key: Extra inputs are not permitted",
        ),
        (
            ("methods: [gradcam, layercam]", "methods: [gradcam, scorecam]"),
            r"policy.yaml:11 checks.heatmaps.methods: Value error, unknown method\(s\) "
            r"\['scorecam'\]",
        ),
        (
            ("inconclusive: hold", "inconclusive: maybe"),
            r"policy.yaml:32 inconclusive: Input should be 'hold' or 'block'",
        ),
        (
            ("max_suspicion: 0.50", "max_suspicion: 2"),
            r"policy.yaml:22 checks.discovery.max_suspicion: Input should be less than or equal",
        ),
        (
            ("model: lesion-classifier", "modell: lesion-classifier"),
            r"policy.yaml:4 modell: Extra inputs",
        ),
    ],
)
def test_errors_name_the_key_and_its_line(tmp_path, edit, message):
    old, new = edit
    assert old in EXAMPLE_POLICY
    with pytest.raises(PolicyError, match=message):
        load_policy(_write(tmp_path, EXAMPLE_POLICY.replace(old, new)))


def test_missing_key_not_yaml_and_missing_file_are_clear(tmp_path):
    with pytest.raises(PolicyError, match=r"model: Field required"):
        load_policy(_write(tmp_path, "audit_set: a.csv\n"))
    with pytest.raises(PolicyError, match="not valid YAML"):
        load_policy(_write(tmp_path, "model: [unclosed\n"))
    with pytest.raises(PolicyError, match="a policy is a mapping"):
        load_policy(_write(tmp_path, "- just a list\n"))
    with pytest.raises(PolicyError, match="policy file not found"):
        load_policy(tmp_path / "nope.yaml")


def test_metric_thresholds_mirror_the_policy_and_gate_mlflow_validation(tmp_path):
    from mlflow import validate_evaluation_results
    from mlflow.models.evaluation import EvaluationResult
    from mlflow.models.evaluation.validation import ModelValidationFailedException

    policy = load_policy(_write(tmp_path, EXAMPLE_POLICY))
    thresholds = policy.metric_thresholds()
    assert {name: t.threshold for name, t in thresholds.items()} == {
        "gradcam.spurious_mass": 0.30,
        "gradcam.flagged_fraction": 0.10,
        "counterfactual.removal_flip_rate": 0.20,
        "counterfactual.spurious_score": 0.50,
        "sanity.final_spearman": 0.50,
    }
    assert all(t.greater_is_better is False for t in thresholds.values())
    clean = {
        "gradcam.spurious_mass": 0.04,
        "gradcam.flagged_fraction": 0.0,
        "counterfactual.removal_flip_rate": 0.0,
        "counterfactual.spurious_score": 0.18,
        "sanity.final_spearman": -0.1,
    }
    validate_evaluation_results(thresholds, EvaluationResult(clean, {}))  # no exception
    shortcut = clean | {"gradcam.spurious_mass": 0.57, "counterfactual.removal_flip_rate": 0.98}
    with pytest.raises(ModelValidationFailedException, match=r"gradcam\.spurious_mass"):
        validate_evaluation_results(thresholds, EvaluationResult(shortcut, {}))
    text = policy.metric_thresholds(text=True)
    assert "saliency.spurious_mass" in text and "text_counterfactual.removal_flip_rate" in text
    assert "sanity.final_spearman" not in text


def test_discovery_maps_onto_plan_thresholds_and_bounds(tmp_path):
    text = EXAMPLE_POLICY.replace(
        "    enabled: false\n    max_suspicion: 0.50", "    enabled: true\n    max_suspicion: 0.40"
    ).replace("max_proposals: 3", "max_proposals: 2")
    policy = load_policy(_write(tmp_path, text))
    assert policy.plan().discovery == DiscoveryPlan(max_proposals=2)
    assert policy.thresholds().max_discovery_suspicion == 0.40
    assert policy.thresholds().max_discovery_flip_rate == 0.50
    assert policy.bounds()["discovery.confirmed"] == 0.0
    # Without spurious regions only the checks that need none are gated.
    assert set(policy.bounds(regions=False)) == {"discovery.confirmed", "sanity.final_spearman"}
    assert load_policy(_write(tmp_path, EXAMPLE_POLICY)).plan().discovery is None


def test_digest_changes_with_any_rule():
    base = GatePolicy(model="m", audit_set=Path("a.csv"))
    stricter = base.model_copy(update={"inconclusive": "block"})
    assert base.digest() == GatePolicy(model="m", audit_set=Path("a.csv")).digest()
    assert base.digest() != stricter.digest()
    assert len(base.digest()) == 64
