"""CAMs on Vision Transformers: token grids inferred, never hard-coded."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torchvision.models import VisionTransformer, vit_b_16

from xai_checks.cam import GradCAM, LayerCAM
from xai_checks.errors import TargetLayerError


def _random_head(model: VisionTransformer) -> VisionTransformer:
    """torchvision zero-initialises the head: every gradient, hence every CAM, would be 0."""
    nn.init.normal_(model.heads.head.weight, std=0.5)
    return model


def _small_torchvision_vit() -> VisionTransformer:
    torch.manual_seed(0)
    return _random_head(
        VisionTransformer(
            image_size=32,
            patch_size=8,
            num_layers=2,
            num_heads=2,
            hidden_dim=32,
            mlp_dim=64,
            num_classes=3,
        )
    ).eval()


def _small_hf_vit(**overrides):
    from transformers import ViTConfig, ViTForImageClassification

    torch.manual_seed(0)
    config = ViTConfig(
        image_size=overrides.pop("image_size", 32),
        patch_size=8,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        num_labels=3,
        **overrides,
    )
    return ViTForImageClassification(config).eval()


def test_vit_b_16_default_layer_is_the_last_blocks_input_norm():
    torch.manual_seed(0)
    model = _random_head(vit_b_16(weights=None)).eval()
    images = torch.rand(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    result = GradCAM(model).explain(images, targets=[3, 5])
    assert result.layers == ("encoder.layers.encoder_layer_11.ln_1",)
    assert result.layer_maps[0].shape == (2, 14, 14)  # 197 tokens: CLS + 14 x 14
    assert result.heatmaps.shape == (2, 224, 224)
    assert (result.heatmaps.amax(dim=(1, 2)) == 1).all()


def test_vit_gradcam_matches_pytorch_grad_cam_with_a_reshape_transform():
    from pytorch_grad_cam import GradCAM as ReferenceCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    model = _small_torchvision_vit()
    images = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    layer = model.encoder.layers[-1].ln_1

    def reshape(tokens: torch.Tensor) -> torch.Tensor:  # the hand-written 4 x 4 we avoid
        return tokens[:, 1:, :].reshape(tokens.shape[0], 4, 4, -1).permute(0, 3, 1, 2)

    targets = [0, 1, 2, 0]
    ours = GradCAM(model, layer)(images, targets=targets)
    reference = ReferenceCAM(model=model, target_layers=[layer], reshape_transform=reshape)(
        input_tensor=images, targets=[ClassifierOutputTarget(t) for t in targets]
    )
    for mine, theirs in zip(ours.numpy(), reference, strict=True):
        assert theirs.std() > 0
        assert np.corrcoef(mine.ravel(), theirs.ravel())[0, 1] >= 0.999


def test_hugging_face_vit_default_layer_and_grid():
    model = _small_hf_vit(image_size=(32, 64))
    images = torch.rand(2, 3, 32, 64, generator=torch.Generator().manual_seed(3))
    result = LayerCAM(model).explain(images)
    assert result.layers == ("vit.layers.1.layernorm_before",)
    assert result.layer_maps[0].shape == (2, 4, 8)  # 1 CLS + 4 x 8 patches
    assert result.heatmaps.shape == (2, 32, 64)
    with torch.no_grad():
        expected = model(images).logits.argmax(1)
    assert torch.equal(result.predictions, expected)


def test_hugging_face_vit_named_layer_gives_a_scaled_map_on_the_grid():
    model = _small_hf_vit()
    images = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    maps = GradCAM(model, "vit.layers.1.layernorm_before").explain(images, 0)
    assert maps.layer_maps[0].shape == (1, 4, 4)
    assert torch.isfinite(maps.heatmaps).all() and maps.heatmaps.max() == 1


def test_a_layer_the_output_does_not_depend_on_is_an_error_not_a_blank_map():
    """After the last attention only CLS reaches the head: every patch gradient is zero."""
    model = _small_torchvision_vit()
    with pytest.raises(TargetLayerError, match=r"do not depend on layer 'encoder.ln'"):
        GradCAM(model, "encoder.ln")(torch.rand(2, 3, 32, 32), 0)


def test_a_zero_initialised_head_is_an_error_not_a_blank_map():
    torch.manual_seed(0)
    model = VisionTransformer(
        image_size=32, patch_size=8, num_layers=1, num_heads=2, hidden_dim=16, mlp_dim=32
    ).eval()  # torchvision zero-initialises the head
    with pytest.raises(TargetLayerError, match="all gradients are zero"):
        GradCAM(model)(torch.rand(1, 3, 32, 32), 0)


def test_a_token_layer_with_no_grid_is_a_clear_error():
    class Tokens(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Linear(3, 8)
            self.head = nn.Linear(8, 2)

        def forward(self, x):
            tokens = self.embed(x.flatten(2)[:, :, :3].transpose(1, 2))  # 3 tokens
            return self.head(tokens.mean(1))

    with pytest.raises(TargetLayerError, match="'embed': cannot lay 3 tokens"):
        GradCAM(Tokens(), "embed")(torch.rand(1, 3, 8, 8))
