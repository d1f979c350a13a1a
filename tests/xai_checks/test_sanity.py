"""Cascading parameter randomisation: rank correlation, decorrelation, hygiene, errors."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.stats import pearsonr, rankdata, spearmanr
from torch import Tensor, nn
from torchvision.models import resnet18, resnet50, vit_b_16
from transformers import BertConfig, BertForSequenceClassification

from xai_checks.errors import NonFiniteError, XAICheckError
from xai_checks.sanity import (
    MAX_CASCADE_STEPS,
    SanityResult,
    cam_explainer,
    cascade_blocks,
    cascading_randomization,
    spearman,
)

RESNET_CASCADE_TOP = ("fc", "layer4.1.bn2", "layer4.1.conv2", "layer4.1.bn1")


@pytest.fixture(scope="module")
def resnet() -> nn.Module:
    torch.manual_seed(0)
    return resnet18(weights=None).eval()


@pytest.fixture(scope="module")
def images() -> Tensor:
    return torch.rand(4, 3, 64, 64, generator=torch.Generator().manual_seed(1))


def sobel(model: nn.Module, images: Tensor, targets: Tensor) -> Tensor:
    """Gradient magnitude of the grey image: plausible-looking, blind to the model."""
    grey = images.mean(dim=1, keepdim=True)
    kx = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]]).view(1, 1, 3, 3)
    gx = F.conv2d(grey, kx, padding=1)
    gy = F.conv2d(grey, kx.transpose(-1, -2), padding=1)
    return (gx**2 + gy**2).sqrt().squeeze(1)


class Scale(nn.Module):
    """A bare parameter without ``reset_parameters``: takes the N(0, 0.02) fallback."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.weight


def tiny_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.ReLU(),
        Scale(8),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 3),
    )


# --- spearman ---------------------------------------------------------------


def test_spearman_matches_scipy_on_tied_data():
    gen = torch.Generator().manual_seed(0)
    # ReLU'd and rounded: about half exact zeros, and many ties among the rest.
    a = torch.randn(6, 10, 50, generator=gen).relu().mul(4).round()
    b = (a + torch.randn(6, 10, 50, generator=gen)).relu().mul(2).round()
    rho = spearman(a, b)
    assert rho.dtype == torch.float64 and rho.shape == (6,)
    pairs = [(x.ravel(), y.ravel()) for x, y in zip(a.numpy(), b.numpy(), strict=True)]
    expected = [spearmanr(x, y).statistic for x, y in pairs]
    np.testing.assert_allclose(rho.numpy(), expected, rtol=0, atol=1e-12)
    # The ties matter: ordinal ranks (ties broken by position) give other values.
    ordinal = [pearsonr(rankdata(x, "ordinal"), rankdata(y, "ordinal"))[0] for x, y in pairs]
    assert np.abs(np.subtract(ordinal, expected)).min() > 1e-3


def test_spearman_is_exactly_one_for_monotone_and_minus_one_for_reversed():
    a = torch.rand(3, 100, generator=torch.Generator().manual_seed(2)).round(decimals=1)
    assert torch.equal(spearman(a, a.exp() * 3 + 1), torch.ones(3, dtype=torch.float64))
    assert torch.equal(spearman(a, -a), -torch.ones(3, dtype=torch.float64))


def test_spearman_constant_or_nan_row_is_nan_without_warnings():
    a = torch.rand(3, 20, generator=torch.Generator().manual_seed(3))
    b = a.clone()
    b[1] = 0.5  # constant
    b[2, 4] = torch.nan
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rho = spearman(a, b)
    assert rho[0] == 1.0
    assert rho[1:].isnan().all()


def test_spearman_rejects_shape_mismatch():
    with pytest.raises(XAICheckError, match=r"\(2, 5\) and \(2, 6\)"):
        spearman(torch.rand(2, 5), torch.rand(2, 6))


# --- the cascade ------------------------------------------------------------


def test_gradcam_maps_decorrelate_as_the_top_layers_are_randomised(resnet, images):
    result = cascading_randomization(resnet, images, cam_explainer("gradcam"), max_steps=4)
    assert result.layers == RESNET_CASCADE_TOP
    assert result.spearman.shape == (4, 4)
    assert result.original.shape == result.randomized.shape == (4, 64, 64)
    # Observed per-step means: 0.05, 0.05, -0.40, -0.40 (a fresh BN already holds its
    # reset values, so BN steps change nothing); no image above 0.19 at any step.
    # A CAM that explained the original instead of the copy would stay at exactly 1.
    assert result.final_spearman < 0.5
    assert (result.spearman < 0.5).all()


def test_edge_detector_ignores_the_weights_and_keeps_spearman_exactly_one():
    model = tiny_net()
    images = torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(4))
    result = cascading_randomization(model, images, sobel)
    assert result.layers == ("5", "2", "0")  # every parameter owner, output side first
    assert torch.equal(result.spearman, torch.ones(3, 3, dtype=torch.float64))
    assert result.final_spearman == 1.0
    assert torch.equal(result.original, result.randomized)


def test_original_model_is_left_exactly_as_it_was(resnet, images):
    model = resnet18(weights=None)
    model.train()  # BN would update its running stats if the original were run
    model.layer2.eval()
    for param in model.layer1.parameters():
        param.requires_grad_(False)
    model.fc.bias.requires_grad_(False)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    modes = [m.training for m in model.modules()]
    flags = [p.requires_grad for p in model.parameters()]

    cascading_randomization(model, images[:2], cam_explainer(), max_steps=2)

    after = model.state_dict()
    assert state.keys() == after.keys()
    assert all(torch.equal(state[k], after[k]) for k in state)
    assert [m.training for m in model.modules()] == modes
    assert [p.requires_grad for p in model.parameters()] == flags
    assert all(p.grad is None for p in model.parameters())


def test_global_rng_untouched_and_results_reproducible_by_seed(resnet, images):
    explainer = cam_explainer(target_layer="layer4")
    before = torch.get_rng_state()
    first = cascading_randomization(resnet, images, explainer, max_steps=3, seed=7)
    assert torch.equal(torch.get_rng_state(), before)
    second = cascading_randomization(resnet, images, explainer, max_steps=3, seed=7)
    other = cascading_randomization(resnet, images, explainer, max_steps=3, seed=8)
    for field in ("spearman", "targets", "original", "randomized"):
        assert torch.equal(getattr(first, field), getattr(second, field)), field
    assert not torch.equal(first.randomized, other.randomized)


def test_targets_default_to_original_predictions_and_stay_fixed():
    model = tiny_net()
    # One bright channel per image: enough for the random net to predict two classes.
    channel = torch.eye(3).repeat(2, 1).view(6, 3, 1, 1)
    images = 4 * channel * torch.rand(6, 3, 16, 16, generator=torch.Generator().manual_seed(5)) - 1
    seen: list[tuple[nn.Module, Tensor, Tensor]] = []

    def recording(model: nn.Module, images: Tensor, targets: Tensor) -> Tensor:
        seen.append((model, targets.clone(), model[2].weight.detach().clone()))
        targets.fill_(0)  # a careless explainer must not change later steps' targets
        return sobel(model, images, targets)

    with torch.no_grad():
        predicted = model.eval()(images).argmax(dim=1)
    assert predicted.unique().numel() > 1  # otherwise "fixed" would prove little

    result = cascading_randomization(model, images, recording)
    assert len(seen) == 1 + len(result.layers)
    assert torch.equal(result.targets, predicted)
    assert all(torch.equal(targets, predicted) for _, targets, _ in seen)
    # The randomised copy is explained, never the original.
    assert all(explained is not model for explained, _, _ in seen)
    # Step 2 re-draws Scale's bare parameter from N(0, 0.02): ones before, small after.
    assert result.layers[1] == "2"
    assert torch.equal(seen[1][2], torch.ones(8, 1, 1))
    assert seen[2][2].abs().max() < 0.1 and seen[2][2].std() > 0.005

    seen.clear()
    given = torch.tensor([2, 1, 0, 2, 1, 0])
    assert torch.equal(cascading_randomization(model, images, recording, given).targets, given)
    assert all(torch.equal(targets, given) for _, targets, _ in seen)


def test_mean_spearman_ignores_undefined_images():
    result = SanityResult(
        layers=("b", "a"),
        spearman=torch.tensor([[1.0, torch.nan], [0.5, 0.3]], dtype=torch.float64),
        targets=torch.zeros(2, dtype=torch.long),
        original=torch.zeros(2, 4, 4),
        randomized=torch.zeros(2, 4, 4),
    )
    torch.testing.assert_close(result.mean_spearman, torch.tensor([1.0, 0.4], dtype=torch.float64))
    assert result.final_spearman == pytest.approx(0.4)


# --- errors -----------------------------------------------------------------


def test_unknown_cam_method_lists_the_known_ones():
    with pytest.raises(XAICheckError, match=r"'gradcam'.*'layercam'"):
        cam_explainer("gradcamm")


def test_module_target_layer_is_refused_with_a_hint_to_pass_its_name(resnet):
    with pytest.raises(TypeError, match="dotted name"):
        cam_explainer(target_layer=resnet.layer4)
    with pytest.raises(TypeError, match="dotted name"):
        cam_explainer(target_layer=["layer3", resnet.layer4])


def test_parameter_free_model_is_refused():
    with pytest.raises(XAICheckError, match="no parameters"):
        cascading_randomization(nn.Sequential(nn.ReLU()), torch.rand(1, 3, 8, 8), sobel)


@pytest.mark.parametrize("shape", [(3, 16, 16), (0, 3, 16, 16)])
def test_bad_images_are_refused(shape):
    with pytest.raises(XAICheckError, match="N, C, H, W"):
        cascading_randomization(tiny_net(), torch.rand(shape), sobel)


def test_non_finite_heatmaps_name_the_randomised_layer():
    calls = []

    def breaks_after_first_step(model: nn.Module, images: Tensor, targets: Tensor) -> Tensor:
        calls.append(None)
        maps = sobel(model, images, targets)
        return maps / 0.0 if len(calls) == 3 else maps

    images = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(6))
    with pytest.raises(NonFiniteError, match=r"randomising '2' \(step 2 of 3\)"):
        cascading_randomization(tiny_net(), images, breaks_after_first_step)


def test_a_map_that_goes_flat_counts_as_fully_changed_and_a_flat_original_as_undefined():
    images = torch.rand(3, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    model = nn.Sequential(nn.Conv2d(3, 2, 1), nn.Flatten(), nn.LazyLinear(2))
    model(images)
    calls = []

    def explainer(m, x, _t):
        calls.append(1)
        maps = x.mean(dim=1).clone()
        if len(calls) > 1:  # after randomising: image 0 goes flat
            maps[0] = 0.0
        maps[1] = 0.25  # image 1 is flat all along
        return maps

    result = cascading_randomization(model, images, explainer, max_steps=1)
    assert result.spearman[0, 0].item() == 0.0
    assert math.isnan(result.spearman[0, 1].item())
    assert result.spearman[0, 2].item() == 1.0


# --- bounded cost -------------------------------------------------------------


@pytest.mark.parametrize(
    ("build", "first", "last"),
    [
        (lambda: resnet50(weights=None), "fc", "conv1"),
        (lambda: vit_b_16(weights=None), "heads", "conv_proj"),
        (
            lambda: BertForSequenceClassification(BertConfig(num_hidden_layers=12)),
            "classifier",
            "bert.embeddings",
        ),
    ],
    ids=["resnet50", "vit_b_16", "bert-12"],
)
def test_large_models_are_randomised_block_by_block_within_the_step_bound(build, first, last):
    model = build()
    blocks = cascade_blocks(model)
    assert len(blocks) <= MAX_CASCADE_STEPS
    assert blocks[0][0] == first and blocks[-1][0] == last  # output side first
    owners = [
        n for n, m in model.named_modules() if next(m.parameters(recurse=False), None) is not None
    ]
    members = [member for _, group in blocks for member in group]
    assert sorted(members) == sorted(owners)  # every parameter once, none forgotten
    if isinstance(model, BertForSequenceClassification):  # whole Transformer layers as steps
        assert [n for n, _ in blocks[2:14]] == [
            f"bert.encoder.layer.{i}" for i in range(11, -1, -1)
        ]


def test_the_cascade_on_resnet50_takes_at_most_fifteen_steps_and_randomises_everything():
    torch.manual_seed(0)
    model = resnet50(weights=None).eval()
    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    result = cascading_randomization(model, images, cam_explainer("gradcam"))
    assert len(result.layers) == result.spearman.shape[0] <= MAX_CASCADE_STEPS
    assert result.layers[:4] == ("fc", "layer4.2", "layer4.1", "layer4.0")
    assert result.final_spearman < 0.5


def test_small_models_keep_one_step_per_layer():
    assert [name for name, _ in cascade_blocks(tiny_net())] == ["5", "2", "0"]
    assert cascade_blocks(nn.Linear(2, 2)) == [("", ("",))]


def test_batches_of_the_explainer_give_the_maps_of_one_pass():
    """A model exported with a static batch of one is explained one image at a time."""
    model = tiny_net()
    images = torch.rand(5, 3, 16, 16, generator=torch.Generator().manual_seed(8))
    sizes: list[int] = []

    def counting(model: nn.Module, images: Tensor, targets: Tensor) -> Tensor:
        sizes.append(images.shape[0])
        return cam_explainer("gradcam", "0")(model, images, targets)

    whole = cascading_randomization(model, images, counting, seed=3)
    assert set(sizes) == {5}
    sizes.clear()
    single = cascading_randomization(model, images, counting, seed=3, batch_size=2)
    assert sizes == [2, 2, 1] * (1 + len(single.layers))
    assert torch.allclose(single.spearman, whole.spearman, atol=1e-6)
