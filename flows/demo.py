"""The demo: train a shortcut model and a clean one, register both, gate both.

Images: ``lesion-classifier`` version 1 is trained where every malignant image
has a ruler (ρ = 1), version 2 where rulers are independent of the label
(ρ = 0); the audit set is a folder of PNGs with ruler masks.

Text: ``review-classifier`` (a tiny BERT) version 1 is trained where every
positive review is signed "cheers" (ρ = 1), version 2 where the signature is
independent of the label; the audit set is a CSV of signed reviews.

Unlabelled: ``lesion-classifier-unlabelled`` registers the same two image
models again, gated on the same audit images with no masks at all: strategy
discovery (SpRAy) alone must find the ruler nobody labelled.

Fixed place: ``lesion-classifier-fixed-tag`` version 1 is trained where every
malignant image carries a stamp in the same top-left corner, version 2 where
the stamp is independent of the label; gated with no masks on images that
carry the stamp as the shortcut's training data did. One place on every image
makes one cluster of heatmaps: discovery finds it by what the region holds.

All are logged with ``mlflow.pytorch`` and gated through the same flow.
Expected: every v1 blocked, every v2 passed, alias ``champion`` on each v2.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from rich.table import Table

from flows.outcome import GateOutcome
from flows.run import run_gate
from pipelines.audit_sets.images import write_audit_set
from pipelines.audit_sets.texts import write_text_audit_set
from pipelines.tracking import configure_tracking
from pipelines.verdict.decision import DEFAULT_ALIAS, Verdict
from xai_checks.examples.synthetic import CLASS_NAMES, Artifact, make_lesions
from xai_checks.examples.synthetic_text import REVIEW_CLASSES, make_reviews
from xai_checks.examples.toy_models import SmallCNN, accuracy, train_classifier
from xai_checks.examples.toy_text_models import (
    text_accuracy,
    tiny_bert_classifier,
    train_text_classifier,
)

__all__ = ["DemoConfig", "DemoRow", "run_demo"]


@dataclass(frozen=True)
class DemoConfig:
    workdir: Path = Path("demo_data")
    model_name: str = "lesion-classifier"
    text_model_name: str = "review-classifier"
    unlabelled_model_name: str = "lesion-classifier-unlabelled"
    fixed_place_model_name: str = "lesion-classifier-fixed-tag"
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
    accuracy_no_shortcut: float
    """On inputs without the artifact (no ruler, no signature): chance for a shortcut model."""
    outcome: GateOutcome


def train_and_register(
    config: DemoConfig,
    shortcut_strength: float,
    *,
    artifact: Artifact = "ruler",
    name: str | None = None,
) -> tuple[str, float, float]:
    """Train one SmallCNN at ``shortcut_strength``; log and register it as ``name`` (default:
    the lesion model). Returns version, accuracy, and accuracy without the artifact."""
    import mlflow

    seed = config.seed
    train = make_lesions(
        config.n_train, shortcut_strength=shortcut_strength, seed=seed + 1, artifact=artifact
    )
    test = make_lesions(
        config.n_test, shortcut_strength=shortcut_strength, seed=seed + 2, artifact=artifact
    )
    no_ruler = make_lesions(config.n_test, ruler="never", seed=seed + 3)
    torch.manual_seed(seed)
    model = SmallCNN(num_classes=len(CLASS_NAMES))
    report = train_classifier(model, train.images, train.labels, epochs=config.epochs, seed=seed)
    acc = accuracy(model, test.images, test.labels)
    acc_no_ruler = accuracy(model, no_ruler.images, no_ruler.labels)

    mlflow.set_experiment("lesion-training")
    with mlflow.start_run(run_name=f"smallcnn-{artifact}-rho{shortcut_strength:g}"):
        mlflow.log_params(
            {
                "artifact": artifact,
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
            registered_model_name=name or config.model_name,
            serialization_format="pickle",  # pt2 inlines the layers: nothing to hook
            metadata={"class_names": list(CLASS_NAMES)},
            pip_requirements=[f"torch=={torch.__version__.split('+')[0]}"],
        )
    return str(info.registered_model_version), acc, acc_no_ruler


def train_and_register_text(
    config: DemoConfig, shortcut_strength: float, tokenizer_dir: Path
) -> tuple[str, float, float]:
    """Train one tiny BERT review classifier at ``shortcut_strength``; log, register it."""
    import mlflow
    import transformers

    tokenizer = _tokenizer(tokenizer_dir)
    seed = config.seed
    train = make_reviews(config.n_train, shortcut_strength=shortcut_strength, seed=seed + 1)
    test = make_reviews(config.n_test, shortcut_strength=shortcut_strength, seed=seed + 2)
    unsigned = make_reviews(config.n_test, signature="never", seed=seed + 3)
    model = tiny_bert_classifier(tokenizer.vocab_size, len(REVIEW_CLASSES), seed=seed)
    report = train_text_classifier(model, tokenizer, train.texts, train.labels, seed=seed)
    acc = text_accuracy(model, tokenizer, test.texts, test.labels)
    acc_unsigned = text_accuracy(model, tokenizer, unsigned.texts, unsigned.labels)

    mlflow.set_experiment("review-training")
    with mlflow.start_run(run_name=f"tinybert-rho{shortcut_strength:g}"):
        mlflow.log_params(
            {"shortcut_strength": shortcut_strength, "n_train": config.n_train, "seed": seed}
        )
        mlflow.log_metrics(
            {
                "train_accuracy": report.train_accuracy,
                "accuracy": acc,
                "accuracy_unsigned": acc_unsigned,
            }
        )
        info = mlflow.pytorch.log_model(
            model,
            name="model",
            registered_model_name=config.text_model_name,
            serialization_format="pickle",
            metadata={"class_names": list(REVIEW_CLASSES), "modality": "text"},
            extra_files=[str(path) for path in sorted(tokenizer_dir.iterdir())],
            pip_requirements=[
                f"torch=={torch.__version__.split('+')[0]}",
                f"transformers=={transformers.__version__}",
            ],
        )
    return str(info.registered_model_version), acc, acc_unsigned


def _tokenizer(folder: Path):
    """The packaged MiniLM's WordPiece tokenizer, saved to ``folder`` to log beside models."""
    from transformers import AutoTokenizer

    if not (folder / "tokenizer_config.json").is_file():
        from xai_checks.text_models import default_text_model_path

        AutoTokenizer.from_pretrained(str(default_text_model_path())).save_pretrained(folder)
    return AutoTokenizer.from_pretrained(str(folder), local_files_only=True)


def run_demo(config: DemoConfig) -> list[DemoRow]:
    """Train, register, write the audit sets, gate every version; return the table rows."""
    configure_tracking(config.tracking_uri)
    audit = make_lesions(config.n_audit, ruler="always", seed=config.seed + 100)
    manifest = write_audit_set(
        config.workdir / "audit", audit.images, audit.labels, audit.masks, CLASS_NAMES
    )
    reviews = make_reviews(config.n_audit, signature="always", seed=config.seed + 100)
    text_manifest = write_text_audit_set(
        config.workdir / "reviews" / "audit.csv",
        reviews.texts,
        reviews.labels,
        reviews.spurious,
        REVIEW_CLASSES,
    )
    tokenizer_dir = config.workdir / "tokenizer"
    jobs = [
        (config.model_name, manifest, rho, *train_and_register(config, rho)) for rho in (1.0, 0.0)
    ] + [
        (
            config.text_model_name,
            text_manifest,
            rho,
            *train_and_register_text(config, rho, tokenizer_dir),
        )
        for rho in (1.0, 0.0)
    ]
    rows = []
    for name, audit_set, rho, version, acc, acc_no_shortcut in jobs:
        outcome = run_gate(name, version, audit_set, tracking_uri=config.tracking_uri)
        rows.append(DemoRow(rho, acc, acc_no_shortcut, outcome))
    unlabelled = write_unlabelled_manifest(manifest)
    for name, _, rho, version, acc, acc_no_shortcut in jobs[:2]:
        copy = register_again(name, version, config.unlabelled_model_name)
        outcome = run_gate(
            config.unlabelled_model_name,
            copy,
            unlabelled,
            discovery=True,
            tracking_uri=config.tracking_uri,
        )
        rows.append(DemoRow(rho, acc, acc_no_shortcut, outcome))
    rows += fixed_place_rows(config)
    return rows


def fixed_place_rows(config: DemoConfig) -> list[DemoRow]:
    """A stamp in one fixed corner: trained at ρ = 1 and 0, gated with no masks at all."""
    stamped = make_lesions(
        config.n_audit, shortcut_strength=1.0, seed=config.seed + 100, artifact="stamp"
    )
    manifest = write_audit_set(
        config.workdir / "audit-fixed-tag",
        stamped.images,
        stamped.labels,
        stamped.masks,
        CLASS_NAMES,
    )
    unlabelled = write_unlabelled_manifest(manifest)
    rows = []
    for rho in (1.0, 0.0):
        version, acc, acc_no_shortcut = train_and_register(
            config, rho, artifact="stamp", name=config.fixed_place_model_name
        )
        outcome = run_gate(
            config.fixed_place_model_name,
            version,
            unlabelled,
            discovery=True,
            tracking_uri=config.tracking_uri,
        )
        rows.append(DemoRow(rho, acc, acc_no_shortcut, outcome))
    return rows


def write_unlabelled_manifest(manifest: Path) -> Path:
    """The audit manifest without its mask column: the same images, nothing labelled."""
    unlabelled = manifest.with_name("unlabelled.csv")
    rows = list(csv.reader(manifest.read_text(encoding="utf-8").splitlines()))
    with unlabelled.open("w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows(row[:2] for row in rows)  # image, label
    return unlabelled


def register_again(name: str, version: str, new_name: str) -> str:
    """Register the logged model behind ``name`` v``version`` under ``new_name``."""
    import mlflow
    from mlflow import MlflowClient

    source = MlflowClient().get_model_version(name, version).source
    return str(mlflow.register_model(source, new_name).version)


def demo_succeeded(rows: list[DemoRow]) -> bool:
    """The story the demo tells, for images and for text: the shortcut model blocked on
    explanation *and* counterfactual evidence, the clean one promoted; and without any
    masks, the shortcut image model blocked by what discovery found."""
    expected = (
        (rows[:2], ("spurious_mass", "removal flip rate")),
        (rows[2:4], ("spurious_mass", "removal flip rate")),
        (rows[4:6], ("discovery found an unlabelled shortcut",)),
        (rows[6:8], ("discovery found an unlabelled shortcut",)),
    )
    for pair, evidence in expected:
        verdicts = [row.outcome.verdict for row in pair]
        if verdicts != [Verdict.BLOCKED, Verdict.PASSED] or not pair[1].outcome.promoted:
            return False
        reasons = " ".join(pair[0].outcome.reasons)
        if not all(line in reasons for line in evidence):
            return False
    return True


def champion_version(model_name: str, alias: str = DEFAULT_ALIAS) -> str | None:
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    try:
        return str(MlflowClient().get_model_version_by_alias(model_name, alias).version)
    except MlflowException:
        return None


def demo_table(rows: list[DemoRow]) -> Table:
    """The demo's verdicts, one row per gated version, with the numbers behind each."""
    table = Table(
        title="xai-gate demo",
        caption="ρ: shortcut strength in training. Mass: Grad-CAM on the ruler (images), "
        "gradient x input saliency on the signature (text). Discovered: the most suspicious "
        "heatmap cluster found with no masks, and how many predictions flip when its region "
        "is filled",
    )
    columns = (
        "model",
        "ver",
        "ρ",
        "acc",
        "acc w/o shortcut",
        "spur. mass",
        "enrich.",
        "flip rate",
        "spur. lift",
        "sanity ρ",
        "discovered",
        "verdict",
    )
    for column in columns:
        table.add_column(column, justify="left" if column in {"model", "verdict"} else "right")
    for row in rows:
        outcome = row.outcome
        summary = outcome.summary
        colour = {"passed": "green", "blocked": "red"}.get(outcome.verdict.value, "yellow")
        table.add_row(
            outcome.model_name,
            outcome.version,
            f"{row.shortcut_strength:g}",
            f"{row.accuracy:.3f}",
            f"{row.accuracy_no_shortcut:.3f}",
            _fmt(summary.get("spurious_mass")),
            _fmt(summary.get("enrichment")),
            _fmt(summary.get("counterfactual.removal_flip_rate")),
            _fmt(summary.get("counterfactual.spurious_lift")),
            _fmt(summary.get("sanity.final_spearman")),
            _discovered(summary),
            f"[{colour}]{outcome.verdict.value}[/{colour}]",
        )
    return table


def _fmt(value: object) -> str:
    return f"{value:.3f}" if isinstance(value, float) and math.isfinite(value) else "-"


def _discovered(summary: dict) -> str:
    """The top strategy's suspicion, and its flip rate and pull where its region was tested."""
    suspicion = summary.get("discovery.top_suspicion")
    if not isinstance(suspicion, float):
        return "-"
    tested = ""
    for name, word in (("discovery.top_flip_rate", "flips"), ("discovery.top_pull", "pull")):
        value = summary.get(name)
        if isinstance(value, float) and math.isfinite(value):
            tested += f", {word} {value:.2f}"
    return f"susp. {suspicion:.2f}{tested}"
