"""Each CAM method against its pytorch-grad-cam counterpart, on two architectures."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torchvision.models import mobilenet_v3_small, resnet18

from xai_checks.cam import CAM_METHODS, GradCAM, GradCAMPlusPlus, HiResCAM, LayerCAM

PAIRS = {
    "gradcam": (GradCAM, "GradCAM"),
    "gradcampp": (GradCAMPlusPlus, "GradCAMPlusPlus"),
    "hirescam": (HiResCAM, "HiResCAM"),
    "layercam": (LayerCAM, "LayerCAM"),
}
TARGETS = [1, 7, 42, 999]


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.rand(4, 3, 224, 224, generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module", params=["resnet18", "mobilenet_v3_small"])
def architecture(request) -> tuple[nn.Module, str, list[int], float]:
    """Model, layer, targets whose maps are not all-zero after the ReLU, and the largest
    pixel difference allowed. grad-cam scales before resizing (cv2), we resize then
    scale: identical on ResNet-18 (0.0000), up to 0.017 at MobileNet's map edges."""
    torch.manual_seed(0)
    if request.param == "resnet18":
        return resnet18(weights=None).eval(), "layer4", TARGETS, 1e-3
    return mobilenet_v3_small(weights=None).eval(), "features.12", [0, 1, 2, 3], 0.03


def _reference(name: str, model: nn.Module, layers: list[nn.Module], images, targets):
    import pytorch_grad_cam
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    method = getattr(pytorch_grad_cam, PAIRS[name][1])
    return method(model=model, target_layers=layers)(
        input_tensor=images, targets=[ClassifierOutputTarget(t) for t in targets]
    )


def _assert_agree(ours: torch.Tensor, reference: np.ndarray, max_diff: float) -> None:
    assert ours.shape == reference.shape
    for mine, theirs in zip(ours.numpy(), reference, strict=True):
        assert theirs.std() > 0  # a flat reference map would make the comparison vacuous
        r = np.corrcoef(mine.ravel(), theirs.ravel())[0, 1]
        assert r >= 0.999
        assert np.abs(mine - theirs).max() < max_diff


def test_registry_names_every_method():
    assert {name: cls for name, cls in CAM_METHODS.items()} == {
        name: cls for name, (cls, _) in PAIRS.items()
    }


@pytest.mark.parametrize("name", sorted(PAIRS))
def test_method_matches_pytorch_grad_cam_per_image(name, architecture, images):
    model, layer, targets, max_diff = architecture
    ours = CAM_METHODS[name](model, layer)(images, targets=targets)
    reference = _reference(name, model, [model.get_submodule(layer)], images, targets)
    _assert_agree(ours, reference, max_diff)


@pytest.mark.parametrize("name", sorted(PAIRS))
def test_several_layers_are_averaged_like_pytorch_grad_cam(name, images):
    """layer3 sits before the last block, where gradients vary in space: there the methods
    differ (before global pooling HiResCAM equals Grad-CAM, so this is its real test)."""
    torch.manual_seed(0)
    model = resnet18(weights=None).eval()
    layers = ["layer3", "layer4"]
    result = CAM_METHODS[name](model, layers).explain(images, targets=TARGETS)
    reference = _reference(name, model, [model.layer3, model.layer4], images, TARGETS)
    _assert_agree(result.heatmaps, reference, 0.05)
    assert result.layers == ("layer3", "layer4")
    assert [m.shape[-1] for m in result.layer_maps] == [14, 7]


def test_a_layer_before_the_first_gets_gradients_through_it(images):
    """Order of the names does not matter: the cut is at whichever layer runs first."""
    torch.manual_seed(0)
    model = resnet18(weights=None).eval()
    forward = GradCAM(model, ["layer3", "layer4"]).explain(images[:2], targets=3)
    backward = GradCAM(model, ["layer4", "layer3"]).explain(images[:2], targets=3)
    torch.testing.assert_close(forward.heatmaps, backward.heatmaps)
    alone = GradCAM(model, "layer3").explain(images[:2], targets=3)
    torch.testing.assert_close(forward.layer_maps[0], alone.layer_maps[0])


def test_hirescam_and_layercam_resolve_a_small_patch_that_gradcam_smears():
    """A 4x4 bright patch read by a linear head: pixel-exact methods stay on the patch."""
    torch.manual_seed(0)
    features = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU())
    model = nn.Sequential(features, nn.Flatten(), nn.Linear(4 * 32 * 32, 2))
    with torch.no_grad():
        model[0][0].weight.fill_(0.1)
        model[0][0].bias.zero_()
        head = torch.zeros(2, 4, 32, 32)
        head[1, :, 8:12, 20:24] = 1.0  # class 1 reads only the patch
        head[1] += 0.01  # and, weakly, everything else
        model[2].weight.copy_(head.flatten(1))
    image = torch.full((1, 1, 32, 32), 0.5)
    image[..., 8:12, 20:24] = 1.0
    patch = torch.zeros(32, 32, dtype=torch.bool)
    patch[8:12, 20:24] = True

    def inside(heatmap: torch.Tensor) -> float:
        return float(heatmap[0][patch].sum() / heatmap[0].sum())

    mass = {name: inside(CAM_METHODS[name](model, "0.1")(image, 1)) for name in PAIRS}
    assert mass["hirescam"] > 0.6 and mass["layercam"] > 0.6
    assert mass["gradcam"] < 0.1  # global weights: the map is the activation itself


def test_methods_really_differ_where_gradients_vary_in_space(images):
    torch.manual_seed(0)
    model = resnet18(weights=None).eval()
    maps = {name: CAM_METHODS[name](model, "layer3")(images[:2], 5) for name in PAIRS}
    for name in ("gradcampp", "hirescam", "layercam"):
        assert (maps[name] - maps["gradcam"]).abs().max() > 0.1, name
