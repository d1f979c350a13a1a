"""The audit set's fingerprint: the manifest and every file it names, by content.

Why: a verdict is reused only while its evidence is unchanged. Hashing the
manifest alone reused an old pass after every image and mask had been edited
or deleted. Files are streamed (never held in memory) and their digests
cached by (path, size, mtime) within the process, so a sweep over many
versions hashes each file once.
"""

from __future__ import annotations

import csv
import hashlib
import os
from pathlib import Path

from pipelines.verdict.decision import file_digest

__all__ = ["FILE_COLUMNS", "audit_set_digest"]

FILE_COLUMNS = ("image", "spurious_mask")
"""Manifest columns that name files, relative to the manifest's folder."""

_cache: dict[tuple[str, int, int], str] = {}


def audit_set_digest(manifest: str | Path) -> str:
    """SHA-256 over the manifest's bytes and the name and content of every file it names.

    A missing file counts as missing (loading it will say so); a manifest that
    cannot be parsed is hashed by its bytes alone (loading will refuse it).
    '' when the manifest itself is missing.
    """
    manifest = Path(manifest)
    own = file_digest(manifest)
    if not own:
        return ""
    digest = hashlib.sha256(own.encode())
    root = manifest.parent.resolve()
    for name in _named_files(manifest):
        digest.update(b"\0" + name.encode("utf-8", "surrogateescape") + b"\0")
        digest.update(_content_digest(root, name).encode())
    return digest.hexdigest()


def _named_files(manifest: Path) -> list[str]:
    try:
        with manifest.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            columns = [c for c in FILE_COLUMNS if c in (reader.fieldnames or [])]
            names = {row[c].strip() for row in reader for c in columns if row.get(c)}
    except (UnicodeDecodeError, csv.Error, OSError):
        return []
    return sorted(names)


def _content_digest(root: Path, name: str) -> str:
    if "\0" in name:
        return "invalid"
    path = (root / name).resolve()
    if not path.is_relative_to(root):
        return "outside"
    try:
        stat = path.stat()
    except OSError:
        return "missing"
    key = (os.fspath(path), stat.st_size, stat.st_mtime_ns)
    if key not in _cache:
        _cache[key] = file_digest(path) or "missing"
    return _cache[key]
