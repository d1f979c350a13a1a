"""The discovery stage: its table, verdict contribution, warnings, figures and report."""

from __future__ import annotations

import warnings
from dataclasses import replace

import matplotlib.pyplot as plt
import pytest
import torch

from pipelines.audit_sets.images import load_audit_set, write_audit_set
from pipelines.errors import GateError
from pipelines.evidence.columns import DISCOVERY_COLUMNS, UNSCORED_COLUMNS
from pipelines.evidence.images import ImageEvidence
from pipelines.policy import AuditRules, DiscoveryChecks, GatePolicy
from pipelines.report.html import render_report
from pipelines.stages.assembly import rules_for_audit_set, text_audit_set_stage
from pipelines.stages.cam import audit_images
from pipelines.stages.discovery import discovery_audit
from pipelines.tracking import LoadedModel
from pipelines.verdict.decision import Verdict, decide
from xai_checks.examples.synthetic import CLASS_NAMES, make_lesions

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def audit_batch():
    return make_lesions(64, ruler="always", seed=100)


def _evidence(model, batch, rules: AuditRules) -> ImageEvidence:
    """The image evidence as the gate builds it for an audit set without masks."""
    no_masks = torch.zeros_like(batch.masks)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "empty spurious mask" warnings: nothing is scored
        audit = audit_images(
            model, batch.images, batch.labels, no_masks, class_names=CLASS_NAMES, regions=False
        )
    found = discovery_audit(
        model,
        batch.images,
        audit,
        rules.checks.discovery,
        labels=batch.labels,
        class_names=CLASS_NAMES,
    )
    return ImageEvidence(
        audit=audit,
        images=batch.images,
        class_names=CLASS_NAMES,
        masks=no_masks,
        discovery=found,
        regions=False,
    )


def test_a_confirmed_strategy_blocks_and_names_itself(trained_pair, audit_batch):
    evidence = _evidence(trained_pair.shortcut, audit_batch, AuditRules())
    table = evidence.discovery.table
    assert list(table.columns) == list(DISCOVERY_COLUMNS)
    assert table["rank"].tolist() == list(range(1, len(table) + 1))
    top = table.iloc[0]
    assert top["status"] == "confirmed" and top["class"] == "malignant"
    assert top["flip_rate"] > 0.5 and 0 < top["proposed_area"] < 0.3
    # At most max_proposals (3) are tested; untested rows have no flip rate.
    assert table["flip_rate"].notna().sum() <= 3
    assert set(evidence.score_table().columns) == set(UNSCORED_COLUMNS)
    assert evidence.audit.scores["spurious_mass"].isna().all()

    validation = evidence.validate(AuditRules())
    assert validation.scores.success and not validation.discovery.success
    decision = decide(validation.gating, validation.sanity, warnings=evidence.warnings())
    assert decision.verdict is Verdict.BLOCKED
    assert decision.reasons[0].startswith(
        "discovery found an unlabelled shortcut: strategy #1 of class 'malignant'"
    )
    metrics = evidence.metrics()
    assert metrics["discovery.confirmed"] == float((table["status"] == "confirmed").sum())
    assert metrics["discovery.top_suspicion"] == pytest.approx(top["suspicion"])
    assert not any(name.startswith("gradcam.") for name in metrics)  # nothing was scored
    assert "xai/discovery.csv" in evidence.tables()
    assert "xai/validation_discovery.json" in validation.documents()


def test_an_unconfirmed_suspicion_is_a_warning(trained_pair, audit_batch):
    # Bounds that make the clean model's clusters suspicious but never confirm them.
    low = AuditRules.from_options(
        max_discovery_suspicion=0.02, max_discovery_flip_rate=0.9, max_discovery_lift=1.0
    )
    evidence = _evidence(trained_pair.clean, audit_batch, low)
    table = evidence.discovery.table
    tested = table[table["flip_rate"].notna()]
    assert len(tested) >= 1 and (tested["flip_rate"] <= 0.9).all()
    assert set(table["status"]) <= {"suspicious", "ok"} and "suspicious" in set(table["status"])
    validation = evidence.validate(low)
    decision = decide(validation.gating, validation.sanity, warnings=evidence.warnings())
    assert decision.verdict is Verdict.PASSED
    assert len(decision.warnings) == int((table["status"] == "suspicious").sum())
    assert "strategy #1 of class" in decision.warnings[0]
    html = render_report(
        title="t",
        verdict=decision.verdict.value,
        reasons=decision.reasons,
        metrics=evidence.metrics(),
        bounds={"discovery.confirmed": 0.0},
        images={},
        warnings=decision.warnings,
        tables=evidence.report_tables(),
    )
    assert "Warnings (not blocking)" in html and "Discovered strategies" in html
    assert html.count("<tr>") >= len(table) + 2  # the strategy table, one row each


def test_figures_draw(trained_pair, audit_batch):
    evidence = _evidence(trained_pair.shortcut, audit_batch, AuditRules())
    figures = evidence.figures(AuditRules(), "v1")
    assert {
        "xai/discovery_clusters.png",
        "xai/discovery_samples.png",
        "xai/discovery_proposals.png",
    } <= set(figures)
    # No regions: no "worst spurious mass" grid, and no mass in the sample captions.
    assert "xai/gradcam_overlays.png" not in figures and "xai/gradcam_samples.png" in figures
    samples = figures["xai/gradcam_samples.png"]()
    try:
        assert "mass" not in samples.axes[0].get_title()
    finally:
        plt.close(samples)
    for path, draw in figures.items():
        fig = draw()
        try:
            assert len(fig.axes) >= 3, path
        finally:
            plt.close(fig)


def test_an_audit_set_without_masks_needs_discovery(tmp_path, audit_batch):
    batch = audit_batch
    manifest = write_audit_set(tmp_path, batch.images, batch.labels, batch.masks, CLASS_NAMES)
    plain = tmp_path / "plain.csv"
    plain.write_text(
        "\n".join(line.rsplit(",", 1)[0] for line in manifest.read_text().splitlines())
    )
    data = load_audit_set(plain, class_names=CLASS_NAMES)
    with pytest.raises(GateError, match=r"has no spurious regions .* enable checks\.discovery"):
        rules_for_audit_set(data, AuditRules())
    rules = rules_for_audit_set(data, AuditRules.from_options(discovery=True))
    assert not rules.checks.counterfactual.enabled  # nothing to remove without a region
    assert rules.evidence_lines(regions=False) == ("sanity", "discovery")
    with_masks = load_audit_set(manifest, class_names=CLASS_NAMES)
    assert rules_for_audit_set(with_masks, AuditRules()) == AuditRules()
    assert AuditRules().evidence_lines(regions=True) == (
        "gradcam",
        "layercam",
        "counterfactual",
        "sanity",
    )


def test_heatmaps_without_relevance_are_an_error(trained_pair, audit_batch):
    batch = audit_batch
    audit = audit_images(
        trained_pair.shortcut,
        batch.images,
        batch.labels,
        torch.zeros_like(batch.masks),
        regions=False,
    )
    gating = replace(audit.gating, low_res=torch.zeros_like(audit.gating.low_res))
    dead = replace(audit, methods={gating.method: gating})
    with pytest.raises(GateError, match="64 of 64 heatmaps have no relevance anywhere"):
        discovery_audit(trained_pair.shortcut, batch.images, dead, DiscoveryChecks())


def test_discovery_on_a_text_audit_set_is_an_error(tmp_path):
    policy = GatePolicy(
        model="m",
        audit_set=tmp_path / "reviews.csv",
        modality="text",
        checks={"discovery": {"enabled": True}},
    )
    model = LoadedModel(torch.nn.Identity(), "m", "1", "models:/m/1", None, None)
    with pytest.raises(GateError, match="does not apply to the text audit set"):
        text_audit_set_stage(model, policy)


def _band_truth(batch) -> torch.Tensor:
    """The band's pixels (the same on every image that has it)."""
    return batch.masks[batch.has_ruler][0]


@pytest.mark.parametrize(
    "placement",
    [
        {"shortcut_strength": 1.0},  # the model's own kind of data: half the images have it
        {"ruler": "always"},  # every image has it: the model predicts one class only
    ],
    ids=["natural", "one-predicted-class"],
)
def test_a_fixed_place_shortcut_is_found_and_confirmed_without_masks(trained_band_pair, placement):
    """One place on every image makes one cluster: found by what its region holds."""
    batch = make_lesions(96, seed=300, artifact="band", **placement)
    evidence = _evidence(trained_band_pair.shortcut, batch, AuditRules())
    table = evidence.discovery.table
    top = table.iloc[0]
    assert top["status"] == "confirmed" and top["class"] == "malignant"
    assert "presence" in top["evidence"] or "stereotypy" in top["evidence"]
    assert top["flip_rate"] > 0.9 and top["decided_share"] > 0.5
    assert top["decided_ci_low"] <= top["decided_share"] <= top["decided_ci_high"]
    if placement.get("ruler") == "always":
        assert (evidence.audit.predictions == 1).all()  # one predicted class, yet found
    else:
        assert top["pull"] > 0.8 and top["pull_ci_low"] > 0.5
    proposal = evidence.discovery.proposals[1]
    band = _band_truth(batch)
    overlap = (proposal.filled & band).sum() / band.sum()
    assert overlap > 0.8, "the confirmed region covers the band"
    validation = evidence.validate(AuditRules())
    decision = decide(validation.gating, validation.sanity)
    assert decision.verdict is Verdict.BLOCKED
    assert "suspicious by" in decision.reasons[0] and "decides" in decision.reasons[0]


def test_a_clean_model_passes_discovery_on_fixed_place_artifacts(trained_band_pair):
    """The clean model looks at lesions, which every class has and which vary: no suspicion."""
    for placement in ({"shortcut_strength": 0.0}, {"ruler": "always"}):
        batch = make_lesions(96, seed=301, artifact="band", **placement)
        evidence = _evidence(trained_band_pair.clean, batch, AuditRules())
        table = evidence.discovery.table
        # A small cluster may look suspicious (a warning); none is confirmed by behaviour.
        assert (table["status"] != "confirmed").all(), table.to_string()
        tested = table[table["pull"].notna()]
        assert (tested["pull"] < 0.1).all() and (tested["flip_rate"] < 0.2).all()
        validation = evidence.validate(AuditRules())
        assert decide(validation.gating, validation.sanity).verdict is Verdict.PASSED


def test_a_faint_fixed_texture_is_found_where_the_images_differ(
    trained_weave_pair,
):
    """The weave's Grad-CAM is coarse: its region spreads far beyond the faint strip (or
    stays on the lesion), and what is under it says little. The region where the images
    differ is the strip; the report says where the region came from."""
    batch = make_lesions(128, shortcut_strength=1.0, seed=303, artifact="weave")
    strip = batch.masks[batch.has_ruler][0]
    evidence = _evidence(trained_weave_pair.shortcut, batch, AuditRules())
    top = evidence.discovery.table.iloc[0]
    assert top["status"] == "confirmed" and top["class"] == "malignant", top.to_dict()
    assert top["evidence"].endswith("(region: where its images differ, not its heatmap)")
    assert "texture" in top["evidence"] or "presence" in top["evidence"]
    region = evidence.discovery.proposals[1].mask
    assert (region & strip).sum() >= 0.9 * strip.sum() and region.sum() < 2 * strip.sum()
    validation = evidence.validate(AuditRules())
    assert decide(validation.gating, validation.sanity).verdict is Verdict.BLOCKED

    clean = _evidence(trained_weave_pair.clean, batch, AuditRules())
    table = clean.discovery.table
    assert (table["status"] != "confirmed").all(), table.to_string()
    validation = clean.validate(AuditRules())
    assert decide(validation.gating, validation.sanity).verdict is not Verdict.BLOCKED


def test_region_masks_turn_a_confirmed_strategy_into_masks(trained_band_pair):
    batch = make_lesions(48, shortcut_strength=1.0, seed=302, artifact="band")
    evidence = _evidence(trained_band_pair.shortcut, batch, AuditRules()).discovery
    masks, ranks = evidence.region_masks()
    assert ranks and all(evidence.table.loc[r - 1, "status"] == "confirmed" for r in ranks)
    members = torch.zeros(48, dtype=torch.bool)
    for rank in ranks:
        members[evidence.proposals[rank].strategy.members] = True
    assert masks.flatten(1).any(dim=1).all()  # every row has a region, as a manifest needs
    union = masks[members].any(dim=0)
    assert torch.equal(masks[~members], union.expand_as(masks[~members]))
    band = _band_truth(batch)
    assert (union & band).sum() / band.sum() > 0.8
    with pytest.raises(GateError, match=r"strategy rank\(s\) \[99\] have no tested region"):
        evidence.region_masks([99])
