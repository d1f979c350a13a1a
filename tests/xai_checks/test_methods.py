"""The method registry: one spec per name, matching the classes, importable without torch."""

from __future__ import annotations

import subprocess
import sys

import pytest

import xai_checks.cam.methods as cam_methods
from xai_checks.cam import CAM_METHODS, CAMEngine
from xai_checks.errors import XAICheckError
from xai_checks.methods import CAM_METHOD_NAMES, METHODS, get_method, method_names
from xai_checks.rollout import AttentionRollout


def test_the_table_lists_every_method_cam_family_first() -> None:
    assert method_names() == ("gradcam", "gradcampp", "hirescam", "layercam", "rollout")
    assert (
        CAM_METHOD_NAMES == method_names("cam") == ("gradcam", "gradcampp", "hirescam", "layercam")
    )
    assert method_names("attention") == ("rollout",)


def test_each_spec_loads_its_explainer_and_cam_methods_derive_from_the_table() -> None:
    assert tuple(CAM_METHODS) == CAM_METHOD_NAMES
    for name in CAM_METHOD_NAMES:
        spec = get_method(name)
        assert spec.load() is CAM_METHODS[name] and issubclass(CAM_METHODS[name], CAMEngine)
        assert spec.needs_target_layer and spec.class_specific and spec.description
    rollout = get_method("rollout")
    assert rollout.load() is AttentionRollout
    assert not rollout.needs_target_layer and not rollout.class_specific


def test_every_cam_subclass_is_registered() -> None:
    """A new method class without its line in the table would be unreachable by name."""
    defined = {
        value
        for value in vars(cam_methods).values()
        if isinstance(value, type) and issubclass(value, CAMEngine) and value is not CAMEngine
    }
    assert defined == set(CAM_METHODS.values())


def test_unknown_names_are_an_error_listing_the_known_ones() -> None:
    with pytest.raises(XAICheckError, match=r"unknown method 'scorecam'; .*'gradcam'.*'rollout'"):
        get_method("scorecam")
    with pytest.raises(XAICheckError, match=r"unknown CAM method 'rollout'; known CAM methods: "):
        get_method("rollout", kind="cam")
    with pytest.raises(TypeError):
        METHODS["scorecam"] = METHODS["gradcam"]  # type: ignore[index]


def test_importing_the_registry_loads_no_torch() -> None:
    """A policy validates method names before any model is loaded; that must stay cheap."""
    code = (
        "import sys\n"
        "from xai_checks.methods import get_method, method_names\n"
        "assert get_method('layercam').kind == 'cam' and len(method_names()) == 5\n"
        "print(sorted(name for name in ('torch', 'transformers') if name in sys.modules))\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "[]"
