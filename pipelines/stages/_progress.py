"""Progress bars for the audits that stream batches (tqdm)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")


def batches(starts: Iterable[T], *, desc: str, progress: bool | None) -> Iterator[T]:
    """``starts`` with a bar: shown when ``progress`` is True, hidden when False, and on a
    TTY only when None (logs and CI stay clean)."""
    disable = None if progress is None else not progress
    yield from tqdm(starts, desc=desc, unit="batch", disable=disable)
