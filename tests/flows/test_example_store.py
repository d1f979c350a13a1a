"""The committed example store opens in a real MLflow UI, in real headless Chromium."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from mlflow import MlflowClient

from flows.example import mlflow_server

pytestmark = pytest.mark.slow

EXAMPLE = Path(__file__).parents[2] / "mlruns_example"


def _gated_run(client: MlflowClient, model: str, version: str) -> tuple[str, str]:
    experiment = client.get_experiment_by_name("xai-gate")
    (run,) = client.search_runs(
        [experiment.experiment_id],
        filter_string=(
            f"tags.`xai_gate.model_name` = '{model}' "
            f"and tags.`xai_gate.model_version` = '{version}'"
        ),
    )
    return experiment.experiment_id, run.info.run_id


def test_example_store_is_small_and_holds_the_demo_verdicts(tmp_path):
    size = sum(p.stat().st_size for p in EXAMPLE.rglob("*") if p.is_file())
    assert size < 7_000_000
    store = tmp_path / "store"
    shutil.copytree(EXAMPLE, store)
    with mlflow_server(store) as uri:
        client = MlflowClient(uri, registry_uri=uri)
        for model in ("lesion-classifier", "review-classifier", "lesion-classifier-unlabelled"):
            tags = {v: client.get_model_version(model, v).tags["xai_gate.verdict"] for v in "12"}
            assert tags == {"1": "blocked", "2": "passed"}
            assert str(client.get_model_version_by_alias(model, "champion").version) == "2"


def test_heatmap_and_report_render_in_the_mlflow_ui(tmp_path, chromium):
    store = tmp_path / "store"
    shutil.copytree(EXAMPLE, store)
    with mlflow_server(store) as uri:
        experiment_id, run_id = _gated_run(MlflowClient(uri), "lesion-classifier", "1")
        page = chromium.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(
            f"{uri}/#/experiments/{experiment_id}/runs/{run_id}/artifacts/xai/gradcam_overlays.png"
        )
        # The UI fetches the artifact and shows it from a blob: URL.
        page.get_by_text("xai/gradcam_overlays.png").first.wait_for(timeout=60_000)
        image = page.locator("img[src^='blob:']").first
        image.wait_for(state="visible", timeout=60_000)
        page.wait_for_function(
            "img => img.complete && img.naturalWidth > 0", arg=image.element_handle()
        )
        assert image.evaluate("img => img.naturalWidth") > 500
        assert page.get_by_text("report.html", exact=True).first.is_visible()
        page.screenshot(path=str(tmp_path / "mlflow-run.png"))
    assert (tmp_path / "mlflow-run.png").stat().st_size > 10_000


def test_the_verdict_reads_in_the_registry_pages_without_knowing_the_tool(tmp_path, chromium):
    """A reviewer's path: the model's version list, the version page, then the evidence run
    through the description's link; each shows the verdict and its key number."""
    store = tmp_path / "store"
    shutil.copytree(EXAMPLE, store)
    with mlflow_server(store) as uri:
        client = MlflowClient(uri, registry_uri=uri)
        version = client.get_model_version("lesion-classifier", "1")
        run = client.get_run(version.tags["xai_gate.run_id"])
        mass = run.data.metrics["gradcam.spurious_mass"]
        page = chromium.new_page(viewport={"width": 1600, "height": 1000})
        page.goto(f"{uri}/#/models/lesion-classifier")
        page.get_by_text("xai-gate: blocked").first.wait_for(timeout=60_000)
        page.screenshot(path=str(tmp_path / "versions.png"))

        page.goto(f"{uri}/#/models/lesion-classifier/versions/1")
        page.get_by_text("xai-gate: blocked").first.wait_for(timeout=60_000)
        assert page.get_by_text("spurious_mass").first.is_visible()
        page.screenshot(path=str(tmp_path / "version.png"), full_page=True)

        link = page.get_by_role("link", name="evidence run").first
        assert link.get_attribute("href") == (
            f"#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}"
        )
        with page.context.expect_page() as opened:  # MLflow opens it in a new tab
            link.click()
        evidence = opened.value
        evidence.get_by_text("gradcam.spurious_mass").first.wait_for(timeout=60_000)
        assert evidence.get_by_text(str(round(mass, 3))[:5]).first.is_visible()
        evidence.screenshot(path=str(tmp_path / "run.png"), full_page=True)
    for shot in ("versions.png", "version.png", "run.png"):
        assert (tmp_path / shot).stat().st_size > 10_000
