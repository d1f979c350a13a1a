"""A zoo of small shortcut models: does the gate block those whose predictions follow it?

Ground truth is behaviour, not the training recipe: a model's **effect** is
the mean rise in P(malignant) when its artifact is pasted onto fresh benign
images (the same images with and without it). A model is *spurious* when its
effect exceeds 0.3 and *clean* when it was trained with no shortcut (ρ = 0);
the ones in between are listed but count as neither.

The zoo crosses artifact kinds (moving, fixed-place, low-contrast texture;
see ``xai_checks.examples.synthetic.Artifact``), shortcut strengths ρ ∈ {0,
.5, .9, 1} and seeds, plus clean models that are under-trained (one epoch) or
class-biased (trained on 85 % malignant images). Each model is judged at the
shipped default policy, the way the gate judges it:

* **labelled**: the audit set carries the artifact on every image, with its
  mask; the score table's checks (heatmap mass, flagged share, removal flips,
  insertion lift) decide;
* **unlabelled**: the audit set is the model's own kind of data (artifacts as
  often as in training), without masks; strategy discovery decides.

Tuning happened on the ``tuned`` group only (ruler, band, grating, weave;
seeds 0-2). The ``held out`` group (tag, stamp, vignette; seeds 3-5) was never
looked at while choosing defaults; its numbers are reported as they come out.
``weave`` was held out until it exposed a miss (discovery's regions came from
the heatmaps only) and has been tuned on since; ``vignette`` was added then,
as shading in four parts that no tuning saw.

The ``text`` group does the same for review classifiers (a tiny BERT): the
artifact is a sign-off word, the effect the rise in P(positive) when it is
appended to negative reviews, and only the labelled gate applies (discovery
clusters image heatmaps).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import nn

from benchmarks._common import Row

__all__ = ["GROUPS", "ZooModel", "judge", "run", "train_zoo"]

GROUPS: dict[str, tuple[tuple[str, ...], tuple[int, ...]]] = {
    "tuned": (("ruler", "band", "grating", "weave"), (0, 1, 2)),
    "held out": (("tag", "stamp", "vignette"), (3, 4, 5)),
}
STRENGTHS = (0.0, 0.5, 0.9, 1.0)
SPURIOUS_EFFECT = 0.3
"""A model whose predictions rise by more than this when its artifact is pasted in is spurious."""


@dataclass(frozen=True)
class ZooModel:
    group: str
    artifact: str
    rho: float
    seed: int
    variant: str
    """``trained``, ``under-trained`` (one epoch) or ``biased`` (85 % of one class in training)."""
    model: nn.Module
    effect: float
    tokenizer: object | None = None
    """Text models only."""

    @property
    def spurious(self) -> bool:
        return self.effect > SPURIOUS_EFFECT

    @property
    def clean(self) -> bool:
        return self.rho == 0.0


@dataclass(frozen=True)
class Judged:
    zoo: ZooModel
    labelled_blocked: bool
    unlabelled_blocked: bool | None
    """None where discovery does not apply (text)."""
    scores: dict[str, float]
    uninformative: bool = False
    """The labelled evidence is about nothing (e.g. accuracy at chance): where the shortcut
    checks pass, the gate records 'inconclusive', not 'passed' (``checks.uninformative``)."""


def train_zoo(
    artifacts: Iterable[str],
    seeds: Iterable[int],
    *,
    group: str,
    strengths: Iterable[float] = STRENGTHS,
    n_train: int = 1000,
    epochs: int = 6,
    clean_variants: bool = True,
) -> list[ZooModel]:
    """Train one SmallCNN per (artifact, ρ, seed), plus the clean variants per seed."""
    from xai_checks.examples.synthetic import make_lesions
    from xai_checks.examples.toy_models import SmallCNN, train_classifier

    models = []
    for artifact in artifacts:
        for seed in seeds:
            recipes = [(rho, "trained") for rho in strengths]
            if clean_variants:
                recipes += [(0.0, "under-trained"), (0.0, "biased")]
            for rho, variant in recipes:
                data = make_lesions(
                    n_train, shortcut_strength=rho, seed=1000 + seed, artifact=artifact
                )
                images, labels = data.images, data.labels
                if variant == "biased":  # drop most benign images: 85 % malignant
                    benign = (labels == 0).nonzero().flatten()
                    keep = torch.cat(
                        [(labels == 1).nonzero().flatten(), benign[: len(benign) // 6]]
                    )
                    images, labels = images[keep], labels[keep]
                torch.manual_seed(seed)
                model = SmallCNN(width=16)
                train_classifier(
                    model,
                    images,
                    labels,
                    epochs=1 if variant == "under-trained" else epochs,
                    seed=seed,
                )
                models.append(
                    ZooModel(group, artifact, rho, seed, variant, model, effect(model, artifact))
                )
    return models


def train_text_zoo(
    seeds: Iterable[int], *, strengths: Iterable[float] = STRENGTHS, n_train: int = 1000
) -> list[ZooModel]:
    """Tiny BERT review classifiers per (ρ, seed), plus the clean variants per seed."""
    from transformers import AutoTokenizer

    from xai_checks.examples.synthetic_text import make_reviews
    from xai_checks.examples.toy_text_models import tiny_bert_classifier, train_text_classifier
    from xai_checks.text_models import default_text_model_path

    tokenizer = AutoTokenizer.from_pretrained(str(default_text_model_path()))
    models = []
    for seed in seeds:
        recipes = [(rho, "trained") for rho in strengths]
        recipes += [(0.0, "under-trained"), (0.0, "biased")]
        for rho, variant in recipes:
            data = make_reviews(n_train, shortcut_strength=rho, seed=1000 + seed)
            texts, labels = data.texts, data.labels
            if variant == "biased":  # drop most negative reviews: 85 % positive
                negative = (labels == 0).nonzero().flatten()
                keep = torch.cat(
                    [(labels == 1).nonzero().flatten(), negative[: len(negative) // 6]]
                )
                texts, labels = [texts[i] for i in keep.tolist()], labels[keep]
            model = tiny_bert_classifier(tokenizer.vocab_size, seed=seed)
            epochs = 1 if variant == "under-trained" else 4
            train_text_classifier(model, tokenizer, texts, labels, epochs=epochs, seed=seed)
            models.append(
                ZooModel(
                    "text",
                    "sign-off",
                    rho,
                    seed,
                    variant,
                    model,
                    text_effect(model, tokenizer),
                    tokenizer,
                )
            )
    return models


def text_effect(model: nn.Module, tokenizer: object, n: int = 200) -> float:
    """Mean rise in P(positive) when the sign-off is appended to fresh negative reviews."""
    from xai_checks.examples.synthetic_text import make_reviews
    from xai_checks.predict import predict_text_proba

    signed = make_reviews(n, signature="always", seed=9000)
    unsigned = make_reviews(n, signature="never", seed=9000)
    negative = [i for i, label in enumerate(unsigned.labels.tolist()) if label == 0]
    with_it = predict_text_proba(model, tokenizer, [signed.texts[i] for i in negative])
    without = predict_text_proba(model, tokenizer, [unsigned.texts[i] for i in negative])
    return float((with_it - without)[:, 1].mean())


def judge_text(zoo: ZooModel, *, n_audit: int = 128) -> Judged:
    """The labelled text gate at the shipped defaults: saliency, removal and insertion."""
    from pipelines.evidence.texts import TextEvidence
    from pipelines.policy.schema import AuditRules
    from pipelines.stages.counterfactual import text_counterfactual_audit
    from pipelines.stages.text import audit_texts
    from xai_checks.examples.synthetic_text import REVIEW_CLASSES, make_reviews

    rules = AuditRules()
    audit_set = make_reviews(n_audit, signature="always", seed=5000 + zoo.seed)
    args = (zoo.model, zoo.tokenizer, audit_set.texts, audit_set.labels, audit_set.spurious)
    audit = audit_texts(*args, class_names=REVIEW_CLASSES, progress=False)
    counterfactual = text_counterfactual_audit(*args, class_names=REVIEW_CLASSES)
    validation = TextEvidence(audit, counterfactual, REVIEW_CLASSES).validate(rules)
    metrics = audit.metrics() | counterfactual.metrics()
    scores = {
        "labelled: spurious mass": metrics["saliency.spurious_mass"],
        "labelled: removal flip rate": metrics["text_counterfactual.removal_flip_rate"],
        "labelled: insertion lift": metrics["text_counterfactual.spurious_lift"],
    }
    return Judged(zoo, not validation.gating.success, None, scores, bool(validation.uninformative))


def effect(model: nn.Module, artifact: str, n: int = 200) -> float:
    """Mean rise in P(malignant) when the artifact is painted onto fresh benign images."""
    from xai_checks.examples.synthetic import make_lesions
    from xai_checks.predict import predict_proba

    with_it = make_lesions(n, ruler="always", seed=9000, artifact=artifact)
    without = make_lesions(n, ruler="never", seed=9000, artifact=artifact)
    benign = without.labels == 0
    rise = predict_proba(model, with_it.images[benign]) - predict_proba(
        model, without.images[benign]
    )
    return float(rise[:, 1].mean())


def judge(zoo: ZooModel, *, n_audit: int = 256) -> Judged:
    """Both gates at the shipped defaults, through the gate's own stages and GX suites."""
    from pipelines.evidence.images import ImageEvidence
    from pipelines.policy.schema import AuditRules
    from pipelines.stages.cam import audit_images
    from pipelines.stages.counterfactual import counterfactual_audit
    from pipelines.stages.discovery import discovery_audit
    from xai_checks.examples.synthetic import CLASS_NAMES, make_lesions

    rules = AuditRules()
    labelled = make_lesions(n_audit, ruler="always", seed=5000 + zoo.seed, artifact=zoo.artifact)
    audit = audit_images(
        zoo.model,
        labelled.images,
        labelled.labels,
        labelled.masks,
        class_names=CLASS_NAMES,
        methods=rules.checks.heatmaps.methods[:1],
        progress=False,
    )
    counterfactual = counterfactual_audit(
        zoo.model, labelled.images, labelled.labels, labelled.masks, class_names=CLASS_NAMES
    )
    with_masks = ImageEvidence(audit, counterfactual, class_names=CLASS_NAMES).validate(rules)

    natural = make_lesions(
        n_audit, shortcut_strength=zoo.rho, seed=6000 + zoo.seed, artifact=zoo.artifact
    )
    unscored = audit_images(
        zoo.model,
        natural.images,
        natural.labels,
        torch.zeros(natural.masks.shape, dtype=torch.bool),
        class_names=CLASS_NAMES,
        methods=rules.checks.heatmaps.methods[:1],
        progress=False,
        regions=False,
    )
    discovery = discovery_audit(
        zoo.model,
        natural.images,
        unscored,
        rules.checks.discovery,
        labels=natural.labels,
        class_names=CLASS_NAMES,
    )
    without_masks = ImageEvidence(unscored, discovery=discovery, regions=False).validate(rules)

    metrics = audit.metrics() | counterfactual.metrics()
    table = discovery.table
    tested = table["pull"].fillna(0.0)
    scores = {
        "labelled: spurious mass": metrics["gradcam.spurious_mass"],
        "labelled: removal flip rate": metrics["counterfactual.removal_flip_rate"],
        "labelled: insertion lift": metrics["counterfactual.spurious_lift"],
        "unlabelled: top suspicion": float(table["suspicion"].max()),
        "unlabelled: top pull": float(tested.max()) if len(tested) else 0.0,
    }
    return Judged(
        zoo,
        not with_masks.gating.success,
        not without_masks.gating.success,
        scores,
        bool(with_masks.uninformative),
    )


def run(*, quick: bool = False) -> list[Row]:
    """Train and judge the zoo; one row per group and gate, then AUROC and Spearman."""
    warnings.filterwarnings("ignore", message="Graph is not fully connected")
    torch.set_num_threads(max(1, torch.get_num_threads()))
    judged: list[Judged] = []
    if quick:  # smoke sizes: one fixed-place artifact, the extremes of ρ, one seed
        zoo = train_zoo(
            ("band",),
            (0,),
            group="tuned",
            strengths=(0.0, 1.0),
            n_train=400,
            epochs=4,
            clean_variants=False,
        )
        judged = [judge(z, n_audit=64) for z in zoo]
    else:
        for group, (artifacts, seeds) in GROUPS.items():
            for zoo in train_zoo(artifacts, seeds, group=group):
                judged.append(judge(zoo))
                _progress(judged[-1])
        for zoo in train_text_zoo((0, 1, 2)):
            judged.append(judge_text(zoo))
            _progress(judged[-1])
    print_zoo(judged)
    return rows(judged)


def _progress(judged: Judged) -> None:
    z = judged.zoo
    print(
        f"  {z.group:9s} {z.artifact:9s} rho={z.rho:g} seed={z.seed} {z.variant:13s} "
        f"effect={z.effect:+.2f} labelled={'blocked' if judged.labelled_blocked else 'passed'} "
        f"unlabelled={_word(judged.unlabelled_blocked)}"
        + (" (uninformative)" if judged.uninformative else ""),
        flush=True,
    )


def _word(blocked: bool | None) -> str:
    return "n/a" if blocked is None else "blocked" if blocked else "passed"


def rows(judged: list[Judged]) -> list[Row]:
    out = []
    for group in dict.fromkeys(j.zoo.group for j in judged):
        members = [j for j in judged if j.zoo.group == group]
        spurious = [j for j in members if j.zoo.spurious]
        clean = [j for j in members if j.zoo.clean]
        for gate in ("labelled", "unlabelled"):
            if any(getattr(j, f"{gate}_blocked") is None for j in members):
                continue  # the gate does not apply to this group
            blocked = sum(getattr(j, f"{gate}_blocked") for j in spurious)
            passed = sum(not getattr(j, f"{gate}_blocked") for j in clean)
            out.append(
                Row(
                    "shortcut_zoo",
                    f"{group}: {gate} gate, spurious blocked",
                    float(blocked),
                    f"of {len(spurious)}",
                    blocked / len(spurious) if spurious else None,
                    "spurious models",
                    "all",
                    blocked == len(spurious),
                )
            )
            out.append(
                Row(
                    "shortcut_zoo",
                    f"{group}: {gate} gate, clean passed",
                    float(passed),
                    f"of {len(clean)}",
                    passed / len(clean) if clean else None,
                    "clean models",
                    "all",
                    passed == len(clean),
                )
            )
    return out


def print_zoo(judged: list[Judged]) -> None:
    """Per-model lines, then per group and score the AUROC and Spearman correlation."""
    from rich.console import Console
    from rich.table import Table

    console = Console(width=160)
    models = Table(title="shortcut zoo: models")
    columns = ("group", "artifact", "ρ", "seed", "variant", "effect", "labelled", "unlabelled")
    for column in (*columns, "evidence"):
        models.add_column(
            column, justify="left" if column in {"group", "artifact", "variant"} else "right"
        )
    for j in judged:
        z = j.zoo
        models.add_row(
            z.group,
            z.artifact,
            f"{z.rho:g}",
            str(z.seed),
            z.variant,
            f"{z.effect:+.2f}",
            _verdict(j.labelled_blocked, z),
            _verdict(j.unlabelled_blocked, z) if j.unlabelled_blocked is not None else "n/a",
            "uninformative" if j.uninformative else "",
        )
    console.print(models)
    scores = Table(title="shortcut zoo: scores (spurious: effect > 0.3; clean: ρ = 0)")
    for column in ("group", "score", "AUROC", "Spearman vs effect"):
        scores.add_column(column, justify="left" if column in {"group", "score"} else "right")
    for group in dict.fromkeys(j.zoo.group for j in judged):
        members = [j for j in judged if j.zoo.group == group]
        for name in members[0].scores:
            auroc, rho = score_quality(members, name)
            scores.add_row(group, name, _fmt(auroc), _fmt(rho))
    console.print(scores)


def score_quality(members: list[Judged], name: str) -> tuple[float, float]:
    """AUROC of a score between spurious and clean models; its Spearman ρ with the effect."""
    from scipy.stats import spearmanr
    from sklearn.metrics import roc_auc_score

    ranked = [j for j in members if j.zoo.spurious or j.zoo.clean]
    truth = [j.zoo.spurious for j in ranked]
    values = [j.scores[name] for j in ranked]
    auroc = roc_auc_score(truth, values) if 0 < sum(truth) < len(truth) else math.nan
    effects = [j.zoo.effect for j in members]
    spearman = float(spearmanr([j.scores[name] for j in members], effects).statistic)
    return float(auroc), spearman


def _verdict(blocked: bool, zoo: ZooModel) -> str:
    if zoo.spurious:
        return "blocked" if blocked else "[red]MISSED[/red]"
    if zoo.clean:
        return "[red]FALSE ALARM[/red]" if blocked else "passed"
    return "blocked" if blocked else "passed"


def _fmt(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.2f}"
