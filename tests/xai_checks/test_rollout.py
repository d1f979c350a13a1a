"""Attention rollout: hand-computed values, torchvision and Hugging Face ViTs, errors, hygiene."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models import VisionTransformer
from transformers import ViTConfig, ViTForImageClassification
from transformers.modeling_outputs import ImageClassifierOutput

from xai_checks.errors import NonFiniteError, XAICheckError
from xai_checks.rollout import AttentionRollout, RolloutResult, rollout

_VIT = dict(
    patch_size=8,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=64,
    num_labels=3,
)


def _hooks(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def _images(n: int, height: int = 32, width: int = 32, channels: int = 3) -> Tensor:
    return torch.rand(n, channels, height, width, generator=torch.Generator().manual_seed(1))


def _hand_stack() -> list[Tensor]:
    layer1 = torch.tensor(
        [
            [[1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [1.0, 0.0, 0.0]],
            [[0.0, 1.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]],
        ]
    )
    # Rows sum to 2, so the renormalisation step matters.
    layer2 = torch.tensor([[0.0, 0.0, 2.0], [0.0, 2.0, 0.0], [2.0, 0.0, 0.0]]).expand(2, 3, 3)
    return [layer1.unsqueeze(0), layer2.unsqueeze(0)]


# ---------------------------------------------------------------- rollout()


def test_rollout_matches_hand_computation():
    # Layer 1: head mean [[.5,.5,0],[.5,.5,0],[.5,0,.5]];
    #   Â1 = 0.5*mean + 0.5*I = [[.75,.25,0],[.25,.75,0],[.25,0,.75]] (rows already sum to 1).
    # Layer 2: head mean [[0,0,2],[0,2,0],[2,0,0]];
    #   0.5*mean + 0.5*I = [[.5,0,1],[0,1.5,0],[1,0,.5]], rows sum to 1.5,
    #   Â2 = [[1/3,0,2/3],[0,1,0],[2/3,0,1/3]].
    # R = Â2 @ Â1:
    #   row 0 = 1/3*[.75,.25,0] + 2/3*[.25,0,.75] = [5/12, 1/12, 6/12]
    #   row 1 = [.25,.75,0]                       = [3/12, 9/12, 0]
    #   row 2 = 2/3*[.75,.25,0] + 1/3*[.25,0,.75] = [7/12, 2/12, 3/12]
    expected = torch.tensor([[[5.0, 1.0, 6.0], [3.0, 9.0, 0.0], [7.0, 2.0, 3.0]]]) / 12
    result = rollout(_hand_stack())
    torch.testing.assert_close(result, expected)
    torch.testing.assert_close(result.sum(dim=-1), torch.ones(1, 3))


def test_rollout_order_is_last_layer_on_the_left():
    layer1, layer2 = _hand_stack()
    # Reversed: row 0 = .75*[1/3,0,2/3] + .25*[0,1,0] = [1/4, 1/4, 1/2], unlike 5/12, 1/12, 1/2.
    torch.testing.assert_close(rollout([layer2, layer1])[0, 0], torch.tensor([0.25, 0.25, 0.5]))


def test_rollout_averages_heads():
    stack = _hand_stack()
    single_head = [layer.mean(dim=1, keepdim=True) for layer in stack]
    torch.testing.assert_close(rollout(stack), rollout(single_head))


def test_rollout_rows_are_distributions_and_batches_are_independent():
    generator = torch.Generator().manual_seed(0)
    stack = [torch.rand(2, 4, 5, 5, generator=generator).softmax(dim=-1) for _ in range(3)]
    batched = rollout(stack)
    assert batched.shape == (2, 5, 5)
    torch.testing.assert_close(batched.sum(dim=-1), torch.ones(2, 5))
    for i in range(2):
        torch.testing.assert_close(
            batched[i : i + 1], rollout([layer[i : i + 1] for layer in stack])
        )


def test_rollout_dtypes():
    stack = _hand_stack()
    assert rollout([layer.half() for layer in stack]).dtype == torch.float32
    assert rollout([layer.double() for layer in stack]).dtype == torch.float64


@pytest.mark.parametrize(
    ("attentions", "message"),
    [
        ([], "non-empty"),
        ([torch.ones(1, 3, 3)], "layer 0 must have shape"),
        ([torch.ones(1, 2, 3, 4)], "not square"),
        ([torch.ones(1, 2, 3, 3), torch.ones(1, 2, 4, 4)], "layer 1 has shape"),
        ([torch.ones(1, 2, 3, 3), torch.ones(2, 2, 3, 3)], "must share N and T"),
    ],
)
def test_rollout_rejects_bad_shapes(attentions, message):
    with pytest.raises(XAICheckError, match=message):
        rollout(attentions)


def test_rollout_names_the_non_finite_layer():
    layer1, layer2 = _hand_stack()
    layer2 = layer2.clone()
    layer2[0, 1, 2, 0] = float("nan")
    with pytest.raises(NonFiniteError, match="layer 1"):
        rollout([layer1, layer2])


# ---------------------------------------------------------------- torchvision


@pytest.fixture
def torchvision_vit() -> VisionTransformer:
    torch.manual_seed(0)
    return VisionTransformer(
        image_size=32,
        patch_size=8,
        num_layers=2,
        num_heads=2,
        hidden_dim=32,
        mlp_dim=64,
        num_classes=3,
    ).eval()


def _softmax_attention(attention: nn.MultiheadAttention, x: Tensor) -> Tensor:
    """Per-head weights (N, heads, T, T) from the projection weights, not from the module."""
    n, t, d = x.shape
    heads = attention.num_heads
    q, k, _ = F.linear(x, attention.in_proj_weight, attention.in_proj_bias).chunk(3, dim=-1)
    q = q.reshape(n, t, heads, d // heads).transpose(1, 2)
    k = k.reshape(n, t, heads, d // heads).transpose(1, 2)
    return (q @ k.transpose(-1, -2) / math.sqrt(d // heads)).softmax(dim=-1)


def _torchvision_weights(model: VisionTransformer, images: Tensor) -> list[Tensor]:
    with torch.no_grad():
        x = model._process_input(images)
        x = torch.cat([model.class_token.expand(x.shape[0], -1, -1), x], dim=1)
        x = x + model.encoder.pos_embedding
        weights = []
        for block in model.encoder.layers:
            weights.append(_softmax_attention(block.self_attention, block.ln_1(x)))
            x = block(x)
    return weights


def test_torchvision_raw_map_is_the_cls_row_of_rollout(torchvision_vit):
    images = _images(3)
    result = AttentionRollout(torchvision_vit).explain(images)
    assert isinstance(result, RolloutResult)
    expected = rollout(_torchvision_weights(torchvision_vit, images))[:, 0, 1:].reshape(3, 4, 4)
    assert result.raw.shape == (3, 4, 4)
    torch.testing.assert_close(result.raw, expected, rtol=1e-4, atol=1e-6)
    assert result.heatmaps.shape == (3, 32, 32)
    assert result.heatmaps.dtype == torch.float32
    for heatmap in result.heatmaps:
        assert heatmap.min() == 0.0 and heatmap.max() == 1.0
    with torch.no_grad():
        logits = torchvision_vit(images)
    torch.testing.assert_close(result.logits, logits)
    torch.testing.assert_close(result.predictions, logits.argmax(dim=1))


def test_torchvision_state_is_restored(torchvision_vit):
    images = _images(2)
    with torch.no_grad():
        expected = torchvision_vit(images)
    torchvision_vit.train()
    heatmaps = AttentionRollout(torchvision_vit)(images)
    assert heatmaps.shape == (2, 32, 32)
    assert all(module.training for module in torchvision_vit.modules())
    assert all(param.requires_grad for param in torchvision_vit.parameters())
    assert _hooks(torchvision_vit) == 0
    # A normal forward still works and is unchanged (the model has no dropout).
    torch.testing.assert_close(torchvision_vit(images), expected)


def test_hooks_are_removed_when_the_forward_raises(torchvision_vit):
    torchvision_vit.train()
    with pytest.raises(RuntimeError):
        AttentionRollout(torchvision_vit)(_images(1, channels=1))
    assert _hooks(torchvision_vit) == 0
    assert torchvision_vit.training


def test_works_under_outer_inference_mode(torchvision_vit):
    images = _images(2)
    expected = AttentionRollout(torchvision_vit)(images)
    with torch.inference_mode():
        torch.testing.assert_close(AttentionRollout(torchvision_vit)(images), expected)


class _SequenceFirstViT(nn.Module):
    """One attention layer with batch_first=False, asked positionally for no weights."""

    def __init__(self) -> None:
        super().__init__()
        self.patches = nn.Conv2d(3, 16, kernel_size=8, stride=8)
        self.cls = nn.Parameter(torch.randn(1, 1, 16))
        self.attention = nn.MultiheadAttention(16, num_heads=4, batch_first=False)
        self.head = nn.Linear(16, 5)

    def tokens(self, images: Tensor) -> Tensor:
        x = self.patches(images).flatten(2).transpose(1, 2)
        return torch.cat([self.cls.expand(x.shape[0], -1, -1), x], dim=1)

    def forward(self, images: Tensor) -> Tensor:
        x = self.tokens(images).transpose(0, 1)  # (T, N, D)
        x = x + self.attention(x, x, x, None, False)[0]
        return self.head(x[0])


def test_sequence_first_attention_with_positional_need_weights():
    torch.manual_seed(0)
    model = _SequenceFirstViT().eval()
    images = _images(2, 16, 32)
    result = AttentionRollout(model).explain(images)
    with torch.no_grad():
        weights = _softmax_attention(model.attention, model.tokens(images))
    expected = rollout([weights])[:, 0, 1:].reshape(2, 2, 4)
    torch.testing.assert_close(result.raw, expected, rtol=1e-4, atol=1e-6)
    assert result.heatmaps.shape == (2, 16, 32)
    assert result.logits.shape == (2, 5)


# ---------------------------------------------------------------- Hugging Face


def _hf_vit(image_size: int | tuple[int, int] = 32, **kwargs: str) -> ViTForImageClassification:
    torch.manual_seed(0)
    return ViTForImageClassification(ViTConfig(image_size=image_size, **_VIT, **kwargs)).eval()


def test_hugging_face_raw_map_is_the_cls_row_of_rollout():
    model = _hf_vit(attn_implementation="eager")
    images = _images(2)
    result = AttentionRollout(model).explain(images)
    with torch.no_grad():
        outputs = model(pixel_values=images, output_attentions=True)
    expected = rollout(outputs.attentions)[:, 0, 1:].reshape(2, 4, 4)
    torch.testing.assert_close(result.raw, expected)
    torch.testing.assert_close(result.logits, outputs.logits)
    assert result.heatmaps.shape == (2, 32, 32)
    assert float(result.heatmaps.min()) == 0.0 and float(result.heatmaps.max()) == 1.0


def test_hugging_face_non_square_image_gives_a_non_square_grid():
    model = _hf_vit((32, 64), attn_implementation="eager")
    result = AttentionRollout(model).explain(_images(2, 32, 64))
    assert result.raw.shape == (2, 4, 8)
    assert result.heatmaps.shape == (2, 32, 64)


def test_hugging_face_fused_attention_is_refused_before_running():
    model = _hf_vit()
    assert model.config._attn_implementation == "sdpa"  # the default, not eager
    calls: list[int] = []
    handle = model.register_forward_pre_hook(lambda *_: calls.append(1))
    try:
        with pytest.raises(XAICheckError, match="eager") as excinfo:
            AttentionRollout(model)(_images(1))
    finally:
        handle.remove()
    assert "set_attn_implementation" in str(excinfo.value)
    assert calls == []


def test_hugging_face_model_returning_no_attentions_is_refused():
    class NoAttentions(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.config = ViTConfig(attn_implementation="eager")
            self.head = nn.Linear(3, 2)

        def forward(self, pixel_values: Tensor, **_: object) -> ImageClassifierOutput:
            return ImageClassifierOutput(logits=self.head(pixel_values.mean(dim=(2, 3))))

    with pytest.raises(XAICheckError, match="no attention weights"):
        AttentionRollout(NoAttentions())(_images(1))


# ---------------------------------------------------------------- errors


def test_model_without_attention_is_refused():
    cnn = nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2)
    ).eval()
    with pytest.raises(XAICheckError, match="no attention layers"):
        AttentionRollout(cnn)(_images(1))


@pytest.mark.parametrize("images", [torch.rand(3, 32, 32), torch.rand(0, 3, 32, 32)])
def test_bad_image_shapes_are_refused(torchvision_vit, images):
    with pytest.raises(XAICheckError, match=r"\(N, C, H, W\)"):
        AttentionRollout(torchvision_vit)(images)


def test_non_tensor_inputs_are_refused(torchvision_vit):
    with pytest.raises(TypeError, match=r"torch\.Tensor"):
        AttentionRollout(torchvision_vit)([[0.0]])
    with pytest.raises(TypeError, match=r"nn\.Module"):
        AttentionRollout(lambda x: x)
