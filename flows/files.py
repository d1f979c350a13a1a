"""Outputs a command writes: all of them, or none."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from pathlib import Path

__all__ = ["write_all"]


def write_all(outputs: Mapping[Path, bytes]) -> None:
    """Write every file, or none: each goes to a temporary file beside it first, and the
    renames happen only once all of them are written (an error removes the temporaries)."""
    staged: list[tuple[str, Path]] = []
    try:
        for path, data in outputs.items():
            path = Path(path)
            handle, temporary = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent or ".")
            staged.append((temporary, path))
            with os.fdopen(handle, "wb") as stream:
                stream.write(data)
        for temporary, path in staged:
            os.replace(temporary, path)
    except BaseException:
        for temporary, _ in staged:
            Path(temporary).unlink(missing_ok=True)
        raise
