"""What the parent sends the judging worker, and what it accepts back.

The worker ran the registrant's code, so its answer is checked as input from
a stranger: a strict schema (no extra keys, no coercion: ``true`` is not a
number), finite numbers where a number is a score, artifact paths under
``xai/`` with no way out, files that are plain files inside the answer's
folder, PNGs that are PNGs, and the digests of the model and audit set it
judged equal to the ones the parent computed. Only JSON, CSV, PNG and HTML
cross the boundary; nothing is unpickled.
"""

from __future__ import annotations

import io
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    ValidationError,
)

from pipelines.errors import GateError
from pipelines.evidence.base import EvidenceValidation
from pipelines.evidence.gx import SuiteResult

__all__ = [
    "JUDGEMENT_FILE",
    "CheckedJudgement",
    "JudgeRequest",
    "Judgement",
    "JudgingError",
    "StageRecord",
    "read_judgement",
]

JUDGEMENT_FILE = "judgement.json"
ERROR_FILE = "error.json"
MAX_FILE_BYTES = 64 * 2**20
"""No single artifact of one gate run is near this; a larger one is refused, not logged."""
MAX_TOTAL_BYTES = 512 * 2**20
_ARTIFACT_PATH = re.compile(r"xai/(?:[A-Za-z0-9_.-]+/)*[A-Za-z0-9_-][A-Za-z0-9_.-]*")
_FILE_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,120}")
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_SHA256 = re.compile(r"[0-9a-f]{64}")


class JudgingError(GateError):
    """The worker failed, or its answer is not one the gate can decide on."""


class _Strict(BaseModel):
    # NaN is a metric MLflow records as undefined: written as JSON's NaN, not null.
    model_config = ConfigDict(
        strict=True, extra="forbid", frozen=True, ser_json_inf_nan="constants"
    )


Number = Annotated[float, Field(strict=True, allow_inf_nan=True)]
"""A JSON number (NaN allowed: MLflow records undefined metrics as such); never a bool."""


class FetchedFiles(_Strict):
    """The fetched model as the worker is to load it (``pipelines.tracking.models``)."""

    uri: StrictStr
    folder: StrictStr
    digest: StrictStr
    name: StrictStr = ""
    version: StrictStr = ""
    source_run_id: StrictStr | None = None
    model_id: StrictStr | None = None
    source: StrictStr = ""
    created: StrictStr = ""


class DaskOptions(_Strict):
    address: StrictStr | None = None
    workers: Annotated[int, Field(strict=True, ge=1)] = 2


class JudgeRequest(_Strict):
    """What the parent asks: judge these fetched files under this policy."""

    format: Literal["xai-gate-judge-request-v1"] = "xai-gate-judge-request-v1"
    model: FetchedFiles
    policy: dict[str, Any]
    """``GatePolicy.model_dump(mode="json")``: validated again by the worker."""
    shards: Annotated[int, Field(strict=True, ge=1)] = 1
    dask: DaskOptions | None = None
    title: StrictStr = ""
    env: dict[StrictStr, StrictStr] = {}
    """The worker's whole environment: the parent's, less every credential
    (``pipelines.judging.sandbox.worker_environment``)."""
    sys_path: list[StrictStr] = []
    cwd: StrictStr = "."


class SuiteOutcome(_Strict):
    success: StrictBool
    failures: list[StrictStr] = []
    failed: list[StrictStr] = []
    document: StrictStr | None = None
    """File holding the full GX validation result (logged as evidence)."""


class StageRecord(_Strict):
    name: StrictStr
    seconds: Annotated[float, Field(strict=True, ge=0, allow_inf_nan=False)]


class Judgement(_Strict):
    """The worker's answer, as ``judgement.json`` in its output folder."""

    format: Literal["xai-gate-judgement-v1"] = "xai-gate-judgement-v1"
    model_digest: StrictStr
    audit_set_digest: StrictStr
    modality: Literal["image", "text"]
    evidence_lines: tuple[StrictStr, ...]
    regions: StrictBool
    summary: dict[StrictStr, StrictInt | Number | StrictStr]
    metrics: dict[StrictStr, Number]
    series: dict[StrictStr, list[Number]] = {}
    warnings: list[StrictStr] = []
    max_batch: Annotated[int, Field(strict=True, ge=1)] | None = None
    precision_used: StrictStr | None = None
    scores: SuiteOutcome
    sanity: SuiteOutcome | None = None
    discovery: SuiteOutcome | None = None
    notes: list[StrictStr] = []
    uninformative: list[StrictStr] = []
    tables: dict[StrictStr, StrictStr] = {}
    """Artifact path -> CSV file of the output folder."""
    report_tables: dict[StrictStr, StrictStr] = {}
    """Report heading -> CSV file."""
    pages: dict[StrictStr, StrictStr] = {}
    figures: dict[StrictStr, StrictStr] = {}
    """Artifact path -> PNG file, drawn by the worker."""
    stages: list[StageRecord] = []


@dataclass(frozen=True)
class CheckedJudgement:
    """A judgement whose every file was read and checked: what the parent logs and decides on."""

    judgement: Judgement
    validation: EvidenceValidation
    tables: dict[str, str]
    """Artifact path -> CSV text, logged as the worker wrote it (checked to parse)."""
    report_tables: dict[str, Any]
    documents: dict[str, Any]
    pages: dict[str, str]
    figures: dict[str, bytes]

    @property
    def modality(self) -> str:
        return self.judgement.modality

    @property
    def evidence_lines(self) -> tuple[str, ...]:
        return self.judgement.evidence_lines

    @property
    def regions(self) -> bool:
        return self.judgement.regions

    @property
    def summary(self) -> dict[str, float | int | str]:
        return dict(self.judgement.summary)

    def metrics(self) -> dict[str, float]:
        return dict(self.judgement.metrics)

    def series(self) -> dict[str, list[float]]:
        return {key: list(values) for key, values in self.judgement.series.items()}

    def warnings(self) -> list[str]:
        return list(self.judgement.warnings)


def read_judgement(
    folder: Path, *, model_digest: str, audit_set_digest: str, what: str
) -> CheckedJudgement:
    """The worker's answer in ``folder``, checked; a ``JudgingError`` naming the fault else.

    ``what`` names the judged model in messages (``models:/m/3``).
    """
    path = folder / JUDGEMENT_FILE
    raw = _read_file(folder, JUDGEMENT_FILE, what)
    try:
        judgement = Judgement.model_validate_json(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'answer'}: {e['msg']}" for e in exc.errors()
        )
        raise JudgingError(f"the judging worker's answer {path} is malformed: {problems}") from None
    if not _SHA256.fullmatch(judgement.model_digest) or judgement.model_digest != model_digest:
        raise JudgingError(
            f"the judging worker judged other bytes than {what} (model digest "
            f"{judgement.model_digest[:16]!r}, fetched {model_digest[:16]!r})"
        )
    if judgement.audit_set_digest != audit_set_digest:
        raise JudgingError(
            f"the judging worker read another audit set than the policy names (digest "
            f"{judgement.audit_set_digest[:16]!r}, expected {audit_set_digest[:16]!r})"
        )
    for name, value in judgement.metrics.items():
        if math.isinf(value):
            raise JudgingError(f"the judging worker's metric {name!r} is infinite")
    budget = _Budget(MAX_TOTAL_BYTES)
    documents: dict[str, Any] = {}

    def suite(outcome: SuiteOutcome | None, artifact: str) -> SuiteResult | None:
        if outcome is None:
            return None
        if outcome.success and (outcome.failures or outcome.failed):
            raise JudgingError(
                f"the judging worker's {artifact} says it passed and names failures "
                f"({'; '.join(outcome.failures)[:300]})"
            )
        result: dict[str, Any] = {}
        if outcome.document is not None:
            text = budget.take(_read_file(folder, outcome.document, what))
            try:
                result = json.loads(text)
            except ValueError as exc:
                raise JudgingError(
                    f"the judging worker's {outcome.document} is not JSON: {exc}"
                ) from None
            if not isinstance(result, dict):
                raise JudgingError(f"the judging worker's {outcome.document} is not an object")
            documents[artifact] = result
        return SuiteResult(
            success=outcome.success,
            failures=list(outcome.failures),
            result=result,
            failed=list(outcome.failed),
        )

    scores = suite(judgement.scores, "xai/validation.json")
    assert scores is not None  # the schema requires it
    validation = EvidenceValidation(
        scores=scores,
        sanity=suite(judgement.sanity, "xai/validation_sanity.json"),
        discovery=suite(judgement.discovery, "xai/validation_discovery.json"),
        notes=tuple(judgement.notes),
        uninformative=tuple(judgement.uninformative),
    )
    tables = {}
    for key, file in judgement.tables.items():
        _csv(folder, file, what, budget)
        tables[_artifact_path(key)] = _read_file(folder, file, what).decode("utf-8")
    report_tables = {
        heading: _csv(folder, file, what, budget)
        for heading, file in judgement.report_tables.items()
    }
    pages = {
        _artifact_path(key): budget.take(_read_file(folder, file, what)).decode("utf-8", "replace")
        for key, file in judgement.pages.items()
    }
    figures: dict[str, bytes] = {}
    for key, file in judgement.figures.items():
        png = budget.take(_read_file(folder, file, what))
        if not png.startswith(_PNG_MAGIC):
            raise JudgingError(f"the judging worker's figure {file} for {key} is not a PNG")
        figures[_artifact_path(key)] = png
    return CheckedJudgement(
        judgement=judgement,
        validation=validation,
        tables=tables,
        report_tables=report_tables,
        documents=documents,
        pages=pages,
        figures=figures,
    )


class _Budget:
    def __init__(self, limit: int) -> None:
        self.left = limit

    def take(self, data: bytes) -> bytes:
        self.left -= len(data)
        if self.left < 0:
            raise JudgingError(
                f"the judging worker's answer is larger than {MAX_TOTAL_BYTES // 2**20} MiB"
            )
        return data


def _artifact_path(key: str) -> str:
    if not _ARTIFACT_PATH.fullmatch(key) or ".." in key.split("/"):
        raise JudgingError(f"the judging worker named an artifact outside xai/: {key[:200]!r}")
    return key


def _read_file(folder: Path, name: str, what: str) -> bytes:
    """A plain file directly in ``folder`` (no link, no sub-path), at most MAX_FILE_BYTES."""
    if not _FILE_NAME.fullmatch(name):
        raise JudgingError(f"the judging worker named a file outside its folder: {name[:200]!r}")
    path = folder / name
    if path.is_symlink() or not path.is_file():
        raise JudgingError(f"the judging worker of {what} left no plain file {name}")
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        raise JudgingError(
            f"the judging worker's {name} is {size} bytes (more than {MAX_FILE_BYTES})"
        )
    return path.read_bytes()


def _csv(folder: Path, name: str, what: str, budget: _Budget) -> Any:
    import pandas as pd

    data = budget.take(_read_file(folder, name, what))
    try:
        return pd.read_csv(io.BytesIO(data))
    except (ValueError, UnicodeDecodeError, pd.errors.ParserError) as exc:
        raise JudgingError(f"the judging worker's table {name} is not CSV: {exc}") from None


def write_error(folder: Path, message: str) -> None:
    """The worker's one-line failure, for the parent to report (``ERROR_FILE``)."""
    (folder / ERROR_FILE).write_text(json.dumps({"message": message}), encoding="utf-8")


def read_error(folder: Path) -> str | None:
    """The worker's failure message, one line of at most 1,000 characters; None if none."""
    path = folder / ERROR_FILE
    if path.is_symlink() or not path.is_file() or path.stat().st_size > 65536:
        return None
    try:
        message = json.loads(path.read_text(encoding="utf-8", errors="replace")).get("message")
    except (ValueError, AttributeError):
        return None
    if not isinstance(message, str):
        return None
    return " ".join(message.split())[:1000]
