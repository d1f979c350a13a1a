"""The model's fingerprint: every file of a version's model, by name and content.

Why: a verdict names a version, but a version is only a name for some bytes. A
passed version whose weights file was overwritten, or a version deleted and
registered again under the same number, kept its pass. The digest is signed
with the verdict, is part of the reuse key, and the guarded registry recomputes
it before it lets a protected alias point at the version. Files are streamed,
never held in memory, and their digests cached by (path, size, mtime) within
the process, so the guard rehashes only what changed.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from pipelines.verdict.decision import file_digest

__all__ = ["model_digest"]

_cache: dict[tuple[str, int, int, int], str] = {}


def model_digest(folder: str | Path) -> str:
    """SHA-256 over the relative path, size and SHA-256 of every file under ``folder``.

    Paths are sorted and separated by NUL, so renaming, adding, removing or
    editing any file changes the digest, and no two trees collide by
    concatenation. '' when ``folder`` is not a directory.
    """
    root = Path(folder)
    if not root.is_dir():
        return ""
    digest = hashlib.sha256(b"xai-gate-model-tree-v1")
    for path in sorted(_files(root), key=lambda p: p.relative_to(root).as_posix()):
        stat = path.stat()
        key = (os.fspath(path), stat.st_size, stat.st_mtime_ns, stat.st_ino)
        if key not in _cache:
            _cache[key] = file_digest(path)
        name = path.relative_to(root).as_posix().encode("utf-8", "surrogateescape")
        digest.update(b"\0" + name + b"\0" + str(stat.st_size).encode() + b"\0")
        digest.update(_cache[key].encode())
    return digest.hexdigest()


def _files(root: Path) -> list[Path]:
    """Every regular file below ``root`` (a link to a file counts by what it points to)."""
    found = []
    for folder, _, names in os.walk(root):
        for name in names:
            path = Path(folder) / name
            if path.is_file():
                found.append(path)
    return found
