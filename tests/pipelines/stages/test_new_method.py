"""Adding a CAM method is one subclass and one registry line: nothing else learns its name."""

from __future__ import annotations

from types import MappingProxyType

import pytest
import torch
from torch import Tensor

import xai_checks.methods as registry
from pipelines.policy import HeatmapChecks, policy_options
from pipelines.stages.cam import audit_images
from xai_checks.cam.core import CAMEngine
from xai_checks.examples.toy_models import SmallCNN
from xai_checks.methods import MethodSpec


class XGradCAM(CAMEngine):
    """XGrad-CAM (Fu et al. 2020): gradients averaged with the normalised activations."""

    def combine(self, activations: Tensor, gradients: Tensor) -> Tensor:
        norm = activations.sum(dim=(2, 3), keepdim=True).clamp_min(1e-7)
        weights = (gradients * activations / norm).sum(dim=(2, 3), keepdim=True)
        return (weights * activations).sum(dim=1)


@pytest.fixture
def with_xgradcam(monkeypatch):
    """The one registry line, as a user would add it to ``xai_checks/methods.py``."""
    spec = MethodSpec(f"{__name__}:XGradCAM", "cam", "XGrad-CAM: normalised-activation weights")
    monkeypatch.setattr(
        registry, "METHODS", MappingProxyType({**registry.METHODS, "xgradcam": spec})
    )


def test_a_registered_subclass_is_valid_in_a_policy_offered_by_the_cli_and_audited(
    with_xgradcam,
):
    assert HeatmapChecks(methods=("xgradcam", "gradcam")).methods[0] == "xgradcam"
    (methods,) = [option for option in policy_options() if option.name == "cam_methods"]
    assert "xgradcam" in methods.choices
    torch.manual_seed(0)
    model, images = SmallCNN().eval(), torch.rand(6, 3, 32, 32)
    masks = torch.zeros(6, 32, 32, dtype=torch.bool)
    masks[:, :, :4] = True
    result = audit_images(model, images, [0, 1] * 3, masks, methods=("xgradcam",))
    direct = XGradCAM(model)(images)  # the audit ran exactly this subclass
    assert result.methods["xgradcam"].per_image["spurious_mass"].tolist() == pytest.approx(
        (direct * masks).sum(dim=(1, 2)).div(direct.sum(dim=(1, 2))).tolist(), abs=1e-5
    )
    assert result.summary["method"] == "xgradcam"
    assert "xgradcam.spurious_mass" in result.metrics()


def test_without_the_registry_line_the_name_is_refused():
    with pytest.raises(ValueError, match="unknown method"):
        HeatmapChecks(methods=("xgradcam",))
