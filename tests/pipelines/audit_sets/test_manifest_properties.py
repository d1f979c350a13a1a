"""The manifest parsers never crash on generated input: a clear AuditSetError or a loaded set."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipelines.audit_sets.images import AuditSetError, load_audit_set
from pipelines.audit_sets.texts import load_text_audit_set

CELL = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=12)
HEADERS = st.sampled_from(
    [
        "image,label,spurious_mask",
        "image,label,spurious_box",
        "text,label,spurious_tokens",
        "id,text,label,spurious_tokens",
        "image,label",
        "",
    ]
)


@st.composite
def csv_files(draw) -> bytes:
    header = draw(HEADERS)
    rows = draw(st.lists(st.lists(CELL, min_size=0, max_size=4), max_size=4))
    body = "\n".join(",".join(cell.replace("\n", " ") for cell in row) for row in rows)
    text = f"{header}\n{body}\n" if header else body
    if draw(st.booleans()):
        return text.encode("utf-8")
    return text.encode("utf-8") + draw(st.binary(max_size=8))  # maybe not UTF-8 at all


@settings(
    max_examples=int(os.environ.get("XAI_GATE_FUZZ_EXAMPLES", "25")),
    deadline=None,
    derandomize="XAI_GATE_FUZZ_EXAMPLES" not in os.environ,  # CI: the same cases every run
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(csv_files())
def test_any_csv_gives_a_loaded_set_or_an_audit_set_error(content):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "manifest.csv"
        path.write_bytes(content)
        for load in (load_audit_set, load_text_audit_set):
            try:
                load(path, class_names=("benign", "malignant"))
            except AuditSetError as error:
                assert "manifest.csv" in str(error) or "audit set" in str(error)
