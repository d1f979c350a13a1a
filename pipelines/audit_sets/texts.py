"""Text audit sets on disk: a CSV of texts with their spurious words.

Columns:

* ``text``: the input text;
* ``label``: a class name of the model (or its integer index);
* ``spurious_tokens``: the spurious words of this text, ``|``-separated
  (a signature, a template phrase, a site name); each must occur in the text;
* ``id`` (optional): a text id for the score table; default ``text-<line>``.

Great Expectations checks the file before any model runs, and every error
names the file, the CSV line and the column, as for images.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import Tensor

from pipelines.audit_sets.images import (
    LABEL,
    OK,
    AuditSetError,
    label_checks,
    label_index,
    line_of,
    read_manifest,
    required_columns,
    status_check,
)
from pipelines.evidence.gx import Check, run_checks

__all__ = [
    "ID",
    "SEPARATOR",
    "SPURIOUS",
    "TEXT",
    "TextAuditSet",
    "is_text_manifest",
    "load_text_audit_set",
    "phrase_spans",
    "write_text_audit_set",
]

TEXT, SPURIOUS, ID = "text", "spurious_tokens", "id"
SEPARATOR = "|"


@dataclass(frozen=True)
class TextAuditSet:
    texts: list[str]
    labels: Tensor
    """(N,) class indices."""
    spurious: list[tuple[str, ...]]
    """Each text's spurious words."""
    text_ids: list[str]
    class_names: tuple[str, ...] | None
    manifest: Path
    lines: tuple[int, ...] | None = None
    """The CSV line each text starts on, for errors (a quoted text may span several)."""

    def __len__(self) -> int:
        return len(self.texts)


def is_text_manifest(manifest: str | Path) -> bool:
    """True when the CSV header has a ``text`` column: the audit set is text, not images."""
    try:
        with Path(manifest).open(newline="", encoding="utf-8-sig") as handle:
            header = next(csv.reader(handle), [])
    except (OSError, UnicodeDecodeError):
        return False  # the image loader reports the real problem
    return TEXT in {column.strip() for column in header}


def _spurious_status(text: Any, words: Any) -> str:
    if not isinstance(text, str) or not text.strip():
        return "empty text"
    if not isinstance(words, str) or not words.strip():
        return f"no spurious words given (separate several with {SEPARATOR!r})"
    missing = [w for w in _split(words) if not _occurs(w, text)]
    if missing:
        return f"spurious word(s) {missing} do not occur in the text"
    return OK


def load_text_audit_set(
    manifest: str | Path, *, class_names: Sequence[str] | None = None
) -> TextAuditSet:
    """Validate a text audit-set CSV with Great Expectations, then load it."""
    manifest = Path(manifest).absolute()
    frame = read_manifest(manifest)
    checks = required_columns(manifest, frame, (TEXT, LABEL, SPURIOUS))
    if LABEL in frame.columns:
        checks += label_checks(manifest, frame, class_names)
    if TEXT in frame.columns and SPURIOUS in frame.columns:
        frame["_text_column"] = [
            TEXT if not isinstance(t, str) or not t.strip() else SPURIOUS for t in frame[TEXT]
        ]
        frame["_text_status"] = [
            _spurious_status(t, w) for t, w in zip(frame[TEXT], frame[SPURIOUS], strict=True)
        ]
        checks.append(status_check(manifest, frame, "_text_status", "_text_column"))
    if ID in frame.columns:
        checks.append(_unique_ids_check(manifest, frame))
    report = run_checks(frame, checks, suite="text-audit-set")
    if not report.success:
        raise AuditSetError("invalid text audit set: " + "; ".join(report.failures))
    ids = (
        [str(v) for v in frame[ID]]
        if ID in frame.columns
        else [f"text-{line_of(frame, i)}" for i in range(len(frame))]
    )
    return TextAuditSet(
        texts=[str(t) for t in frame[TEXT]],
        labels=torch.tensor([label_index(v, class_names) for v in frame[LABEL]]),
        spurious=[_split(w) for w in frame[SPURIOUS]],
        text_ids=ids,
        class_names=tuple(class_names) if class_names is not None else None,
        manifest=manifest,
        lines=tuple(frame.attrs["lines"]),
    )


def _unique_ids_check(manifest: Path, frame: pd.DataFrame) -> Check:
    def describe(result: dict[str, Any]) -> str:
        rows = list(result.get("unexpected_index_list") or [])[:5]
        found = ", ".join(f"{manifest.name}:{line_of(frame, i)} {frame.at[i, ID]!r}" for i in rows)
        return f"column 'id' repeats an id: {found}"

    return Check("id unique", lambda gxe: gxe.ExpectColumnValuesToBeUnique(column=ID), describe)


def write_text_audit_set(
    path: str | Path,
    texts: Sequence[str],
    labels: Tensor,
    spurious: Sequence[Sequence[str]],
    class_names: Sequence[str],
) -> Path:
    """Write a text audit-set CSV; return its path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow([ID, TEXT, LABEL, SPURIOUS])
        for i, (text, label, words) in enumerate(zip(texts, labels, spurious, strict=True)):
            writer.writerow(
                [f"review-{i:05d}", text, class_names[int(label)], SEPARATOR.join(words)]
            )
    return path


def _split(words: str) -> tuple[str, ...]:
    return tuple(w.strip() for w in words.split(SEPARATOR) if w.strip())


def phrase_spans(text: str, phrases: Sequence[str]) -> list[tuple[int, int]]:
    """Character spans of every whole-word occurrence of each spurious entry (any case).

    A word counts as spurious when its span overlaps one: 'reviewed by sam'
    marks those three words where they occur together, not every 'by'.
    """
    return [
        match.span()
        for phrase in phrases
        for match in re.finditer(rf"(?<!\w){re.escape(phrase)}(?!\w)", text, flags=re.IGNORECASE)
    ]


def _occurs(word: str, text: str) -> bool:
    return bool(phrase_spans(text, [word]))
