"""The CAM engine (through GradCAM): Captum agreement, targets, errors, state hygiene."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from torch import nn
from torchvision.models import resnet18

from xai_checks import GradCAM
from xai_checks.errors import NonFiniteError, TargetLayerError


@pytest.fixture(scope="module")
def resnet() -> nn.Module:
    torch.manual_seed(0)
    return resnet18(weights=None).eval()


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.rand(4, 3, 224, 224, generator=torch.Generator().manual_seed(1))


def _hooks(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def test_raw_maps_match_captum_layer_gradcam(resnet, images):
    from captum.attr import LayerGradCam

    result = GradCAM(resnet, "layer4").explain(images, targets=3)
    captum = LayerGradCam(resnet, resnet.layer4).attribute(images, target=3, relu_attributions=True)
    assert result.layer_maps[0].shape == (4, 7, 7)
    torch.testing.assert_close(
        result.layer_maps[0], captum.squeeze(1).detach(), rtol=1e-4, atol=1e-6
    )


def test_output_is_scaled_per_map_at_input_resolution(resnet, images):
    heatmaps = GradCAM(resnet)(images[:, :, :160, :192])
    assert heatmaps.shape == (4, 160, 192)
    assert heatmaps.dtype == torch.float32
    for heatmap in heatmaps:
        assert heatmap.min() == 0.0
        assert heatmap.max() == pytest.approx(1.0)


def test_auto_detects_last_spatial_layer(resnet, images):
    cam = GradCAM(resnet)
    assert cam.target_layers == ()  # nothing runs in the constructor
    result = cam.explain(images[:1])
    assert result.layers == ("layer4",) == cam.target_layers


def test_module_and_name_give_the_same_maps(resnet, images):
    by_name = GradCAM(resnet, "layer4")(images, targets=5)
    by_module = GradCAM(resnet, resnet.layer4)(images, targets=5)
    torch.testing.assert_close(by_name, by_module)


def test_default_target_is_the_prediction(resnet, images):
    result = GradCAM(resnet).explain(images)
    with torch.no_grad():
        expected = resnet(images).argmax(1)
    assert torch.equal(result.targets, expected)
    assert torch.equal(result.predictions, expected)


def test_int_target_applies_to_every_image(resnet, images):
    cam = GradCAM(resnet)
    as_int = cam.explain(images, targets=17)
    assert as_int.targets.tolist() == [17] * 4
    torch.testing.assert_close(as_int.heatmaps, cam(images, targets=[17, 17, 17, 17]))


def test_per_image_targets_explain_each_image_separately(resnet, images):
    cam = GradCAM(resnet)
    mixed = cam(images, targets=torch.tensor([0, 1, 2, 3]))
    for i in range(4):
        alone = cam(images[i : i + 1], targets=i)
        torch.testing.assert_close(mixed[i], alone[0], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("targets", [[1, 2], [1, 2, 3, 4, 5], torch.zeros(4, 1, dtype=torch.long)])
def test_targets_of_wrong_length_are_rejected(resnet, images, targets):
    with pytest.raises(ValueError, match="expected length 4"):
        GradCAM(resnet)(images, targets=targets)


@pytest.mark.parametrize("target", [1000, -1])
def test_target_out_of_range_is_a_clear_error(resnet, images, target):
    with pytest.raises(ValueError, match=r"out of range: the model has 1000 classes"):
        GradCAM(resnet)(images, targets=target)


def test_unknown_layer_name_suggests_close_matches(resnet, images):
    with pytest.raises(TargetLayerError, match=r"'layer5' does not exist.*'layer4'"):
        GradCAM(resnet, "layer5")(images)


def test_module_outside_the_model_is_rejected(resnet, images):
    with pytest.raises(TargetLayerError, match="not a submodule"):
        GradCAM(resnet, nn.Conv2d(3, 3, 1))(images)


def test_model_without_spatial_layer_is_a_clear_error():
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 16), nn.ReLU(), nn.Linear(16, 2))
    with pytest.raises(TargetLayerError, match="no layer with a spatial output"):
        GradCAM(mlp)(torch.rand(2, 3, 8, 8))
    assert _hooks(mlp) == 0


def test_works_under_outer_no_grad_and_inference_mode(resnet, images):
    expected = GradCAM(resnet)(images, targets=3)
    with torch.no_grad():
        under_no_grad = GradCAM(resnet)(images, targets=3)
    with torch.inference_mode():
        under_inference = GradCAM(resnet)(images, targets=3)
    torch.testing.assert_close(under_no_grad, expected)
    torch.testing.assert_close(under_inference, expected)
    assert torch.is_grad_enabled()


def test_restores_modes_and_requires_grad_and_leaves_grads_untouched(images):
    torch.manual_seed(0)
    model = resnet18(weights=None)
    model.train()
    model.layer1.eval()  # a mixed state must come back exactly
    for param in model.layer2.parameters():
        param.requires_grad_(False)
    modes = {name: m.training for name, m in model.named_modules()}
    flags = {name: p.requires_grad for name, p in model.named_parameters()}

    GradCAM(model)(images[:2])

    assert {name: m.training for name, m in model.named_modules()} == modes
    assert {name: p.requires_grad for name, p in model.named_parameters()} == flags
    assert all(p.grad is None for p in model.parameters())
    assert _hooks(model) == 0


def test_explains_in_eval_mode_even_when_the_model_is_training(images):
    torch.manual_seed(0)
    model = resnet18(weights=None).train()
    in_train_mode = GradCAM(model)(images[:2], targets=1)
    model.eval()
    in_eval_mode = GradCAM(model)(images[:2], targets=1)
    torch.testing.assert_close(in_train_mode, in_eval_mode)


def test_hooks_removed_and_state_restored_when_forward_raises(images):
    torch.manual_seed(0)
    model = resnet18(weights=None).train()
    flags = [p.requires_grad for p in model.parameters()]

    def explode(*_args):
        raise RuntimeError("boom in fc")

    user_hook = model.fc.register_forward_hook(explode)
    for target_layer in ("layer4", None):
        with pytest.raises(RuntimeError, match="boom in fc"):
            GradCAM(model, target_layer)(images[:1])
        assert _hooks(model) == 1  # only the user's own hook is left
        assert model.training and all(m.training for m in model.modules())
        assert [p.requires_grad for p in model.parameters()] == flags
    user_hook.remove()


def test_frozen_model_still_gets_gradients_at_the_target_layer(resnet, images):
    for param in resnet.parameters():
        param.requires_grad_(False)
    try:
        heatmaps = GradCAM(resnet)(images[:2], targets=0)
    finally:
        for param in resnet.parameters():
            param.requires_grad_(True)
    assert heatmaps.amax(dim=(1, 2)).tolist() == pytest.approx([1.0, 1.0])


def test_non_finite_activations_are_an_error_not_a_map(resnet, images):
    poisoned = images.clone()
    poisoned[0, :, :50, :50] = float("nan")
    with pytest.raises(NonFiniteError, match="layer4"):
        GradCAM(resnet)(poisoned, targets=0)


class _PoisonGradient(torch.autograd.Function):
    """Identity forward; its backward replaces the gradient with a constant (NaN or Inf)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, value: float) -> torch.Tensor:
        ctx.value = value
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return torch.full_like(grad, ctx.value), None


class _TinyCNN(nn.Module):
    """conv -> (optional gradient poison) -> ReLU -> pool -> linear: finite logits either way."""

    def __init__(self, poison: float | None = None) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.head = nn.Linear(4, 3)
        self.poison = poison

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.conv(x)
        if self.poison is not None:
            a = _PoisonGradient.apply(a, self.poison)
        return self.head(torch.relu(a).mean(dim=(2, 3)))


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_gradients_at_the_target_layer_are_an_error_not_a_map(value):
    """Finite activations and logits, but a poisoned backward pass must not become a map."""
    torch.manual_seed(0)
    model = _TinyCNN(poison=value).eval()
    images = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    logits = model(images)
    assert torch.isfinite(logits).all()  # only the gradient is bad
    with pytest.raises(
        NonFiniteError, match=r"^gradients of target layer 'conv' contain NaN or Inf$"
    ):
        GradCAM(model, "conv")(images, targets=0)
    assert _hooks(model) == 0  # hooks are gone after the error
    model.poison = None  # the same weights without the poison give a map
    assert GradCAM(model, "conv")(images, targets=0).shape == (2, 8, 8)


def test_infinite_activations_are_an_error_naming_the_layer():
    """+Inf (not NaN) activations: the check must catch Inf too, not only NaN."""
    model = _TinyCNN().eval()
    with torch.no_grad():
        model.conv.weight.fill_(0.1)  # all positive: +inf inputs give +inf, never inf - inf
        model.conv.bias.zero_()
    images = torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    images[0, :, :2, :2] = float("inf")
    activations = model.conv(images)
    assert torch.isposinf(activations).any() and not torch.isnan(activations).any()
    with pytest.raises(
        NonFiniteError, match=r"^activations of target layer 'conv' contain NaN or Inf$"
    ):
        GradCAM(model, "conv")(images, targets=0)


def test_tuple_and_huggingface_style_outputs_are_unwrapped(resnet, images):
    class TupleOut(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = resnet

        def forward(self, x):
            return (self.net(x), "extra")

    class Logits(dict):
        @property
        def logits(self):
            return self["logits"]

    class ModelOutputStyle(TupleOut):
        def forward(self, x):
            return Logits(logits=self.net(x))

    expected = GradCAM(resnet, "layer4")(images[:2], targets=9)
    for wrapper in (TupleOut(), ModelOutputStyle()):
        got = GradCAM(wrapper, "net.layer4")(images[:2], targets=9)
        torch.testing.assert_close(got, expected)


def test_bad_images_are_rejected(resnet):
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        GradCAM(resnet)(torch.rand(3, 32, 32))
    with pytest.raises(TypeError, match=r"torch\.Tensor"):
        GradCAM(resnet)(np.zeros((1, 3, 32, 32)))
