"""The judging worker: loads the fetched model, runs every stage, writes plain files.

This is the only place the registrant's model runs. It runs in a process
forked by :mod:`pipelines.judging.sandbox` from a zygote whose environment
never held a credential; what it writes (JSON, CSV, PNG, HTML) is all the
parent sees of it, read back by :func:`pipelines.judging.contract.read_judgement`.
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from pipelines.judging.contract import (
    JUDGEMENT_FILE,
    DaskOptions,
    Judgement,
    JudgeRequest,
    StageRecord,
    SuiteOutcome,
    write_error,
)

__all__ = ["STAGE_MARK", "judge", "run_request"]

T = TypeVar("T")

STAGE_MARK = "xai-gate-stage "
"""Log lines the parent forwards to the Prefect run log start with this."""


@dataclass
class RecordingRunner:
    """Runs each stage in this process and records its name and time; logs each start."""

    log: Callable[[str], None]
    records: list[StageRecord] = field(default_factory=list)

    def run(self, stage: str, fn: Callable[..., T], *args: Any) -> T:
        self.log(f"{STAGE_MARK}{stage} started")
        began = time.perf_counter()
        value = fn(*args)
        self.records.append(StageRecord(name=stage, seconds=time.perf_counter() - began))
        self.log(f"{STAGE_MARK}{stage} finished")
        return value

    def submit(self, stage: str, fn: Callable[..., T], *args: Any) -> Any:
        return _Ran(self.run(stage, fn, *args))


@dataclass(frozen=True)
class _Ran:
    value: Any

    def result(self) -> Any:
        return self.value


class DaskRunner(RecordingRunner):
    """Submits stages to a Dask cluster this worker started (or the operator's, by address).

    The cluster's workers are this process's children, so they inherit its
    environment: no credential reaches the processes that run the model's shards.
    """

    def __init__(self, log: Callable[[str], None], options: DaskOptions) -> None:
        super().__init__(log)
        from distributed import Client, LocalCluster

        self._cluster = None
        if options.address:
            self._client = Client(options.address)
        else:
            import os

            threads = max(1, (os.cpu_count() or 1) // options.workers)
            self._cluster = LocalCluster(
                n_workers=options.workers,
                threads_per_worker=1,
                processes=True,
                dashboard_address=None,
                env={"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)},
            )
            self._client = Client(self._cluster)

    def submit(self, stage: str, fn: Callable[..., T], *args: Any) -> Any:
        self.log(f"{STAGE_MARK}{stage} submitted")
        return _Submitted(self, stage, self._client.submit(fn, *args, pure=False), time.time())

    def close(self) -> None:
        self._client.close()
        if self._cluster is not None:
            self._cluster.close()


@dataclass
class _Submitted:
    runner: DaskRunner
    stage: str
    future: Any
    began: float

    def result(self) -> Any:
        value = self.future.result()
        seconds = max(0.0, time.time() - self.began)
        self.runner.records.append(StageRecord(name=self.stage, seconds=seconds))
        self.runner.log(f"{STAGE_MARK}{self.stage} finished")
        return value


def judge(request: JudgeRequest, out: Path, log: Callable[[str], None]) -> Judgement:
    """Load, audit and validate; write every file of the answer and ``judgement.json`` last."""
    from pipelines.errors import ModelLoadError, describe_error, is_expected
    from pipelines.policy import GatePolicy
    from pipelines.stages.assembly import collect_evidence
    from pipelines.tracking.models import FetchedModel, load_fetched
    from pipelines.verdict.evidence_digest import audit_set_digest
    from pipelines.verdict.model_digest import model_digest

    policy = GatePolicy.model_validate(request.policy)
    files = request.model
    fetched = FetchedModel(
        uri=files.uri,
        folder=Path(files.folder),
        digest=files.digest,
        name=files.name,
        version=files.version,
        source_run_id=files.source_run_id,
        model_id=files.model_id,
        source=files.source,
        created=files.created,
    )
    judged_digest = model_digest(fetched.folder)  # the bytes as this worker reads them
    audit_digest = audit_set_digest(Path(policy.audit_set))
    log(f"{STAGE_MARK}load-model started")
    try:
        model = load_fetched(fetched, builders=policy.model_builders)
    except Exception as exc:  # the model's own code failed: name the model, keep one line
        if is_expected(exc):
            raise
        raise ModelLoadError(f"cannot load {fetched.uri}: {describe_error(exc)}") from exc
    runner = RecordingRunner(log) if request.dask is None else DaskRunner(log, request.dask)
    try:
        evidence = collect_evidence(model, policy, runner=runner, shards=request.shards)
    finally:
        if isinstance(runner, DaskRunner):
            runner.close()
    log(f"{STAGE_MARK}validate-evidence started")
    rules = policy.rules()
    validation = evidence.validate(rules)
    writer = _Writer(out)

    def suite(result: Any, artifact: str) -> SuiteOutcome | None:
        if result is None:
            return None
        return SuiteOutcome(
            success=bool(result.success),
            failures=[str(f) for f in result.failures],
            failed=[str(f) for f in result.failed],
            document=writer.text(json.dumps(result.result, default=str), ".json"),
        )

    log(f"{STAGE_MARK}draw-figures started")
    figures = {
        path: writer.png(draw)
        for path, draw in evidence.figures(rules, request.title or model.uri).items()
    }
    judgement = Judgement(
        model_digest=judged_digest,
        audit_set_digest=audit_digest,
        modality=evidence.modality,
        evidence_lines=tuple(evidence.evidence_lines),
        regions=bool(evidence.regions),
        summary=dict(evidence.summary),
        metrics={key: float(value) for key, value in evidence.metrics().items()},
        series={key: [float(v) for v in values] for key, values in evidence.series().items()},
        warnings=[str(w) for w in evidence.warnings()],
        max_batch=model.max_batch,
        precision_used=None if evidence.precision is None else evidence.precision.used,
        scores=suite(validation.scores, "xai/validation.json"),
        sanity=suite(validation.sanity, "xai/validation_sanity.json"),
        discovery=suite(validation.discovery, "xai/validation_discovery.json"),
        notes=list(validation.notes),
        uninformative=list(validation.uninformative),
        tables={
            path: writer.text(table.to_csv(index=False), ".csv")
            for path, table in evidence.tables().items()
        },
        report_tables={
            heading: writer.text(table.to_csv(index=False), ".csv")
            for heading, table in evidence.report_tables().items()
        },
        pages={path: writer.text(page, ".html") for path, page in evidence.pages().items()},
        figures=figures,
        stages=runner.records,
    )
    staged = out / f".{JUDGEMENT_FILE}"
    staged.write_text(judgement.model_dump_json(), encoding="utf-8")
    staged.rename(out / JUDGEMENT_FILE)  # whole or absent
    return judgement


class _Writer:
    """Numbered plain files in the answer's folder."""

    def __init__(self, out: Path) -> None:
        self.out, self.count = out, 0

    def _name(self, suffix: str) -> str:
        self.count += 1
        return f"f{self.count:04d}{suffix}"

    def text(self, text: str, suffix: str) -> str:
        name = self._name(suffix)
        (self.out / name).write_text(text, encoding="utf-8")
        return name

    def png(self, draw: Callable[[], Any]) -> str:
        import matplotlib.pyplot as plt

        from pipelines.tracking.evidence_runs import TIGHT

        fig = draw()
        try:
            buffer = io.BytesIO()
            fig.savefig(buffer, format="png", dpi=100, **TIGHT)
        finally:
            plt.close(fig)
        name = self._name(".png")
        (self.out / name).write_bytes(buffer.getvalue())
        return name


def run_request(request_file: Path, out: Path, log: Callable[[str], None]) -> int:
    """The worker's whole life: 0 with a judgement, 1 with ``error.json`` naming the cause."""
    from pipelines.errors import describe_error, is_expected

    try:
        request = JudgeRequest.model_validate_json(request_file.read_bytes())
        judge(request, out, log)
    except BaseException as exc:  # the parent reports it; nothing of it is half-written
        if not is_expected(exc):
            import traceback

            log(traceback.format_exc())  # the worker's log keeps the traceback for a developer
        write_error(out, describe_error(exc))
        return 1
    return 0
