"""The audit set's path and region checks: where a manifest row may point, and what region
it names.

A manifest path must stay inside the audit-set folder (no absolute paths, no ``..``
escapes, no symlinks out, no NUL bytes) and name a file; a region is a mask file or an
``x0,y0,x1,y1`` box (end-exclusive) that covers part of the image, never none of it and
never all of it: a region covering everything leaves nothing to compare it with. These are
the checks a shortcut gate's safety rests on (``make mutation`` covers them).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pandas as pd
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor

from pipelines.audit_sets.decoding import DecodeError, mask_array
from pipelines.errors import GateError

__all__ = [
    "BOX",
    "IMAGE",
    "LABEL",
    "MASK",
    "OK",
    "AuditSetError",
    "Region",
    "inside",
    "open_image",
    "parse_box",
    "path_key",
    "region_mask",
    "region_of",
    "region_status",
]

IMAGE, LABEL, MASK, BOX = "image", "label", "spurious_mask", "spurious_box"
OK = "ok"


class AuditSetError(GateError, ValueError):
    """The audit set cannot be used; the message names file, line and column."""


Region = Path | tuple[int, int, int, int] | None
"""A row's spurious region: a mask file, a box ``(x0, y0, x1, y1)``, or None (no regions)."""


def inside(root: Path, value: str) -> tuple[Path | None, str]:
    """Resolve a manifest path; refuse absolute paths and escapes from ``root``."""
    if "\0" in value:
        return None, f"path {value!r} contains a NUL byte"
    candidate = Path(value)
    if candidate.is_absolute():
        return None, f"absolute path {value!r} is not allowed (paths are relative to the manifest)"
    resolved = (root / candidate).resolve()
    if not resolved.is_relative_to(root):
        return None, f"path {value!r} leaves the audit-set folder"
    if not resolved.is_file():
        return None, f"file not found: {value}"
    return resolved, OK


def path_key(root: Path, value: object) -> str | None:
    """One key per image, for the duplicate check: its content's SHA-256.

    So ``./a.png``, ``b/../a.png``, a symlink or hard link to it and a byte-for-byte
    copy are one image, listed twice. A path that is not a file inside the folder
    keys by its normalised spelling (its status check names the problem); an empty
    cell (null, not a string) has no key: it is reported as empty, not also as a
    duplicate of the other empty cells.
    """
    if not isinstance(value, str):
        return None
    resolved, status = inside(root, value)
    if resolved is None or status != OK:
        return os.path.normpath(value)
    with resolved.open("rb") as handle:
        return "sha256:" + hashlib.file_digest(handle, "sha256").hexdigest()


def parse_box(value: str) -> tuple[int, int, int, int] | None:
    try:
        x0, y0, x1, y1 = (int(part) for part in value.split(","))
    except ValueError:
        return None
    return x0, y0, x1, y1


def region_status(root: Path, row: pd.Series) -> tuple[str, str]:
    """(column, status) of a row's spurious region."""
    mask = row.get(MASK)
    box = row.get(BOX)
    if isinstance(mask, str) and mask:
        return MASK, inside(root, mask)[1]
    if isinstance(box, str) and box:
        parsed = parse_box(box)
        if parsed is None:
            return BOX, f"box {box!r} is not four integers x0,y0,x1,y1"
        x0, y0, x1, y1 = parsed
        if min(parsed) < 0:
            return BOX, f"box {box!r} has a negative coordinate (pixels start at 0)"
        if x0 >= x1 or y0 >= y1:
            return BOX, f"box {box!r} is empty or inverted (needs x0 < x1 and y0 < y1)"
        return BOX, OK
    # Name a column the file has: a manifest with only boxes has no mask column.
    return (MASK if MASK in row.index else BOX), f"no {MASK} or {BOX} given"


PIXEL_BUDGET_ENV = "XAI_GATE_MAX_IMAGE_PIXELS"
DEFAULT_PIXEL_BUDGET = 4096 * 4096
"""Pixels one audit image or mask may have (16.8 M, a 4096 x 4096 image): models resize
far below this, and the gate does not resize, so a larger file is a mistake or an attack
(nine 81 M-pixel PNGs of 250 KB each decode to more than 9 GB)."""


def pixel_budget() -> int:
    """``XAI_GATE_MAX_IMAGE_PIXELS``, or :data:`DEFAULT_PIXEL_BUDGET`."""
    raw = os.environ.get(PIXEL_BUDGET_ENV, "").strip()
    if not raw:
        return DEFAULT_PIXEL_BUDGET
    if not raw.isdecimal() or int(raw) < 1:
        raise AuditSetError(f"{PIXEL_BUDGET_ENV} must be a positive whole number, got {raw!r}")
    return int(raw)


def check_pixels(handle: Image.Image, path: Path, where: str) -> None:
    """Refuse an image over the pixel budget from its header, before a pixel is decoded."""
    width, height = handle.size
    budget = pixel_budget()
    if width * height > budget:
        raise AuditSetError(
            f"{where}: {path.name} is {width}x{height} = {width * height:,} pixels, over the "
            f"budget of {budget:,} ({PIXEL_BUDGET_ENV}); resize the audit set to the size the "
            "model takes"
        )


def open_image(path: Path, where: str) -> Image.Image:
    try:
        with Image.open(path) as handle:
            check_pixels(handle, path, where)
            handle.load()
            return handle.copy()
    except (UnidentifiedImageError, OSError, SyntaxError, Image.DecompressionBombError) as exc:
        raise AuditSetError(f"{where}: cannot decode {path.name}: {exc}") from None


def region_of(root: Path, row: pd.Series) -> tuple[Region, str]:
    """A validated row's region, and the column it came from."""
    if MASK not in row.index and BOX not in row.index:
        return None, IMAGE
    mask_path = row.get(MASK)
    if isinstance(mask_path, str) and mask_path:
        return root / mask_path, MASK
    return parse_box(row[BOX]), BOX  # type: ignore[return-value]  # validated above


def region_mask(region: Region, size: tuple[int, int], where: str) -> Tensor:
    height, width = size
    if region is None:
        return torch.zeros(height, width, dtype=torch.bool)
    if isinstance(region, Path):
        try:
            mask = torch.from_numpy(mask_array(open_image(region, where)).copy())
        except DecodeError as exc:
            raise AuditSetError(f"{where}: {region.name}: {exc}") from None
        if tuple(mask.shape) != (height, width):
            raise AuditSetError(
                f"{where}: mask size {tuple(mask.shape)} differs from its image's {(height, width)}"
            )
        if not mask.any():
            raise AuditSetError(
                f"{where}: mask {region.name} is empty (every pixel is zero; non-zero = spurious)"
            )
        if mask.all():
            raise AuditSetError(
                f"{where}: mask {region.name} covers the whole image (every pixel is non-zero): "
                "nothing is left outside the region to compare it with"
            )
        return mask
    x0, y0, x1, y1 = region
    if not (0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height):
        raise AuditSetError(
            f"{where}: box {f'{x0},{y0},{x1},{y1}'!r} is empty or outside the "
            f"{width}x{height} image"
        )
    if (x1 - x0, y1 - y0) == (width, height):
        raise AuditSetError(
            f"{where}: box {f'{x0},{y0},{x1},{y1}'!r} covers the whole {width}x{height} image: "
            "nothing is left outside the region to compare it with"
        )
    mask = torch.zeros(height, width, dtype=torch.bool)
    mask[y0:y1, x0:x1] = True
    return mask
