"""Audit sets on disk: a CSV manifest of images with their spurious regions.

Manifest columns:

* ``image``: path to an image, relative to the manifest's folder;
* ``label``: a class name of the model (or its integer index);
* ``spurious_mask``: path to a PNG mask (non-zero = spurious), or
  ``spurious_box``: ``x0,y0,x1,y1`` in pixels, end-exclusive. A manifest with
  neither column has no known spurious regions at all: only checks that need
  none (strategy discovery, sanity) can gate on it.

Great Expectations checks the manifest before any image is decoded: columns
present, labels known, files present inside the audit-set folder, no
duplicates. Every error names the manifest, the CSV line and the column.
Images of every Pillow mode are scaled to [0, 1] by their bit depth (16-bit
grayscale included; see ``pipelines.audit_sets.decoding``) and must share one
size. A mask pixel is spurious when it is non-zero; a region may not cover a
whole image (nothing would be left to compare it with).

Loading checks every file (image headers and checksums, every mask decoded)
but keeps none of them: ``AuditSet.images`` and ``masks`` are lazy stacks that
decode the rows a batch asks for, so an audit set of any size streams through
the gate in the memory of one batch.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor

from pipelines.audit_sets.decoding import (
    DecodeError,
    check_mode,
    image_array,
    oriented_size,
)
from pipelines.audit_sets.regions import (
    BOX,
    IMAGE,
    LABEL,
    MASK,
    OK,
    AuditSetError,
    check_pixels,
    inside,
    open_image,
    path_key,
    region_mask,
    region_of,
    region_status,
)
from pipelines.evidence.gx import Check, run_checks

__all__ = [
    "AuditSet",
    "AuditSetError",
    "FileStack",
    "ImageFiles",
    "RegionMasks",
    "load_audit_set",
    "write_audit_set",
    "write_masked_copy",
]


@dataclass(frozen=True)
class FileStack:
    """Rows of an audit set decoded on access: indexes like an (N, ...) tensor.

    ``[i]`` gives one row, ``[start:stop]`` and ``[index tensor or list]`` a
    stacked batch. ``rows(start, stop)`` is a lazy window (a shard) that
    decodes nothing. A decode error names the manifest line and column.
    """

    sources: tuple[Any, ...]
    wheres: tuple[str, ...]
    """``manifest.csv:LINE column 'NAME'`` of each row, for errors."""
    size: tuple[int, int]

    def __len__(self) -> int:
        return len(self.sources)

    @property
    def shape(self) -> torch.Size:
        return torch.Size((len(self), *self.row_shape))

    @property
    def row_shape(self) -> tuple[int, ...]:
        raise NotImplementedError

    def decode(self, source: Any, where: str) -> Tensor:
        raise NotImplementedError

    def rows(self, start: int, stop: int) -> FileStack:
        return replace(self, sources=self.sources[start:stop], wheres=self.wheres[start:stop])

    def __getitem__(self, index: int | slice | Sequence[int] | Tensor) -> Tensor:
        if isinstance(index, tuple):
            raise TypeError(
                "a stack of files indexes rows only (images[i], images[a:b], images[rows]); "
                "index the decoded tensor for elements"
            )
        if isinstance(index, Tensor | np.ndarray) and index.ndim == 0:
            index = int(index)
        if isinstance(index, int | np.integer) and not isinstance(index, bool):
            return self.decode(self.sources[index], self.wheres[index])
        if isinstance(index, slice):
            rows: Sequence[int] = range(len(self))[index]
        else:
            picked = torch.as_tensor(np.asarray(index) if not isinstance(index, Tensor) else index)
            if picked.ndim != 1:
                raise TypeError(f"row indices must be one-dimensional, got {tuple(picked.shape)}")
            if picked.dtype == torch.bool:  # a mask over the rows, as for a tensor
                if picked.numel() != len(self):
                    raise IndexError(f"boolean index of {picked.numel()} for {len(self)} rows")
                picked = picked.nonzero().flatten()
            rows = picked.tolist()
        if not rows:
            return torch.empty(0, *self.row_shape, dtype=self.dtype)
        return torch.stack([self.decode(self.sources[i], self.wheres[i]) for i in rows])

    @property
    def dtype(self) -> torch.dtype:
        return torch.float32


@dataclass(frozen=True)
class ImageFiles(FileStack):
    """RGB images, (N, 3, H, W) float32 in [0, 1]."""

    @property
    def row_shape(self) -> tuple[int, ...]:
        return (3, *self.size)

    def decode(self, source: Any, where: str) -> Tensor:
        image = _load_image(source, where)
        if tuple(image.shape[-2:]) != self.size:  # the file changed since it was checked
            raise AuditSetError(
                f"{where}: size {tuple(image.shape[-2:])} differs from the audit set's {self.size}"
            )
        return image


@dataclass(frozen=True)
class RegionMasks(FileStack):
    """Spurious regions, (N, H, W) bool: mask files and boxes (``Region``)."""

    @property
    def row_shape(self) -> tuple[int, ...]:
        return self.size

    @property
    def dtype(self) -> torch.dtype:
        return torch.bool

    def decode(self, source: Any, where: str) -> Tensor:
        return region_mask(source, self.size, where)


@dataclass(frozen=True)
class AuditSet:
    images: ImageFiles
    """(N, 3, H, W) float32 in [0, 1], decoded on access."""
    labels: Tensor
    """(N,) class indices."""
    masks: RegionMasks
    """(N, H, W) bool: the known spurious region of each image, decoded on access."""
    image_ids: list[str]
    class_names: tuple[str, ...] | None
    manifest: Path

    def __len__(self) -> int:
        return len(self.image_ids)

    @property
    def has_regions(self) -> bool:
        """Whether the manifest gives spurious regions (else every mask is empty)."""
        return any(region is not None for region in self.masks.sources)

    def subset(self, start: int, stop: int) -> AuditSet:
        """Rows ``start:stop``, e.g. one shard of a scaled-out audit; nothing is decoded."""
        return replace(
            self,
            images=self.images.rows(start, stop),
            labels=self.labels[start:stop],
            masks=self.masks.rows(start, stop),
            image_ids=self.image_ids[start:stop],
        )


def line_of(frame: pd.DataFrame | Sequence[int] | None, index: int) -> int:
    """The CSV line a data row starts on (1-based): ``read_manifest`` records it per row, so a
    quoted field spanning several lines does not shift the lines of the rows after it."""
    lines = frame.attrs.get("lines") if isinstance(frame, pd.DataFrame) else frame
    return int(lines[int(index)]) if lines is not None else int(index) + 2


def status_check(manifest: Path, frame: pd.DataFrame, status_column: str, column_of: str) -> Check:
    def describe(result: dict[str, Any]) -> str:
        rows = list(result.get("unexpected_index_list") or [])
        parts = [
            f"{manifest.name}:{line_of(frame, i)} column {frame.at[i, column_of]!r}: "
            f"{frame.at[i, status_column]}"
            for i in rows[:5]
        ]
        more = f" (and {len(rows) - 5} more)" if len(rows) > 5 else ""
        return "; ".join(parts) + more

    return Check(
        status_column,
        lambda gxe: gxe.ExpectColumnValuesToBeInSet(column=status_column, value_set=[OK]),
        describe,
    )


def required_columns(manifest: Path, frame: pd.DataFrame, columns: Sequence[str]) -> list[Check]:
    """One check per required column, naming the columns the file does have."""
    return [
        Check(
            f"{column} exists",
            lambda gxe, c=column: gxe.ExpectColumnToExist(column=c),
            lambda _r, c=column: (
                f"{manifest.name}: required column {c!r} is missing "
                f"(columns: {', '.join(map(str, frame.columns))})"
            ),
        )
        for column in columns
    ]


def label_checks(
    manifest: Path, frame: pd.DataFrame, known_labels: Sequence[str] | None
) -> list[Check]:
    """Labels present and known: class names of the model, or integer indices."""
    name = manifest.name

    def bad_labels(result: dict[str, Any]) -> str:
        rows = list(result.get("unexpected_index_list") or [])[:5]
        found = ", ".join(f"{name}:{line_of(frame, i)} {frame.at[i, LABEL]!r}" for i in rows)
        allowed = ", ".join(known_labels) if known_labels else "integer class indices"
        return f"column 'label' has unknown labels: {found} (known: {allowed})"

    if known_labels is not None:
        allowed = [*known_labels, *map(str, range(len(known_labels)))]
        build = lambda gxe: gxe.ExpectColumnValuesToBeInSet(column=LABEL, value_set=allowed)  # noqa: E731
    else:
        build = lambda gxe: gxe.ExpectColumnValuesToMatchRegex(column=LABEL, regex=r"^\d+$")  # noqa: E731
    return [
        Check("labels known", build, bad_labels),
        Check(
            "label not null",
            lambda gxe: gxe.ExpectColumnValuesToNotBeNull(column=LABEL),
            lambda r: (
                "column 'label' is empty on "
                + ", ".join(
                    f"{name}:{line_of(frame, i)}" for i in r.get("unexpected_index_list", [])[:5]
                )
            ),
        ),
    ]


def _manifest_checks(
    manifest: Path, frame: pd.DataFrame, known_labels: Sequence[str] | None
) -> list[Check]:
    name = manifest.name
    checks = required_columns(manifest, frame, (IMAGE, LABEL))
    if LABEL in frame.columns:
        checks += label_checks(manifest, frame, known_labels)
    if IMAGE in frame.columns:
        checks.append(status_check(manifest, frame, "_image_status", "_image_column"))

        def duplicates(result: dict[str, Any]) -> str:
            rows = list(result.get("unexpected_index_list") or [])[:5]
            found = ", ".join(f"{name}:{line_of(frame, i)} {frame.at[i, IMAGE]!r}" for i in rows)
            return (
                f"column 'image' lists an image more than once: {found} (compared by "
                "content: another spelling, a link or a copy is the same image)"
            )

        checks.append(
            Check(
                "image unique",  # by content: ./x.png, a link to it and a copy are one image
                lambda gxe: gxe.ExpectColumnValuesToBeUnique(column="_image_key"),
                duplicates,
            )
        )
    if MASK in frame.columns or BOX in frame.columns:
        checks.append(status_check(manifest, frame, "_region_status", "_region_column"))
    return checks


def read_manifest(manifest: Path) -> pd.DataFrame:
    """The manifest as strings (empty fields null), one row per CSV record.

    A UTF-8 byte-order mark is skipped; blank lines are skipped; ragged rows
    and repeated header names are refused, not cut or renamed. The line each
    record starts on is kept in ``frame.attrs["lines"]`` (see ``line_of``).
    """
    if not manifest.is_file():
        raise AuditSetError(f"audit-set manifest not found: {manifest}")
    rows, lines = [], []
    try:
        with manifest.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle)
            header = [str(column).strip() for column in next(reader, [])]
            start = reader.line_num + 1
            for row in reader:
                if row:  # a blank line; a line of empty fields is a row (and refused later)
                    rows.append(row)
                    lines.append(start)
                start = reader.line_num + 1
    except (UnicodeDecodeError, csv.Error) as exc:
        raise AuditSetError(f"cannot read manifest {manifest}: {exc}") from None
    if not header or not any(header):
        raise AuditSetError(f"manifest {manifest} has no header row")
    repeated = sorted({column for column in header if header.count(column) > 1})
    if repeated:
        raise AuditSetError(
            f"{manifest.name}:1 the header names column(s) {repeated} more than once; "
            "each column must be named once"
        )
    for number, row in zip(lines, rows, strict=True):
        if len(row) != len(header):
            raise AuditSetError(
                f"{manifest.name}:{number} has {len(row)} fields but the header has "
                f"{len(header)}; quote values that contain commas"
            )
    if not rows:
        raise AuditSetError(f"manifest {manifest} has no rows: the audit set is empty")
    frame = pd.DataFrame(rows, columns=header, dtype=object)
    frame = frame.mask(frame == "")  # an empty field is null, as pandas reads CSVs
    frame.attrs["lines"] = lines
    return frame


def load_audit_set(manifest: str | Path, *, class_names: Sequence[str] | None = None) -> AuditSet:
    """Validate a manifest with Great Expectations, then check every image and mask file.

    Nothing is kept in memory: the returned set's ``images`` and ``masks``
    decode the rows a batch asks for.

    ``class_names`` are the model's classes; labels must be one of them (or an
    index). Without them, labels must be integer indices.
    """
    manifest = Path(manifest).absolute()
    frame = read_manifest(manifest)
    root = manifest.parent.resolve()
    if IMAGE in frame.columns:
        frame["_image_column"] = IMAGE
        frame["_image_status"] = [
            inside(root, v)[1] if isinstance(v, str) else "empty image path" for v in frame[IMAGE]
        ]
        frame["_image_key"] = [path_key(root, v) for v in frame[IMAGE]]
    if MASK in frame.columns or BOX in frame.columns:
        regions = [region_status(root, row) for _, row in frame.iterrows()]
        frame["_region_column"] = [column for column, _ in regions]
        frame["_region_status"] = [status for _, status in regions]
    report = run_checks(
        frame, _manifest_checks(manifest, frame, class_names), suite="audit-set-manifest"
    )
    if not report.success:
        raise AuditSetError("invalid audit set: " + "; ".join(report.failures))

    size: tuple[int, int] | None = None
    image_paths, image_wheres, regions, region_wheres = [], [], [], []
    for index, row in frame.iterrows():
        where = f"{manifest.name}:{line_of(frame, int(index))}"
        path = root / row[IMAGE]
        image_size = _check_image(path, f"{where} column 'image'")
        if size is None:
            size = image_size
        elif image_size != size:
            raise AuditSetError(
                f"{where} column 'image': size {image_size} differs from the first "
                f"image's {size}; all audit images must share one size"
            )
        region, column = region_of(root, row)
        region_where = f"{where} column {column!r}"
        region_mask(region, size, region_where)  # checked now, decoded again per batch
        image_paths.append(path)
        image_wheres.append(f"{where} column 'image'")
        regions.append(region)
        region_wheres.append(region_where)
    assert size is not None  # read_manifest refuses an empty manifest
    return AuditSet(
        images=ImageFiles(tuple(image_paths), tuple(image_wheres), size),
        labels=torch.tensor(
            [label_index(label, class_names) for label in frame[LABEL]], dtype=torch.long
        ),
        masks=RegionMasks(tuple(regions), tuple(region_wheres), size),
        image_ids=[str(v) for v in frame[IMAGE]],
        class_names=tuple(class_names) if class_names is not None else None,
        manifest=manifest,
    )


def label_index(label: str, class_names: Sequence[str] | None) -> int:
    if class_names is not None and label in class_names:
        return list(class_names).index(label)
    return int(label)


def _check_image(path: Path, where: str) -> tuple[int, int]:
    """(H, W) as oriented, after checking the file's structure without decoding pixels."""
    try:
        with Image.open(path) as handle:
            check_pixels(handle, path, where)
            check_mode(handle)
            handle.verify()  # chunk checksums and truncation, at a fraction of a decode
        with Image.open(path) as handle:  # verify() leaves the file unusable
            size = oriented_size(handle)
    except (UnidentifiedImageError, OSError, SyntaxError, Image.DecompressionBombError) as exc:
        raise AuditSetError(f"{where}: cannot decode {path.name}: {exc}") from None
    except DecodeError as exc:
        raise AuditSetError(f"{where}: {path.name}: {exc}") from None
    return size


def _load_image(path: Path, where: str) -> Tensor:
    try:
        return torch.from_numpy(image_array(open_image(path, where)))
    except DecodeError as exc:
        raise AuditSetError(f"{where}: {path.name}: {exc}") from None


def write_audit_set(
    folder: str | Path,
    images: Tensor,
    labels: Tensor,
    masks: Tensor,
    class_names: Sequence[str],
) -> Path:
    """Write images and masks as PNGs plus ``manifest.csv``; return the manifest path."""
    folder = Path(folder)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "masks").mkdir(parents=True, exist_ok=True)
    manifest = folder / "manifest.csv"
    pixels = (images.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    mask_pixels = (masks.to(torch.uint8) * 255).numpy()
    with manifest.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow([IMAGE, LABEL, MASK])
        for i, (image, mask, label) in enumerate(zip(pixels, mask_pixels, labels, strict=True)):
            image_path = f"images/{i:05d}.png"
            mask_path = f"masks/{i:05d}.png"
            Image.fromarray(image).save(folder / image_path)
            Image.fromarray(mask).save(folder / mask_path)
            writer.writerow([image_path, class_names[int(label)], mask_path])
    return manifest


def write_masked_copy(folder: str | Path, source: AuditSet, masks: Tensor) -> Path:
    """A copy of ``source`` in ``folder`` with ``masks`` (N, H, W) bool as its spurious regions.

    Image files are copied as they are (format and bit depth kept); masks are
    written as PNGs; labels keep their names. Refuses a folder that already
    holds a manifest, so nothing is overwritten; written to a temporary folder
    first and renamed, so an interrupted run leaves no half-written set.
    """
    import shutil
    import tempfile

    folder = Path(folder)
    n, (height, width) = len(source), source.images.size
    if tuple(masks.shape) != (n, height, width):
        raise AuditSetError(
            f"masks must be {(n, height, width)} for {source.manifest}, got {tuple(masks.shape)}"
        )
    if (folder / "manifest.csv").exists():
        raise AuditSetError(f"{folder / 'manifest.csv'} exists: choose an empty folder")
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    try:
        (staging / "images").mkdir()
        (staging / "masks").mkdir()
        names = source.class_names
        with (staging / "manifest.csv").open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow([IMAGE, LABEL, MASK])
            for i, (image, label) in enumerate(
                zip(source.images.sources, source.labels, strict=True)
            ):
                image_path = f"images/{i:05d}{Path(image).suffix}"
                mask_path = f"masks/{i:05d}.png"
                shutil.copy2(image, staging / image_path)
                pixels = (masks[i].to(torch.uint8) * 255).numpy()
                Image.fromarray(pixels).save(staging / mask_path)
                name = names[int(label)] if names is not None else str(int(label))
                writer.writerow([image_path, name, mask_path])
        if folder.exists():
            if any(folder.iterdir()):
                raise AuditSetError(f"{folder} is not empty: choose an empty folder")
            folder.rmdir()
        staging.rename(folder)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return folder / "manifest.csv"
