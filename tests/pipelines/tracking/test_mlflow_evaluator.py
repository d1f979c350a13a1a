"""The `xai` evaluator through mlflow.models.evaluate, validated against policy thresholds."""

from __future__ import annotations

import pandas as pd
import pytest

from pipelines.audit_sets.images import write_audit_set
from pipelines.policy import EXAMPLE_POLICY, load_policy
from xai_checks.examples.synthetic import CLASS_NAMES, make_lesions

pytestmark = pytest.mark.slow


def _log(lesion_gate, model, name: str) -> str:
    lesion_gate.register(model, name)
    return f"models:/{name}/1"


def test_evaluate_gives_the_gate_metrics_and_figures(
    trained_pair, lesion_gate, tracking_uri, tmp_path
):
    import mlflow
    from mlflow.models.evaluation.validation import ModelValidationFailedException

    batch = make_lesions(24, ruler="always", seed=100)
    manifest = write_audit_set(
        tmp_path / "audit", batch.images, batch.labels, batch.masks, CLASS_NAMES
    )
    policy_path = tmp_path / "policy.yaml"
    policy_path.write_text(EXAMPLE_POLICY.replace("images: 16", "images: 4"))
    policy = load_policy(policy_path)
    results = {}
    for name, model in (("shortcut", trained_pair.shortcut), ("clean", trained_pair.clean)):
        uri = _log(lesion_gate, model, name)
        with mlflow.start_run():
            results[name] = mlflow.models.evaluate(
                uri,
                data=pd.read_csv(manifest),
                model_type="classifier",
                targets="label",
                evaluators=["xai"],
                evaluator_config={"xai": {"policy": str(policy_path)}},
            )
    shortcut, clean = results["shortcut"], results["clean"]
    assert shortcut.metrics["gradcam.spurious_mass"] > 0.3 > clean.metrics["gradcam.spurious_mass"]
    assert shortcut.metrics["counterfactual.removal_flip_rate"] > 0.8
    overlay = shortcut.artifacts["gradcam_overlays"]
    assert overlay.content.size[0] > 500 and overlay.uri.endswith("xai/gradcam_overlays.png")
    assert {"counterfactual_removal", "sanity"} <= set(shortcut.artifacts)
    # The policy's MetricThresholds decide like the gate: the clean model passes...
    mlflow.validate_evaluation_results(policy.metric_thresholds(), clean)
    # ...the shortcut model does not.
    with pytest.raises(ModelValidationFailedException, match=r"gradcam\.spurious_mass"):
        mlflow.validate_evaluation_results(policy.metric_thresholds(), shortcut)
    run = mlflow.get_run(shortcut.run_id)
    assert run.data.metrics["gradcam.spurious_mass"] == pytest.approx(
        shortcut.metrics["gradcam.spurious_mass"]
    )


def test_config_without_policy_or_audit_set_is_a_clear_error(
    trained_pair, lesion_gate, tracking_uri
):
    import mlflow

    uri = _log(lesion_gate, trained_pair.clean, "noconfig")
    with mlflow.start_run(), pytest.raises(ValueError, match="needs 'policy'"):
        mlflow.models.evaluate(
            uri,
            data=pd.DataFrame({"image": ["x.png"], "label": ["benign"]}),
            model_type="classifier",
            targets="label",
            evaluators=["xai"],
            evaluator_config={"xai": {}},
        )
