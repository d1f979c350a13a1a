"""The counterfactual and sanity stages, the merged score table and the figures."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from pipelines.evidence.columns import COUNTERFACTUAL_COLUMNS, SCORE_COLUMNS
from pipelines.evidence.images import ImageEvidence
from pipelines.policy import AuditRules
from pipelines.stages.cam import audit_images
from pipelines.stages.counterfactual import counterfactual_audit
from pipelines.stages.sanity import sanity_audit
from pipelines.verdict.decision import Verdict, decide
from xai_checks.examples.synthetic import CLASS_NAMES, make_lesions

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def audit_batch():
    return make_lesions(32, ruler="always", seed=100)


def _evidence(model, batch) -> ImageEvidence:
    ids = [f"img{i}" for i in range(len(batch))]
    args = (model, batch.images, batch.labels, batch.masks)
    return ImageEvidence(
        audit=audit_images(*args, image_ids=ids, class_names=CLASS_NAMES),
        counterfactual=counterfactual_audit(*args, class_names=CLASS_NAMES),
        sanity=sanity_audit(model, batch.images, image_ids=ids, n_images=6),
    )


def test_counterfactual_columns_line_up_with_the_audit_rows(trained_pair, audit_batch):
    cf = counterfactual_audit(
        trained_pair.shortcut,
        audit_batch.images,
        audit_batch.labels,
        audit_batch.masks,
        class_names=CLASS_NAMES,
    )
    assert list(cf.columns) == list(COUNTERFACTUAL_COLUMNS)
    assert cf.artifact_class_name == "malignant"
    malignant = (audit_batch.labels == 1).numpy()
    # Only images of other classes received the artifact; the rest are null.
    assert cf.columns["artifact_class_probability"][malignant].isna().all()
    assert (cf.columns["artifact_class_probability"][~malignant] > 0.5).all()
    assert cf.columns["flipped_on_removal"].sum() == int(cf.removal.flipped.sum())
    metrics = cf.metrics()
    assert metrics["counterfactual.removal_flip_rate"] == pytest.approx(cf.removal.flip_rate)
    assert (
        metrics["counterfactual.removal_flip_rate_ci_low"]
        <= metrics["counterfactual.removal_flip_rate"]
        <= metrics["counterfactual.removal_flip_rate_ci_high"]
    )
    assert metrics["counterfactual.spurious_score"] > 0.85
    assert metrics["counterfactual.artifact_class"] == 1.0


def test_shortcut_model_is_blocked_on_heatmap_and_counterfactual_evidence(
    trained_pair, audit_batch
):
    evidence = _evidence(trained_pair.shortcut, audit_batch)
    table = evidence.score_table()
    assert list(table.columns) == [
        *SCORE_COLUMNS,
        *COUNTERFACTUAL_COLUMNS,
    ]
    validation = evidence.validate(AuditRules())
    decision = decide(validation.scores, validation.sanity)
    assert decision.verdict is Verdict.BLOCKED
    reasons = " ".join(decision.reasons)
    for check in ("spurious_mass mean", "removal flip rate", "spurious lift"):
        assert check in reasons
    assert validation.sanity is not None and validation.sanity.success
    assert set(validation.documents()) == {"xai/validation.json", "xai/validation_sanity.json"}


def test_clean_model_passes_every_line_of_evidence(trained_pair, audit_batch):
    evidence = _evidence(trained_pair.clean, audit_batch)
    validation = evidence.validate(AuditRules())
    assert validation.success, (validation.scores.failures, validation.sanity.failures)
    metrics = evidence.metrics()
    assert metrics["sanity.final_spearman"] < 0.5
    assert metrics["sanity.steps"] == len(evidence.sanity.result.layers) == 8
    (series,) = evidence.series().values()
    assert len(series) == 8 and series[-1] == pytest.approx(metrics["sanity.final_spearman"])


def test_sanity_stage_uses_the_gating_method_on_the_first_images(trained_pair, audit_batch):
    ids = [f"img{i}" for i in range(len(audit_batch))]
    stage = sanity_audit(
        trained_pair.clean, audit_batch.images, image_ids=ids, method="layercam", n_images=4
    )
    assert stage.table["image_id"].tolist() == ids[:4]
    assert stage.method == "layercam" and stage.images.shape[0] == 4
    assert stage.table["spearman"].tolist() == pytest.approx(stage.result.spearman[-1].tolist())


def test_figures_draw_for_every_method_and_stage(trained_pair, audit_batch):
    import matplotlib.pyplot as plt

    evidence = ImageEvidence(
        audit=audit_images(
            trained_pair.shortcut,
            audit_batch.images,
            audit_batch.labels,
            audit_batch.masks,
            methods=("gradcam", "hirescam"),
            keep_worst=4,
        ),
        counterfactual=_evidence(trained_pair.shortcut, audit_batch).counterfactual,
        sanity=_evidence(trained_pair.shortcut, audit_batch).sanity,
        images=audit_batch.images,
        class_names=CLASS_NAMES,
        masks=audit_batch.masks,
    )
    figures = evidence.figures(AuditRules(), "v1")
    assert set(figures) == {
        "xai/gradcam_overlays.png",
        "xai/gradcam_samples.png",
        "xai/hirescam_overlays.png",
        "xai/hirescam_samples.png",
        "xai/counterfactual_removal.png",
        "xai/counterfactual_insertion.png",
        "xai/sanity.png",
    }
    for draw in figures.values():
        fig = draw()
        try:
            assert len(fig.axes) >= 2
        finally:
            plt.close(fig)
    assert torch.equal(evidence.audit.gating.samples.images, audit_batch.images[:4])


def test_an_explanation_that_ignores_the_weights_makes_the_gate_inconclusive(trained_pair):
    """An edge detector looks like a heatmap, so the gate must refuse to decide on it,
    even for the clean model whose scores pass."""
    import torch.nn.functional as F

    from pipelines.stages.sanity import SanityEvidence
    from xai_checks.sanity import cascading_randomization

    def edges(_model, images, _targets):
        grey = images.mean(dim=1, keepdim=True)
        kernel = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])
        gx = F.conv2d(grey, kernel.view(1, 1, 3, 3), padding=1)
        gy = F.conv2d(grey, kernel.T.reshape(1, 1, 3, 3), padding=1)
        return (gx**2 + gy**2).sqrt().squeeze(1)

    batch = make_lesions(8, ruler="always", seed=1)
    clean = _evidence(trained_pair.clean, batch)
    result = cascading_randomization(trained_pair.clean, batch.images, edges)
    table = pd.DataFrame({"image_id": list("abcdefgh"), "spearman": result.spearman[-1].numpy()})
    evidence = ImageEvidence(
        audit=clean.audit,
        counterfactual=clean.counterfactual,
        sanity=SanityEvidence(result, batch.images, table, "edges"),
    )
    validation = evidence.validate(AuditRules())
    assert validation.scores.success
    decision = decide(validation.scores, validation.sanity)
    assert result.final_spearman == 1.0
    assert decision.verdict is Verdict.INCONCLUSIVE
    assert decision.reasons == [
        "sanity check failed: heatmaps barely change when the model's weights are randomised "
        "(mean Spearman 1.000 after 8 layers exceeds max_sanity_correlation 0.500), so they "
        "do not explain this model"
    ]


def test_overlay_titles_show_data_strings_literally():
    """Image ids and labels are data: a '$' must not be read as maths (or crash the plot)."""
    import matplotlib.pyplot as plt

    from pipelines.report.plots import overlay_grid
    from pipelines.stages.cam import Cases

    rows = pd.DataFrame(
        {"image_id": ["a$x^{2$.png"], "label": ["$b"], "prediction": ["c"], "spurious_mass": [0.5]}
    )
    cases = Cases(
        torch.rand(1, 3, 8, 8), torch.rand(1, 8, 8), torch.ones(1, 8, 8, dtype=bool), rows
    )
    fig = overlay_grid(cases, title="v1 $ok")
    try:
        fig.canvas.draw()  # mathtext would raise on the unbalanced '$'
        assert fig.axes[0].get_title().startswith("a$x^{2$.png")
    finally:
        plt.close(fig)
