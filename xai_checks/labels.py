"""Class indices as the names a reviewer reads, bounds-checked.

A model may predict a class the caller did not name (a head wider than the
audit set's class list); that must show up as its index, not raise an
``IndexError`` halfway through a report, nor wrap around with a negative index.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Protocol

__all__ = ["class_label", "class_labels"]


class _Array(Protocol):
    """A tensor or NumPy array of indices: anything with ``tolist()``."""

    def tolist(self) -> Any: ...


def class_label(index: int, class_names: Sequence[str] | None) -> str:
    """The name of class ``index``, or ``str(index)`` when no name covers it."""
    index = int(index)
    if class_names is not None and 0 <= index < len(class_names):
        return class_names[index]
    return str(index)


def class_labels(indices: Iterable[int] | _Array, class_names: Sequence[str] | None) -> list[str]:
    """:func:`class_label` of each index, for a sequence, a tensor or an array of them."""
    values = indices.tolist() if hasattr(indices, "tolist") else indices
    return [class_label(index, class_names) for index in values]
