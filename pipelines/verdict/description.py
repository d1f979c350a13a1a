"""The verdict where reviewers look: the model version's description.

MLflow's version table cuts tags off after their names, and the evidence run
is reached through a run id in a tag. The description is shown in full on
the version page and its first line in the registry's lists, so the gate
writes it there: one line first (the verdict, the failed checks with their
values and bounds, links to the evidence run and its ``report.html``), then
any warnings and the last failed attempt.

A person's description is never erased. The gate's part ends with one
marker line; what stands below it is kept as it is, and a description
written before the first gate (no marker) is moved below it whole. The
part above the marker is rebuilt from the version's ``xai_gate.*`` tags on
every write, so it always says what the tags say.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from pipelines.report.markdown import link_target, markdown_text
from pipelines.verdict.signing import TAG_RUN_ID, TAG_VERDICT
from pipelines.verdict.tags import TAG_LAST_ERROR, TAG_REASON, TAG_WARNINGS

if TYPE_CHECKING:
    from mlflow import MlflowClient

__all__ = ["KEPT_BELOW", "gate_part", "merged_description", "person_part", "refresh_description"]

KEPT_BELOW = "*xai-gate rewrites the lines above on every gate; anything below this line is kept.*"
"""The marker between the gate's part of a description and a person's."""
_DESCRIPTION_LIMIT = 4900
"""The gate's part is cut to this many characters: MLflow stores up to 5000 per tag and keeps
descriptions in a text column, but a first line longer than a screen helps nobody."""


def gate_part(tags: Mapping[str, str], *, run_page: str | None) -> str:
    """The description's gate-written lines, from the version's ``xai_gate.*`` tags.

    ``run_page`` is the evidence run's address in the MLflow UI
    (``#/experiments/…``), None without a run.
    """
    verdict = tags.get(TAG_VERDICT, "")
    reason = tags.get(TAG_REASON, "")
    headline = f"xai-gate: {markdown_text(verdict or 'not gated')}"
    if reason and verdict != "passed":
        headline += f" ({markdown_text(reason)})"
    elif verdict == "passed":
        headline += " (every check within its bound)"
    if run_page:
        target = link_target(run_page)
        headline += (
            f" · [evidence run]({target}) · [report.html]({target}/artifacts/xai/report.html)"
        )
    lines = [headline[:_DESCRIPTION_LIMIT]]
    if tags.get(TAG_WARNINGS):
        lines.append(f"Warnings (not blocking): {markdown_text(tags[TAG_WARNINGS])}")
    if tags.get(TAG_LAST_ERROR):
        lines.append(
            f"Last attempt failed, the verdict above stands: {markdown_text(tags[TAG_LAST_ERROR])}"
        )
    return "\n\n".join(lines)


def person_part(description: str | None) -> str:
    """What a person wrote: everything below the marker, or all of a description without it."""
    text = description or ""
    if KEPT_BELOW in text:
        return text.split(KEPT_BELOW, 1)[1].strip("\n")
    return text.strip("\n")


def merged_description(existing: str | None, ours: str) -> str:
    """The gate's lines, the marker, then the person's text unchanged."""
    theirs = person_part(existing)
    return f"{ours}\n\n{KEPT_BELOW}" + (f"\n\n{theirs}" if theirs else "")


def refresh_description(client: MlflowClient, name: str, version: str) -> None:
    """Rewrite the gate's part of the version's description from its current tags."""
    current = client.get_model_version(name, version)
    tags = dict(current.tags)
    page = _run_page(client, tags.get(TAG_RUN_ID, ""))
    description = merged_description(current.description, gate_part(tags, run_page=page))
    if description != (current.description or ""):
        client.update_model_version(name, version, description=description)


def _run_page(client: MlflowClient, run_id: str) -> str | None:
    """The evidence run's page as the MLflow UI routes it (``#/experiments/E/runs/R``).

    Relative, so the link works wherever the store is served: the description
    is read in the UI of the server that holds it, under whatever host name.
    """
    from mlflow.exceptions import MlflowException

    if not run_id:
        return None
    try:
        experiment_id = client.get_run(run_id).info.experiment_id
    except MlflowException:  # the run was deleted: the verdict stands without its link
        return None
    return f"#/experiments/{experiment_id}/runs/{run_id}"
