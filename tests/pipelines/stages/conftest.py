"""Fixtures of the stage tests: a runner that records how each stage was asked to run, an
audit set of ruler lesions and the shortcut model as a registry would hand it over."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from pipelines.audit_sets.images import write_audit_set
from pipelines.stages.assembly import INLINE, Pending
from pipelines.tracking import LoadedModel
from xai_checks.examples.synthetic import CLASS_NAMES, make_lesions


class RecordingRunner:
    """Runs each stage inline and records how it was asked to: what a runner sees."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def run(self, stage: str, fn: Callable[..., Any], *args: Any) -> Any:
        self.calls.append(("run", stage))
        return INLINE.run(stage, fn, *args)

    def submit(self, stage: str, fn: Callable[..., Any], *args: Any) -> Pending[Any]:
        self.calls.append(("submit", stage))
        return INLINE.submit(stage, fn, *args)


@pytest.fixture
def runner() -> RecordingRunner:
    return RecordingRunner()


@pytest.fixture(scope="module")
def lesion_manifest(tmp_path_factory) -> object:
    """40 lesion images, each with a ruler and its mask."""
    batch = make_lesions(40, ruler="always", seed=100)
    folder = tmp_path_factory.mktemp("audit")
    return write_audit_set(folder, batch.images, batch.labels, batch.masks, CLASS_NAMES)


@pytest.fixture
def shortcut_model(trained_pair) -> LoadedModel:
    """The ρ = 1 shortcut CNN as a registry hands it over, ``models:/m/1``."""
    return LoadedModel(trained_pair.shortcut, "m", "1", "models:/m/1", tuple(CLASS_NAMES), None)
