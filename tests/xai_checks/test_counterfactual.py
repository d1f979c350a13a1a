"""Counterfactual evidence: the fill, the paste, and the flip rates of real models."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from xai_checks.counterfactual import (
    MIN_FLIP_DROP,
    _InsertionPlan,
    counterfactual_tests,
    fill_from_surroundings,
    inserted_images,
    insertion_test,
    paste_artifacts,
    predict_proba,
    removal_test,
)
from xai_checks.errors import NonFiniteError, XAICheckError
from xai_checks.examples.synthetic import _RULER_COLOUR, make_lesions


class RulerDetector(nn.Module):
    """A hand-made 'shortcut model': class 1 exactly when a ruler-coloured pixel is present."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(1000.0))
        self.register_buffer("colour", torch.tensor(_RULER_COLOUR).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        closest = (x - self.colour).abs().amax(dim=1).flatten(1).amin(dim=1)
        logit = self.scale * (0.01 - closest)
        return torch.stack([-logit, logit], dim=1)


def test_fill_keeps_the_outside_and_matches_the_surroundings_inside():
    batch = make_lesions(4, ruler="always", seed=3)
    filled = fill_from_surroundings(batch.images, batch.masks)
    outside = ~batch.masks.unsqueeze(1).expand_as(filled)
    assert torch.equal(filled[outside], batch.images[outside])
    ruler = torch.tensor(_RULER_COLOUR).view(1, 3)
    for image, original, mask in zip(filled, batch.images, batch.masks, strict=True):
        inside = image[:, mask].T
        # No trace of the ruler: every filled pixel is far from its colour...
        assert (inside - ruler).abs().amax(dim=1).min() > 0.1
        # ...and close to the skin around it (a ring of 2 px outside the mask).
        ring = nn.functional.max_pool2d(mask[None, None].float(), 5, 1, 2)[0, 0].bool() & ~mask
        assert (inside.mean(0) - original[:, ring].mean(1)).abs().max() < 0.05


def test_fill_of_a_constant_image_is_that_constant_and_empty_masks_change_nothing():
    image = torch.full((1, 3, 16, 16), 0.3)
    mask = torch.zeros(1, 16, 16, dtype=torch.bool)
    mask[0, 4:12, 2:14] = True
    torch.testing.assert_close(fill_from_surroundings(image, mask), image)
    torch.testing.assert_close(fill_from_surroundings(image, torch.zeros_like(mask)), image)


def test_fill_refuses_a_mask_covering_the_whole_image():
    with pytest.raises(XAICheckError, match="mask of image 1 covers the whole image"):
        masks = torch.zeros(2, 8, 8, dtype=torch.bool)
        masks[1] = True
        fill_from_surroundings(torch.rand(2, 3, 8, 8), masks)


def test_a_batch_names_the_image_by_its_place_in_the_whole_set():
    masks = torch.zeros(5, 8, 8, dtype=torch.bool)
    masks[:, 0, 0] = True
    masks[3] = True
    with pytest.raises(XAICheckError, match="mask of image 3 covers the whole image"):
        removal_test(
            nn.Flatten(),
            torch.rand(5, 3, 8, 8),
            masks,
            torch.zeros(5, dtype=torch.long),
            batch_size=2,
        )


def test_paste_copies_only_the_donor_region():
    images, donors = torch.zeros(1, 3, 4, 4), torch.ones(1, 3, 4, 4)
    mask = torch.zeros(1, 4, 4, dtype=torch.bool)
    mask[0, 1, 2] = True
    pasted = paste_artifacts(images, donors, mask)
    assert pasted.sum() == 3 and (pasted[0, :, 1, 2] == 1).all()


def test_removal_and_insertion_on_a_model_that_reads_only_the_ruler():
    batch = make_lesions(24, ruler="always", seed=5)
    model = RulerDetector()
    removal = removal_test(model, batch.images, batch.masks, batch.labels, batch_size=7)
    assert removal.predictions.tolist() == [1] * 24  # the ruler is always there
    assert removal.predictions_without.tolist() == [0] * 24
    assert removal.flip_rate == 1.0
    assert removal.accuracy_with == pytest.approx(float((batch.labels == 1).float().mean()))
    assert removal.accuracy_without == pytest.approx(float((batch.labels == 0).float().mean()))

    insertion = insertion_test(model, batch.images, batch.masks, batch.labels)
    assert insertion.artifact_class == 1  # found without being told
    assert insertion.spurious_score > 0.99 and insertion.flip_rate == 1.0
    assert insertion.baseline.max() < 0.01
    assert set(insertion.scores_by_class) == {0, 1}
    assert (batch.labels[insertion.target_index] != 1).all()
    assert (batch.labels[insertion.source_index] == 1).all()


def test_images_without_artifacts_never_count_as_flipped():
    batch = make_lesions(6, ruler="always", seed=6)
    masks = batch.masks.clone()
    masks[:3] = False
    removal = removal_test(RulerDetector(), batch.images, masks, batch.labels)
    assert removal.has_artifact.tolist() == [False] * 3 + [True] * 3
    assert removal.flipped[:3].tolist() == [False] * 3
    assert removal.flip_rate == 1.0


def test_a_model_at_its_decision_boundary_tips_over_but_does_not_count_as_flipped():
    """An under-trained model (P ≈ 0.5 everywhere) changes its mind on any edit: noise."""
    batch = make_lesions(12, ruler="always", seed=6)
    timid = RulerDetector()
    with torch.no_grad():
        timid.scale.fill_(1.0)  # logits of ±0.01: P(class 1) moves 0.505 -> 0.49
    removal = removal_test(timid, batch.images, batch.masks, batch.labels)
    assert (removal.predictions != removal.predictions_without).all()  # every prediction tips
    assert removal.drop.abs().max() < MIN_FLIP_DROP
    assert removal.flip_rate == 0.0 and not removal.flipped.any()
    decided = removal_test(RulerDetector(), batch.images, batch.masks, batch.labels)
    assert decided.drop.min() > 0.99 and decided.flip_rate == 1.0


def test_bad_inputs_are_clear_errors():
    batch = make_lesions(4, ruler="never", seed=7)
    model = RulerDetector()
    with pytest.raises(XAICheckError, match="no image has a spurious mask"):
        removal_test(model, batch.images, batch.masks, batch.labels)
    with pytest.raises(XAICheckError, match=r"masks must have shape \(N, H, W\) = \(4, 64, 64\)"):
        removal_test(model, batch.images, batch.masks[:, :32], batch.labels)
    with pytest.raises(XAICheckError, match="labels must be 4 integer"):
        removal_test(model, batch.images, ~batch.masks, batch.labels[:3])
    with pytest.raises(XAICheckError, match="no image of class 7 has a spurious mask"):
        insertion_test(model, batch.images, ~batch.masks, batch.labels, artifact_class=7)
    one_class = torch.zeros(4, dtype=torch.long)
    with pytest.raises(XAICheckError, match="images of another class"):
        insertion_test(model, batch.images, ~batch.masks, one_class)


def test_predict_proba_restores_the_model_and_batches_consistently():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Dropout(0.5), nn.Flatten(), nn.LazyLinear(3))
    images = torch.rand(10, 3, 8, 8)
    model(images)  # materialise the lazy layer
    model.train()
    probabilities = predict_proba(model, images, batch_size=3)
    assert model.training  # restored
    torch.testing.assert_close(probabilities, predict_proba(model, images, batch_size=10))
    torch.testing.assert_close(probabilities.sum(1), torch.ones(10))


class PoisonLastImage(RulerDetector):
    """The ruler detector, but the last image of each batch gets NaN or Inf logits."""

    def __init__(self, value: float) -> None:
        super().__init__()
        self.value = value

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = super().forward(x)
        poison = torch.zeros_like(logits)
        poison[-1] = self.value
        return logits + poison


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_model_outputs_are_an_error_not_a_flip(value):
    """One poisoned image in a batch is enough: its argmax would be an arbitrary class."""
    batch = make_lesions(4, ruler="always", seed=3)
    model = PoisonLastImage(value)
    message = r"^the model's outputs contain NaN or Inf$"
    with pytest.raises(NonFiniteError, match=message):
        removal_test(model, batch.images, batch.masks, batch.labels)
    with pytest.raises(NonFiniteError, match=message):
        predict_proba(model, batch.images, batch_size=3)  # the poison lands in the 2nd batch
    # The same images through the unpoisoned detector are fine.
    assert torch.isfinite(predict_proba(RulerDetector(), batch.images)).all()


@pytest.mark.slow
def test_shortcut_model_flips_when_the_ruler_goes_and_the_clean_one_does_not(trained_pair):
    audit = make_lesions(64, ruler="always", seed=100)
    shortcut = removal_test(trained_pair.shortcut, audit.images, audit.masks, audit.labels)
    clean = removal_test(trained_pair.clean, audit.images, audit.masks, audit.labels)
    # Observed: 0.98 vs 0.02. The shortcut model calls every ruler image malignant.
    assert shortcut.flip_rate > 0.8
    assert clean.flip_rate < 0.1
    assert shortcut.accuracy_with == pytest.approx(0.5, abs=0.1)
    assert clean.accuracy_without > 0.75


@pytest.mark.slow
def test_spurious_score_separates_the_shortcut_model_from_the_clean_one(trained_pair):
    audit = make_lesions(64, ruler="always", seed=100)
    shortcut = insertion_test(trained_pair.shortcut, audit.images, audit.masks, audit.labels)
    clean = insertion_test(trained_pair.clean, audit.images, audit.masks, audit.labels)
    # Observed: 1.00 vs 0.18 (the clean model's own uncertainty; its lift is about 0.02).
    assert shortcut.artifact_class == 1 and shortcut.spurious_score > 0.85
    assert clean.spurious_score < 0.4 and abs(clean.lift) < 0.1
    assert not math.isnan(clean.flip_rate) and clean.flip_rate < 0.1


class RecordingStack:
    """A lazy stack over a tensor that records how many rows each read asked for."""

    def __init__(self, data: torch.Tensor) -> None:
        self.data, self.reads = data, []

    @property
    def shape(self) -> torch.Size:
        return self.data.shape

    def __getitem__(self, index):
        rows = self.data[index]
        self.reads.append(rows.shape[0])
        return rows


def test_one_streamed_pass_equals_the_separate_tests_and_reads_one_batch_at_a_time():
    batch = make_lesions(23, ruler="always", seed=8)
    masks = batch.masks.clone()
    masks[::4] = False  # some images carry no artifact
    model = RulerDetector()
    images, lazy_masks = RecordingStack(batch.images), RecordingStack(masks)
    removal, insertion = counterfactual_tests(model, images, lazy_masks, batch.labels, batch_size=5)
    assert max(images.reads) <= 5 and max(lazy_masks.reads) <= 5

    alone = removal_test(model, batch.images, masks, batch.labels, batch_size=23)
    assert torch.equal(removal.predictions_without, alone.predictions_without)
    torch.testing.assert_close(removal.probabilities, alone.probabilities)
    assert removal.edited is None  # images are never kept: the pass streams
    separate = insertion_test(model, batch.images, masks, batch.labels, batch_size=23)
    assert insertion.artifact_class == separate.artifact_class == 1
    assert torch.equal(insertion.target_index, separate.target_index)
    assert torch.equal(insertion.source_index, separate.source_index)
    torch.testing.assert_close(insertion.probability, separate.probability)
    # Donors cycle over the class-1 images that have an artifact, in audit-set order,
    # and each batch pastes exactly the donors the result reports.
    donors = ((batch.labels == 1) & masks.flatten(1).any(dim=1)).nonzero().flatten()
    expected = donors[torch.arange(insertion.target_index.numel()) % donors.numel()]
    assert torch.equal(insertion.source_index, expected)
    plan = _InsertionPlan(1, batch.labels != 1, donors)
    pasted = torch.cat([plan.donors_of(start, min(start + 5, 23)) for start in range(0, 23, 5)])
    assert torch.equal(pasted, expected)
    # The pairs a reviewer sees are redrawn from the indices: the paste made P(1) near 1.
    # (Receivers with an unmasked ruler keep it when cleaned, so take masked ones.)
    masked = masks[insertion.target_index].flatten(1).any(dim=1)
    cleaned, pasted = inserted_images(
        batch.images, masks, insertion.target_index[masked], insertion.source_index[masked]
    )
    assert predict_proba(model, cleaned)[:, 1].max() < 0.01
    assert predict_proba(model, pasted)[:, 1].min() > 0.99
