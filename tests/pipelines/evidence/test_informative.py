"""Evidence about nothing: accuracy at chance, one prediction, blank images; the policy decides."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from pipelines.evidence.gx import SuiteResult
from pipelines.evidence.images import ImageEvidence
from pipelines.evidence.informative import class_count, uninformative_reasons
from pipelines.policy import AuditRules, GatePolicy
from pipelines.stages.cam import audit_images
from pipelines.verdict.decision import Verdict, decide
from xai_checks.examples.synthetic import CLASS_NAMES, make_lesions

PASSED = SuiteResult(success=True, failures=[], result={})
BLOCKED = SuiteResult(success=False, failures=["spurious_mass mean 0.4 exceeds 0.3"], result={})


def test_a_model_that_tells_the_classes_apart_is_evidence():
    labels = ["benign", "malignant"] * 20
    predictions = labels[:36] + ["benign"] * 4  # 38 of 40 right
    assert uninformative_reasons(labels, predictions, n_classes=2) == []


def test_accuracy_at_chance_and_one_prediction_for_mixed_labels_are_named():
    labels = ["benign", "malignant"] * 20
    reasons = uninformative_reasons(labels, ["malignant"] * 40, n_classes=2)
    assert len(reasons) == 2
    assert reasons[0].startswith("accuracy 0.50 on 40 inputs is not above chance (0.50")
    assert reasons[1] == "the model predicts 'malignant' for 100% of inputs whose labels are mixed"


def test_chance_is_the_majority_share_so_predicting_it_everywhere_is_not_skill():
    labels = ["benign"] * 36 + ["malignant"] * 4
    reasons = uninformative_reasons(labels, ["benign"] * 40, n_classes=2)  # 90 % "accuracy"
    assert "not above chance (0.90" in reasons[0]


def test_a_one_class_audit_set_is_compared_with_one_over_the_classes():
    labels = ["malignant"] * 30  # all right: evidence that the model sees the class
    assert uninformative_reasons(labels, labels, n_classes=2) == []
    half = ["malignant"] * 15 + ["benign"] * 15
    assert "not above chance (0.50" in uninformative_reasons(labels, half, n_classes=2)[0]


def test_blank_images_are_named_with_their_ids_when_more_than_a_twentieth():
    labels = ["benign", "malignant"] * 10
    spread = [0.2] * 18 + [0.0, 1e-4]
    reasons = uninformative_reasons(
        labels, labels, n_classes=2, pixel_spread=spread, ids=[f"i{k}" for k in range(20)]
    )
    assert reasons == [
        "2 of 20 images are (near) constant (pixel std < 1/255), e.g. i18, i19: check how "
        "they decode"
    ]
    assert uninformative_reasons(labels, labels, n_classes=2, pixel_spread=[0.2] * 19 + [0]) == []


def test_class_count_comes_from_names_or_indices():
    table = pd.DataFrame({"label": ["0", "3"], "prediction": ["1", "1"]})
    assert class_count(("a", "b", "c"), table) == 3
    assert class_count(None, table) == 4
    assert class_count(None, pd.DataFrame({"label": ["x"], "prediction": ["y"]})) == 2


@pytest.mark.parametrize(
    ("policy", "verdict"),
    [("inconclusive", Verdict.INCONCLUSIVE), ("block", Verdict.BLOCKED), ("warn", Verdict.PASSED)],
)
def test_the_policy_decides_what_a_pass_on_uninformative_evidence_is(policy, verdict):
    decision = decide(PASSED, uninformative=["accuracy 0.50"], on_uninformative=policy)
    assert decision.verdict is verdict
    said = decision.warnings if verdict is Verdict.PASSED else decision.reasons
    assert said == ["uninformative evidence: accuracy 0.50"]


def test_a_block_stays_a_block_and_carries_the_finding_as_a_warning():
    decision = decide(BLOCKED, uninformative=["accuracy 0.50"], on_uninformative="warn")
    assert decision.verdict is Verdict.BLOCKED
    assert decision.reasons == ["spurious_mass mean 0.4 exceeds 0.3"]
    assert decision.warnings == ["uninformative evidence: accuracy 0.50"]


def test_the_default_policy_does_not_promote_on_uninformative_evidence():
    assert GatePolicy.model_fields["checks"].default.uninformative == "inconclusive"
    with pytest.raises(ValueError, match="uninformative"):
        AuditRules.model_validate({"checks": {"uninformative": "pass"}})


@pytest.mark.slow
def test_white_images_from_a_clipping_decoder_make_a_clean_pass_uninformative(trained_pair):
    batch = make_lesions(40, ruler="always", seed=7)
    rules = AuditRules()

    def evidence(images: torch.Tensor) -> ImageEvidence:
        audit = audit_images(
            trained_pair.clean, images, batch.labels, batch.masks, class_names=CLASS_NAMES
        )
        return ImageEvidence(audit=audit, class_names=CLASS_NAMES, masks=batch.masks)

    white = evidence(torch.ones_like(batch.images)).validate(rules)
    assert any("40 of 40 images are (near) constant" in r for r in white.uninformative)
    assert any(r.startswith("accuracy 0.") for r in white.uninformative)
    clean = evidence(batch.images).validate(rules)
    assert clean.uninformative == ()
