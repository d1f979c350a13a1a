"""The one policy: YAML with line-numbered errors, and everything derived from it."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from pipelines.policy import (
    EXAMPLE_POLICY,
    AuditRules,
    DiscoveryChecks,
    GatePolicy,
    PolicyError,
    load_policy,
)

POLICIES = Path(__file__).parents[3] / "pipelines" / "policies"


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(text)
    return path


def test_the_example_loads_and_states_every_default(tmp_path):
    policy = load_policy(_write(tmp_path, EXAMPLE_POLICY))
    assert policy.model == "lesion-classifier" and policy.alias == "champion"
    assert policy.audit_set == tmp_path / "audit" / "manifest.csv"  # relative to the file
    assert policy.rules() == AuditRules()  # the example states the defaults
    assert policy.inconclusive == "hold" and policy.approval is False


def test_shipped_example_policies_are_valid():
    image = load_policy(POLICIES / "lesion-classifier.yaml")
    text = load_policy(POLICIES / "review-classifier.yaml")
    assert image.model == "lesion-classifier" and image.audit_set.name == "manifest.csv"
    assert text.model == "review-classifier" and text.modality == "text"
    assert not text.sanity.enabled


@pytest.mark.parametrize(
    ("old", "new", "below", "message"),
    [
        (
            "max_spurious_mass: 0.3",
            "max_spurious_mass: 3",
            0,
            r"checks.heatmaps.max_spurious_mass: Input should be less than or equal to 1",
        ),
        (
            "flag_mass: 0.5",
            "typo_key: 1\n    flag_mass: 0.5",
            0,
            r"checks.heatmaps.typo_key: Extra inputs are not permitted",
        ),
        (
            "methods: [gradcam, layercam]",
            "methods: [gradcam, scorecam]",
            0,
            r"checks.heatmaps.methods: Value error, unknown method\(s\) \['scorecam'\]",
        ),
        (
            "inconclusive: hold",
            "inconclusive: maybe",
            0,
            r"inconclusive: Input should be 'hold' or 'block'",
        ),
        (
            "max_suspicion: 0.5",
            "max_suspicion: 2",
            0,
            r"checks.discovery.max_suspicion: Input should be less than or equal",
        ),
        ("model: lesion-classifier", "modell: lesion-classifier", 0, r"modell: Extra inputs"),
    ],
)
def test_errors_name_the_key_and_its_line(tmp_path, old, new, below, message):
    assert EXAMPLE_POLICY.count(old) == 1
    line = EXAMPLE_POLICY[: EXAMPLE_POLICY.index(old)].count("\n") + 1 + below
    with pytest.raises(PolicyError, match=rf"policy\.yaml:{line} {message}"):
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
        "counterfactual.spurious_lift": 0.20,
        "sanity.final_spearman": 0.50,
    }
    assert all(t.greater_is_better is False for t in thresholds.values())
    clean = {
        "gradcam.spurious_mass": 0.04,
        "gradcam.flagged_fraction": 0.0,
        "counterfactual.removal_flip_rate": 0.0,
        "counterfactual.spurious_lift": 0.01,
        "sanity.final_spearman": -0.1,
    }
    validate_evaluation_results(thresholds, EvaluationResult(clean, {}))  # no exception
    shortcut = clean | {"gradcam.spurious_mass": 0.57, "counterfactual.removal_flip_rate": 0.98}
    with pytest.raises(ModelValidationFailedException, match=r"gradcam\.spurious_mass"):
        validate_evaluation_results(thresholds, EvaluationResult(shortcut, {}))
    text = policy.metric_thresholds(text=True)
    assert "saliency.spurious_mass" in text and "text_counterfactual.removal_flip_rate" in text
    assert "sanity.final_spearman" not in text


def test_discovery_maps_onto_the_rules_and_bounds(tmp_path):
    text = EXAMPLE_POLICY.replace(
        "enabled: false  # Find unlabelled", "enabled: true  # Find unlabelled"
    )
    text = text.replace("max_suspicion: 0.5", "max_suspicion: 0.40")
    text = text.replace("max_proposals: 3", "max_proposals: 2")
    policy = load_policy(_write(tmp_path, text))
    assert policy.checks.discovery == DiscoveryChecks(
        enabled=True, max_suspicion=0.40, max_proposals=2
    )
    assert policy.rules().checks.discovery.max_flip_rate == 0.50
    assert policy.bounds()["discovery.confirmed"] == 0.0
    # Without spurious regions only the checks that need none are gated.
    assert set(policy.bounds(regions=False)) == {"discovery.confirmed", "sanity.final_spearman"}
    assert not load_policy(_write(tmp_path, EXAMPLE_POLICY)).checks.discovery.enabled


def test_digest_changes_with_any_rule():
    base = GatePolicy(model="m", audit_set=Path("a.csv"))
    stricter = base.model_copy(update={"inconclusive": "block"})
    assert base.digest() == GatePolicy(model="m", audit_set=Path("a.csv")).digest()
    assert base.digest() != stricter.digest()
    assert len(base.digest()) == 64


def test_the_example_is_generated_from_the_schema_and_documents_every_key():
    from pipelines.policy import policy_options

    for option in policy_options():
        key = option.path[-1]
        assert f"{key}:" in EXAMPLE_POLICY, key
        description = option.field.description
        assert description.split()[0] in EXAMPLE_POLICY, key  # its comment is the description


def test_flat_options_build_the_same_policy_as_the_nested_file(tmp_path):
    from pipelines.errors import GateError
    from pipelines.policy import policy_options

    names = [option.name for option in policy_options()]
    assert len(names) == len(set(names)), "flat option names must be unique"
    flat = GatePolicy.from_options(
        model="m",
        audit_set=Path("a.csv"),
        cam_methods="hirescam,gradcam",
        max_flip_rate=0.25,
        max_discovery_flip_rate=0.4,
        discovery=True,
        sanity_images=8,
        alias="prod",
    )
    nested = GatePolicy(
        model="m",
        audit_set=Path("a.csv"),
        protected_aliases=("prod",),
        checks={
            "heatmaps": {"methods": ("hirescam", "gradcam")},
            "counterfactual": {"max_flip_rate": 0.25},
            "discovery": {"enabled": True, "max_flip_rate": 0.4},
        },
        sanity={"images": 8},
    )
    assert flat == nested and flat.digest() == nested.digest()
    assert flat.options()["max_discovery_flip_rate"] == 0.4
    assert AuditRules().with_options(flag_mass=0.7).checks.heatmaps.flag_mass == 0.7
    with pytest.raises(GateError, match=r"'max_flip_rat' \(did you mean max_flip_rate"):
        GatePolicy.from_options(model="m", audit_set="a.csv", max_flip_rat=0.1)


def test_the_digest_of_a_shipped_policy_is_stable():
    """Verdicts carry the policy hash: a refactor that changed it would re-gate every version.

    It changes when a rule does, as it should: the insertion test now bounds the lift
    (``max_spurious_lift`` replaced ``max_spurious_score``) and discovery gained
    ``max_discovery_lift``, and ``attribution_alone`` settles attribution against behaviour,
    so versions judged under the old rules are judged again.
    """
    policy = GatePolicy(model="lesion-classifier", audit_set=Path("/audit/manifest.csv"))
    assert policy.digest() == "08ed994ea82f6e41fc4c4c0d79a25c01fb06dd38e72ba9151ea73ae560f34d91"


@pytest.mark.parametrize(
    ("alias", "message"),
    [
        ("latest", "reserved by MLflow"),
        ("LATEST", "reserved by MLflow"),
        ("v3", "reserved by MLflow"),
        ("my alias", "not a valid MLflow alias"),
        ("a" * 256, "not a valid MLflow alias"),
    ],
)
def test_aliases_follow_mlflows_rules(alias, message):
    with pytest.raises(ValidationError, match=message):
        GatePolicy(model="m", audit_set="a.csv", protected_aliases=(alias,))
    assert (
        GatePolicy(model="m", audit_set="a.csv", protected_aliases=("prod-2_b",)).alias
        == "prod-2_b"
    )
