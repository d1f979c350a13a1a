"""The ``xai`` MLflow evaluator: the gate's checks through ``mlflow.models.evaluate``.

Registered through the ``mlflow.model_evaluator`` entry point::

    result = mlflow.models.evaluate(
        "models:/lesion-classifier/3",
        data=pd.read_csv("audit/manifest.csv"),
        model_type="classifier",  # MLflow requires a type (or extra_metrics)
        targets="label",
        evaluators=["xai"],
        evaluator_config={"xai": {"policy": "policy.yaml"}},
    )
    mlflow.validate_evaluation_results(policy.metric_thresholds(), result)

``evaluator_config`` holds ``policy`` (a policy file) or the policy's keys
inline (``audit_set`` at least). ``data`` is the audit set's manifest as a
DataFrame, so MLflow records which data the evaluation saw; the images or
texts are read from ``audit_set``. The result holds the gate's metrics and
every figure as an image artifact.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mlflow.models.evaluation.artifacts import ImageEvaluationArtifact
from mlflow.models.evaluation.base import EvaluationResult, ModelEvaluator

__all__ = ["XaiEvaluator"]


class XaiEvaluator(ModelEvaluator):
    """Runs every check of a gate policy on a ``mlflow.pytorch`` model."""

    def can_evaluate(self, *, model_type: Any, evaluator_config: dict, **kwargs: Any) -> bool:
        """Any model type: the config says what to check, the model's flavor how to load it."""
        return True

    def evaluate(
        self,
        *,
        model_type: Any,
        dataset: Any,
        run_id: str,
        evaluator_config: dict,
        model: Any = None,
        **kwargs: Any,
    ) -> EvaluationResult:
        import matplotlib.pyplot as plt
        import mlflow

        from pipelines.judging.sandbox import refuse_beside_secrets
        from pipelines.stages.assembly import collect_evidence
        from pipelines.tracking import TIGHT, load_model_uri

        refuse_beside_secrets("the xai evaluator")
        policy = _policy(evaluator_config)
        # The logged model behind the pyfunc wrapper: reload it as a torch module.
        model_id = kwargs.get("model_id") or getattr(
            getattr(model, "metadata", None), "model_id", None
        )
        if not model_id:
            raise ValueError("the xai evaluator needs a logged model (evaluate a model URI)")
        loaded = load_model_uri(f"models:/{model_id}")
        evidence = collect_evidence(loaded, policy)
        metrics = {k: v for k, v in evidence.metrics().items() if v == v}  # MLflow: no NaN
        client = mlflow.MlflowClient()
        artifacts: dict[str, ImageEvaluationArtifact] = {}
        for path, draw in evidence.figures(policy.rules(), "xai evaluation").items():
            fig = draw()
            try:
                client.log_figure(run_id, fig, path, save_kwargs=TIGHT)
            finally:
                plt.close(fig)
            local = client.download_artifacts(run_id, path)
            uri = f"{client.get_run(run_id).info.artifact_uri}/{path}"
            artifact = ImageEvaluationArtifact(uri=uri)
            artifact._load(local)  # MLflow's own loader: the PIL image becomes .content
            artifacts[Path(path).stem] = artifact
        for name, value in metrics.items():
            client.log_metric(run_id, name, value)
        return EvaluationResult(metrics=metrics, artifacts=artifacts, run_id=run_id)


def _policy(config: dict) -> Any:
    from pipelines.policy import GatePolicy, load_policy

    config = dict(config or {})
    if "policy" in config:
        return load_policy(config["policy"])
    config.setdefault("model", "evaluated-model")
    if "audit_set" not in config:
        raise ValueError("evaluator_config needs 'policy' (a file) or 'audit_set'")
    return GatePolicy.model_validate(config)
