"""The judging worker's answer is read as a stranger's: every way to bend it is refused."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from pipelines.judging.contract import (
    JUDGEMENT_FILE,
    JudgingError,
    read_error,
    read_judgement,
    write_error,
)

MODEL_DIGEST = "a" * 64
AUDIT_DIGEST = "b" * 64
PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 16


def _answer(folder: Path, **changes: object) -> Path:
    (folder / "f0001.csv").write_text("image_id,score\n0,0.5\n")
    (folder / "f0002.json").write_text(json.dumps({"success": True}))
    (folder / "f0003.png").write_bytes(PNG)
    judgement = {
        "model_digest": MODEL_DIGEST,
        "audit_set_digest": AUDIT_DIGEST,
        "modality": "image",
        "evidence_lines": ["cam"],
        "regions": True,
        "summary": {"n_inputs": 1, "target_layer": "features.3"},
        "metrics": {"cam.mass": 0.25, "sanity.final_spearman": float("nan")},
        "scores": {"success": False, "failures": ["mass too high"], "document": "f0002.json"},
        "tables": {"xai/scores.csv": "f0001.csv"},
        "figures": {"xai/cam/overlay.png": "f0003.png"},
    } | changes
    (folder / JUDGEMENT_FILE).write_text(json.dumps(judgement))
    return folder


def _read(folder: Path):
    return read_judgement(
        folder, model_digest=MODEL_DIGEST, audit_set_digest=AUDIT_DIGEST, what="models:/m/1"
    )


def test_a_well_formed_answer_reads_back_as_written(tmp_path):
    judged = _read(_answer(tmp_path))
    assert judged.validation.scores.success is False
    assert judged.validation.scores.failures == ["mass too high"]
    assert judged.documents == {"xai/validation.json": {"success": True}}
    assert judged.tables == {"xai/scores.csv": "image_id,score\n0,0.5\n"}
    assert judged.figures == {"xai/cam/overlay.png": PNG}
    assert judged.summary == {"n_inputs": 1, "target_layer": "features.3"}
    assert judged.metrics()["cam.mass"] == 0.25


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"model_digest": "c" * 64}, "judged other bytes than models:/m/1"),
        ({"audit_set_digest": "c" * 64}, "another audit set"),
        ({"regions": 1}, "regions"),  # no coercion: 1 is not true
        ({"metrics": {"cam.mass": True}}, "metrics"),
        ({"metrics": {"cam.mass": "0.1"}}, "metrics"),
        ({"metrics": {"cam.mass": float("inf")}}, "infinite"),
        ({"verdict": "passed"}, "Extra inputs are not permitted"),  # the worker decides nothing
        ({"tables": {"../../etc/scores.csv": "f0001.csv"}}, "outside xai/"),
        ({"tables": {"xai/scores.csv": "../f0001.csv"}}, "outside its folder"),
        ({"tables": {"xai/scores.csv": "missing.csv"}}, "left no plain file missing.csv"),
        ({"figures": {"xai/a.png": "f0001.csv"}}, "is not a PNG"),
        ({"scores": {"success": "yes"}}, "scores.success"),
        ({"scores": {"success": True, "failures": ["mass"]}}, "says it passed and names failures"),
    ],
)
def test_a_bent_answer_is_refused_naming_what_is_wrong(tmp_path, changes, message):
    with pytest.raises(JudgingError, match=message.replace("(", r"\(")):
        _read(_answer(tmp_path, **changes))


def test_a_linked_file_is_not_read(tmp_path):
    secret = tmp_path.parent / f"{tmp_path.name}-outside.txt"
    secret.write_text("not the worker's to hand over")
    folder = _answer(tmp_path)
    (folder / "f0001.csv").unlink()
    os.symlink(secret, folder / "f0001.csv")
    with pytest.raises(JudgingError, match=r"left no plain file f0001\.csv"):
        _read(folder)


def test_a_missing_or_garbled_judgement_is_an_error_not_a_verdict(tmp_path):
    with pytest.raises(JudgingError, match=r"left no plain file judgement\.json"):
        _read(tmp_path)
    (tmp_path / JUDGEMENT_FILE).write_text("{not json")
    with pytest.raises(JudgingError, match="malformed"):
        _read(tmp_path)


def test_the_workers_error_is_one_line(tmp_path):
    write_error(tmp_path, "cannot load models:/m/1:\n  bad\tMLmodel")
    assert read_error(tmp_path) == "cannot load models:/m/1: bad MLmodel"
    (tmp_path / "error.json").write_text("[1, 2]")
    assert read_error(tmp_path) is None


def test_an_undefined_metric_written_by_the_worker_reads_back_as_nan(tmp_path):
    """The worker writes with pydantic: NaN must stay NaN (JSON null would be refused)."""
    import math

    from pipelines.judging.contract import Judgement

    judgement = Judgement(
        model_digest=MODEL_DIGEST,
        audit_set_digest=AUDIT_DIGEST,
        modality="image",
        evidence_lines=("cam",),
        regions=True,
        summary={"n_inputs": 1},
        metrics={"sanity.final_spearman": float("nan"), "cam.mass": 0.5},
        series={"sanity.spearman": [1.0, float("nan")]},
        scores={"success": True},
    )
    (tmp_path / JUDGEMENT_FILE).write_text(judgement.model_dump_json())
    judged = _read(tmp_path)
    assert math.isnan(judged.metrics()["sanity.final_spearman"])
    assert math.isnan(judged.series()["sanity.spearman"][1])
