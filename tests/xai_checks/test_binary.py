"""One-logit binary classifiers are read as two classes whose softmax is (1 - p, p)."""

from __future__ import annotations

import torch
from torch import nn

from xai_checks.binary import as_two_classes, two_class_logits


def test_the_two_logits_softmax_to_one_minus_p_and_p():
    z = torch.tensor([[-3.0], [0.0], [0.7], [5.0]])
    p = torch.sigmoid(z).squeeze(1)
    probs = two_class_logits(z).softmax(dim=1)
    torch.testing.assert_close(probs[:, 1], p)
    torch.testing.assert_close(probs[:, 0], 1 - p)
    torch.testing.assert_close(two_class_logits(z.squeeze(1)), two_class_logits(z))


def test_models_with_two_or_more_outputs_are_untouched():
    logits = torch.randn(3, 4)
    assert two_class_logits(logits) is logits
    model = nn.Linear(5, 3)
    handle = as_two_classes(model)
    x = torch.randn(2, 5)
    torch.testing.assert_close(model(x), nn.functional.linear(x, model.weight, model.bias))
    handle.remove()


def test_each_class_of_a_one_logit_model_has_a_gradient_of_its_own():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.LazyLinear(1))
    x = torch.randn(2, 3, 8, 8, requires_grad=True)
    model(x)  # materialise the lazy layer
    handle = as_two_classes(model)
    out = model(x)
    assert out.shape == (2, 2)
    (g0,) = torch.autograd.grad(out[:, 0].sum(), x, retain_graph=True)
    (g1,) = torch.autograd.grad(out[:, 1].sum(), x)
    torch.testing.assert_close(g0, -g1)  # the evidence for one class is against the other
    assert g1.abs().sum() > 0
    handle.remove()
    assert model(x).shape == (2, 1)
