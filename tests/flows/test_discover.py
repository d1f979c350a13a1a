"""``xai-gate discover``: a shortcut nobody labelled, found, written down, and gated on exactly."""

from __future__ import annotations

import pytest
import torch
from typer.testing import CliRunner

from flows.cli import app
from flows.run import run_gate
from pipelines.audit_sets.images import load_audit_set
from pipelines.verdict.decision import Verdict
from xai_checks.examples.synthetic import CLASS_NAMES, make_lesions

pytestmark = pytest.mark.slow
MODEL = "fixed-place-model"
SEED, N = 100, 48
"""The audit set ``lesion_gate.policy`` writes: its seed and size."""


@pytest.fixture
def band_versions(trained_band_pair, lesion_gate, tracking_uri) -> None:
    """The bottom-band shortcut model as version 1, the clean model as version 2."""
    lesion_gate.register(trained_band_pair.shortcut, MODEL)
    lesion_gate.register(trained_band_pair.clean, MODEL)


def _unlabelled_policy(lesion_gate, folder, **rules):
    """The band where the training data had it (every malignant image), no masks."""
    return lesion_gate.policy(
        folder,
        MODEL,
        n=N,
        seed=SEED,
        rules={"discovery": True, **rules},
        regions=False,
        artifact="band",
        shortcut_strength=1.0,
    )


def test_a_confirmed_region_becomes_a_labelled_audit_set_that_gates_the_next_versions(
    band_versions, lesion_gate, tmp_path
):
    policy = _unlabelled_policy(lesion_gate, tmp_path)
    out = tmp_path / "labelled"
    args = ["discover", "--policy", str(policy), "--version", "1", "--write-audit-set", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1, result.output  # 1: a shortcut was confirmed
    assert "confirmed" in result.output
    assert f"wrote {out / 'manifest.csv'}" in result.output

    labelled = load_audit_set(out / "manifest.csv", class_names=CLASS_NAMES)
    source = load_audit_set(tmp_path / "audit" / "manifest.csv", class_names=CLASS_NAMES)
    assert labelled.has_regions and len(labelled) == N
    assert torch.equal(labelled.images[:], source.images[:])  # copied as they are
    assert torch.equal(labelled.labels, source.labels)
    masks = labelled.masks[:]
    truth = make_lesions(N, shortcut_strength=1.0, seed=SEED, artifact="band")
    band = truth.masks[truth.has_ruler][0]
    # A fixed place: every row's region is the band's place, whether or not it carries it.
    assert (masks & band).flatten(1).sum(dim=1).min() > 0.8 * band.sum()
    assert masks.float().mean() < 3 * band.float().mean()

    # From now on the exact labelled checks judge every version on it.
    exact = {"cam_methods": "gradcam", "sanity_images": 4}
    shortcut = run_gate(MODEL, "1", str(out / "manifest.csv"), **exact)
    assert shortcut.verdict is Verdict.BLOCKED
    reasons = " ".join(shortcut.reasons)
    assert "spurious_mass mean" in reasons and "removal flip rate" in reasons
    clean = run_gate(MODEL, "2", str(out / "manifest.csv"), **exact)
    assert clean.verdict is Verdict.PASSED and clean.promoted, clean.message
    assert abs(clean.summary["counterfactual.spurious_lift"]) < 0.1


def test_discover_writes_nothing_it_should_not(band_versions, lesion_gate, tmp_path):
    policy = _unlabelled_policy(lesion_gate, tmp_path)
    runner = CliRunner()

    # Nothing confirmed: there is nothing to write, and nothing is written. (Bounds no region
    # can exceed, rather than the clean model: its lesion region sits at the suspicion bound,
    # and discovery cannot tell the object a class is about from an artifact; see README.)
    lenient = _unlabelled_policy(
        lesion_gate, tmp_path / "lenient", max_discovery_flip_rate=1.0, max_discovery_lift=1.0
    )
    out = tmp_path / "nothing"
    args = ["discover", "--policy", str(lenient), "--version", "2", "--write-audit-set", str(out)]
    result = runner.invoke(app, args)
    assert result.exit_code == 2 and "no strategy to write" in result.output, result.output
    assert not out.exists() and not list(tmp_path.glob(".nothing-*"))
    listed = runner.invoke(app, ["discover", "--policy", str(lenient), "--version", "2"])
    assert listed.exit_code == 0 and "status" in listed.output

    # An existing audit set is never overwritten.
    taken = tmp_path / "audit"
    args = ["discover", "--policy", str(policy), "--version", "1", "--write-audit-set", str(taken)]
    result = runner.invoke(app, args)
    assert result.exit_code == 2 and "exists: choose an empty folder" in result.output

    strategy_only = runner.invoke(
        app, ["discover", "--policy", str(policy), "--version", "1", "--strategy", "1"]
    )
    assert strategy_only.exit_code == 2 and "give both" in strategy_only.output
