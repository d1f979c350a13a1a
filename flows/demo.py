"""The demo: train a shortcut model and a clean one, register both, gate both.

Version 1 is trained where every malignant image has a ruler (ρ = 1), version
2 where rulers are independent of the label (ρ = 0). Both are logged with
``mlflow.pytorch`` and registered as ``lesion-classifier``; the audit set is a
folder of PNGs with ruler masks; each version then goes through the gate flow.
Expected: v1 blocked, v2 passed, alias ``champion`` on v2.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from flows.run import run_gate
from flows.xai_gate import GateOutcome
from pipelines.audit_set import write_audit_set
from pipelines.gate import DEFAULT_ALIAS, Verdict
from pipelines.tracking import configure_tracking
from xai_checks.synthetic import CLASS_NAMES, make_lesions
from xai_checks.toy_models import SmallCNN, accuracy, train_classifier

__all__ = ["DemoConfig", "DemoRow", "run_demo"]


@dataclass(frozen=True)
class DemoConfig:
    workdir: Path = Path("demo_data")
    model_name: str = "lesion-classifier"
    n_train: int = 2000
    epochs: int = 8
    n_test: int = 600
    n_audit: int = 64
    seed: int = 0
    tracking_uri: str | None = None


@dataclass(frozen=True)
class DemoRow:
    shortcut_strength: float
    accuracy: float
    accuracy_no_ruler: float
    outcome: GateOutcome


def train_and_register(config: DemoConfig, shortcut_strength: float) -> tuple[str, float, float]:
    """Train one SmallCNN at ``shortcut_strength``; log and register it. Returns version."""
    import mlflow

    seed = config.seed
    train = make_lesions(config.n_train, shortcut_strength=shortcut_strength, seed=seed + 1)
    test = make_lesions(config.n_test, shortcut_strength=shortcut_strength, seed=seed + 2)
    no_ruler = make_lesions(config.n_test, ruler="never", seed=seed + 3)
    torch.manual_seed(seed)
    model = SmallCNN(num_classes=len(CLASS_NAMES))
    report = train_classifier(model, train.images, train.labels, epochs=config.epochs, seed=seed)
    acc = accuracy(model, test.images, test.labels)
    acc_no_ruler = accuracy(model, no_ruler.images, no_ruler.labels)

    mlflow.set_experiment("lesion-training")
    with mlflow.start_run(run_name=f"smallcnn-rho{shortcut_strength:g}"):
        mlflow.log_params(
            {
                "shortcut_strength": shortcut_strength,
                "n_train": config.n_train,
                "epochs": config.epochs,
                "seed": seed,
            }
        )
        mlflow.log_metrics(
            {
                "train_accuracy": report.train_accuracy,
                "accuracy": acc,
                "accuracy_no_ruler": acc_no_ruler,
            }
        )
        info = mlflow.pytorch.log_model(
            model,
            name="model",
            registered_model_name=config.model_name,
            serialization_format="pickle",  # pt2 inlines the layers: nothing to hook
            metadata={"class_names": list(CLASS_NAMES)},
            pip_requirements=[f"torch=={torch.__version__.split('+')[0]}"],
        )
    return str(info.registered_model_version), acc, acc_no_ruler


def run_demo(config: DemoConfig) -> list[DemoRow]:
    """Train, register, write the audit set, gate both versions; return the table rows."""
    configure_tracking(config.tracking_uri)
    audit = make_lesions(config.n_audit, ruler="always", seed=config.seed + 100)
    manifest = write_audit_set(
        config.workdir / "audit", audit.images, audit.labels, audit.masks, CLASS_NAMES
    )
    trained = [(rho, *train_and_register(config, rho)) for rho in (1.0, 0.0)]
    rows = []
    for rho, version, acc, acc_no_ruler in trained:
        outcome = run_gate(config.model_name, version, manifest, tracking_uri=config.tracking_uri)
        rows.append(DemoRow(rho, acc, acc_no_ruler, outcome))
    return rows


def demo_succeeded(rows: list[DemoRow]) -> bool:
    """The story the demo tells: the shortcut model blocked on heatmap *and*
    counterfactual evidence, the clean one promoted."""
    verdicts = [row.outcome.verdict for row in rows]
    if verdicts != [Verdict.BLOCKED, Verdict.PASSED] or not rows[1].outcome.promoted:
        return False
    reasons = " ".join(rows[0].outcome.reasons)
    return "spurious_mass" in reasons and "removal flip rate" in reasons


def champion_version(model_name: str, alias: str = DEFAULT_ALIAS) -> str | None:
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    try:
        return str(MlflowClient().get_model_version_by_alias(model_name, alias).version)
    except MlflowException:
        return None
