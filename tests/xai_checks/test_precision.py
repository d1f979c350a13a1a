"""Mixed precision: every check's forward passes honour it, and results stay float32."""

from __future__ import annotations

import copy
import threading

import pytest
import torch
import torchvision
from torch import nn

from xai_checks.attention import attention_maps
from xai_checks.cam import GradCAM
from xai_checks.counterfactual import removal_test
from xai_checks.errors import XAICheckError
from xai_checks.precision import current_precision, forward, mixed_precision
from xai_checks.predict import predict_proba, predict_text_proba
from xai_checks.rollout import AttentionRollout
from xai_checks.saliency import token_saliency
from xai_checks.sanity import cam_explainer, cascading_randomization


class DtypeLog:
    """Forward hooks recording the dtype every Linear or Conv2d layer of a model computed in.

    The hook is a plain function, which ``copy.deepcopy`` keeps as it is: the copies the
    sanity check randomises report here too.
    """

    def __init__(self, model: nn.Module) -> None:
        self.dtypes: set[torch.dtype] = set()
        dtypes = self.dtypes

        def keep(_module: nn.Module, _inputs: object, output: torch.Tensor) -> None:
            dtypes.add(output.dtype)

        self.handles = [
            layer.register_forward_hook(keep)
            for layer in model.modules()
            if isinstance(layer, (nn.Linear, nn.Conv2d))
        ]

    def close(self) -> set[torch.dtype]:
        for handle in self.handles:
            handle.remove()
        return self.dtypes


def _cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 3),
    ).eval()


def test_forward_runs_the_model_at_the_precision_and_returns_float32() -> None:
    model, images = _cnn(), torch.rand(2, 3, 8, 8)
    log = DtypeLog(model)
    assert current_precision() is None
    plain = forward(model, images)
    with mixed_precision("bf16"):
        assert current_precision() is torch.bfloat16
        reduced = forward(model, images)
        with mixed_precision("fp32"):  # nested: switched off, then back on
            assert current_precision() is None
        assert current_precision() is torch.bfloat16
    assert current_precision() is None
    assert log.close() == {torch.float32, torch.bfloat16}
    assert plain.dtype == reduced.dtype == torch.float32
    assert torch.equal(plain, model(images))  # fp32: the plain call, nothing added
    assert 0 < (plain - reduced).abs().max() < 0.05  # it did compute in bf16, and close
    with mixed_precision("bf16"):  # autocast leaves float64 alone, and so does the cast back
        assert forward(model.double(), images.double()).dtype == torch.float64


def test_the_setting_is_restored_on_errors_and_stays_in_its_own_thread() -> None:
    with pytest.raises(RuntimeError, match="inside"), mixed_precision("fp16"):
        raise RuntimeError("inside")
    assert current_precision() is None
    seen = []
    with mixed_precision("bf16"):
        thread = threading.Thread(target=lambda: seen.append(current_precision()))
        thread.start()
        thread.join()
    assert seen == [None]


@pytest.mark.parametrize("bad", ["fp8", "float32 ", torch.int8, torch.float64])
def test_unknown_precisions_are_refused_by_name(bad) -> None:
    with pytest.raises(XAICheckError, match="precision must be"), mixed_precision(bad):
        pass


def _vit() -> nn.Module:
    torch.manual_seed(0)
    vit = torchvision.models.VisionTransformer(
        image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=16, mlp_dim=32,
        num_classes=3,
    )  # fmt: skip
    nn.init.normal_(vit.heads.head.weight)  # torchvision starts the head at zero: no gradient
    return vit.eval()


def _image_checks():
    """Each image check as (model, call): all of them forward through :func:`forward`."""
    images = torch.rand(3, 3, 32, 32)
    masks = torch.zeros(3, 32, 32, dtype=torch.bool)
    masks[:, :8, :8] = True
    cnn, vit = _cnn(), _vit()
    return {
        "gradcam": (cnn, lambda: GradCAM(cnn)(images)),
        "predict": (cnn, lambda: predict_proba(cnn, images)),
        "removal": (cnn, lambda: removal_test(cnn, images, masks, torch.zeros(3).long())),
        "sanity": (
            cnn,
            lambda: cascading_randomization(cnn, images[:2], cam_explainer("gradcam")),
        ),
        "rollout": (vit, lambda: AttentionRollout(vit)(images)),
        "vit-gradcam": (vit, lambda: GradCAM(vit)(images)),
    }


@pytest.mark.parametrize("check", list(_image_checks()))
def test_every_image_check_computes_at_the_precision_it_is_given(check: str) -> None:
    model, call = _image_checks()[check]
    log = DtypeLog(model)
    with mixed_precision("bf16"):
        result = call()
    assert log.close() == {torch.bfloat16}, check
    values = [getattr(result, name, None) for name in ("heatmaps", "edited")] + [result]
    tensors = [value for value in values if isinstance(value, torch.Tensor)]
    assert all(t.dtype in (torch.float32, torch.bool) for t in tensors), check
    assert all(torch.isfinite(t.float()).all() for t in tensors), check


def test_text_checks_compute_at_the_precision_and_return_float32(trained_text_pair) -> None:
    model, tokenizer = copy.deepcopy(trained_text_pair.shortcut), trained_text_pair.tokenizer
    texts = ["a lovely lamp , truly great", "the kettle broke on day two ."]
    log = DtypeLog(model)
    with mixed_precision("bf16"):
        probabilities = predict_text_proba(model, tokenizer, texts)
        maps = attention_maps(model, tokenizer, texts)
        saliency = token_saliency(model, tokenizer, texts)
    assert log.close() == {torch.bfloat16}
    assert probabilities.dtype == maps.weights.dtype == torch.float32
    assert saliency.scores.dtype == saliency.logits.dtype == torch.float32
    assert torch.isfinite(saliency.scores).all() and saliency.scores.abs().sum() > 0
    with mixed_precision(None):
        exact = predict_text_proba(model, tokenizer, texts)
    assert 0 < (exact - probabilities).abs().max() < 0.05
