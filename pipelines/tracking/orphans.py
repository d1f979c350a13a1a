"""Evidence runs left ``RUNNING`` by a gate that died: marked ``FAILED`` by the next gate."""

from __future__ import annotations

from pipelines.tracking.config import EXPERIMENT, TAG_MODEL_NAME

__all__ = ["close_orphaned_runs"]


def close_orphaned_runs(model_name: str, model_version: str) -> list[str]:
    """Mark this version's evidence runs still ``RUNNING`` as ``FAILED``; return their ids.

    Call it holding the version's gate lock: then no live gate owns such a run,
    and it was left by a gate that died (killed, or its server went away).
    """
    from mlflow import MlflowClient

    client = MlflowClient()
    experiment = client.get_experiment_by_name(EXPERIMENT)
    if experiment is None:
        return []
    runs = client.search_runs(
        [experiment.experiment_id],
        filter_string=(
            f"tags.`xai_gate.model_version` = '{int(model_version)}' "
            "and attributes.status = 'RUNNING'"
        ),
    )
    orphans = [r.info.run_id for r in runs if r.data.tags.get(TAG_MODEL_NAME) == model_name]
    for run_id in orphans:
        client.set_tag(run_id, "xai_gate.orphaned", "left unfinished by a gate that died")
        client.set_terminated(run_id, status="FAILED")
    return orphans
