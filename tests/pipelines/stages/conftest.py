"""Fixtures of the stage tests: a runner that records how each stage was asked to run."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from pipelines.stages.assembly import INLINE, Pending


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
