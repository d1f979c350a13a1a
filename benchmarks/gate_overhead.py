"""Gate overhead: the whole ``xai-gate gate`` vs the pure Grad-CAM compute on the same images.

1,000 synthetic 64x64 lesions and the small CNN, the CAM audit only
(counterfactual and sanity off, so both sides compute the same maps). The
gate adds loading the model from MLflow, reading and validating the audit set,
GX validation, figures, the report and logging. Its fixed start-up (importing
torch, MLflow, Prefect and GX, and starting Prefect's temporary server) is
measured on its own and reported apart (in a real gate the server starts while
the imports run, so the two overlap). The gate's variable part is timed stage by
stage in one process, and each stage is reported.

    python -m benchmarks.gate_overhead [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks._common import REPO, STAGE_CLOCK, Row, print_rows

__all__ = ["run"]

_IMPORTS = "import torch, mlflow, prefect, great_expectations"
_PREFECT_START = (
    "from prefect import flow\n"
    "import time\n"
    "start = time.perf_counter()\n"
    "flow(lambda: 1)()\n"
    "print(time.perf_counter() - start)\n"
)


def _env(workdir: Path) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "PREFECT_HOME": str(workdir / "prefect")}
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{workdir / 'mlflow.db'}"
    env.pop("PREFECT_API_URL", None)  # the CLI's default: an ephemeral server
    return env


def _timed(command: list[str], workdir: Path, ok: tuple[int, ...] = (0,)) -> tuple[float, str]:
    start = time.perf_counter()
    done = subprocess.run(
        command, cwd=workdir, env=_env(workdir), capture_output=True, text=True, check=False
    )
    seconds = time.perf_counter() - start
    if done.returncode not in ok:
        raise RuntimeError(f"{command} failed:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}")
    return seconds, done.stdout


def _prepare(workdir: Path, n: int) -> Path:
    """Register a small CNN and write ``n`` lesions and a CAM-only policy; return the policy."""
    import mlflow
    import torch

    from pipelines.audit_sets.images import write_audit_set
    from pipelines.policy import GatePolicy, write_policy
    from xai_checks.examples.synthetic import CLASS_NAMES, make_lesions
    from xai_checks.examples.toy_models import SmallCNN

    mlflow.set_tracking_uri(f"sqlite:///{workdir / 'mlflow.db'}")
    mlflow.set_experiment("bench")
    torch.manual_seed(0)
    with mlflow.start_run():
        mlflow.pytorch.log_model(
            SmallCNN().eval(),
            name="model",
            registered_model_name="bench-model",
            serialization_format="pickle",
            metadata={"class_names": list(CLASS_NAMES)},
            pip_requirements=["torch"],
        )
    batch = make_lesions(n, ruler="always", seed=0)
    write_audit_set(workdir / "audit", batch.images, batch.labels, batch.masks, CLASS_NAMES)
    policy = GatePolicy.from_options(
        model="bench-model",
        audit_set=workdir / "audit" / "manifest.csv",
        cam_methods="gradcam",
        counterfactual=False,
        sanity=False,
    )
    return write_policy(policy, workdir / "policy.yaml")


def _compute_seconds(workdir: Path) -> float:
    """Pure Grad-CAM over the audit images (already in memory), batch 32, in a fresh process."""
    code = (
        "import time, mlflow\n"
        "from pipelines.audit_sets.images import load_audit_set\n"
        "from xai_checks import GradCAM\n"
        "from xai_checks.examples.synthetic import CLASS_NAMES\n"
        f"data = load_audit_set({str(workdir / 'audit' / 'manifest.csv')!r}, "
        "class_names=CLASS_NAMES)\n"
        "images = data.images[:]  # decoded up front: the anchor is the compute alone\n"
        "model = mlflow.pytorch.load_model('models:/bench-model/1').eval()\n"
        "cam = GradCAM(model)\n"
        "cam(images[:2])\n"
        "start = time.perf_counter()\n"
        "for i in range(0, len(images), 32):\n"
        "    cam(images[i:i + 32])\n"
        "print(time.perf_counter() - start)\n"
    )
    _, out = _timed([sys.executable, "-c", code], workdir)
    return float(out.strip().splitlines()[-1])


_STAGES = (
    STAGE_CLOCK
    + """
from pipelines.audit_sets.images import load_audit_set
from pipelines.stages.assembly import cam_stage
from pipelines.evidence.images import ImageEvidence
from pipelines.policy import load_policy
from pipelines.tracking import configure_tracking, load_model_version, log_gate_evidence
lap("imports")
policy = load_policy(POLICY)
configure_tracking()
model = load_model_version("bench-model", "1")
lap("load the model from MLflow")
data = load_audit_set(policy.audit_set, class_names=model.class_names)
lap("read and validate the audit set (GX)")
rules = policy.rules()
audit = cam_stage(model, data, rules)
lap("CAM audit (decodes the PNGs as it streams)")
evidence = ImageEvidence(audit, None, None, data.images, data.class_names, data.masks)
validation = evidence.validate(rules)
lap("GX validation of the scores")
log_gate_evidence(
    model_name="bench-model", model_version="1", params={}, metrics=evidence.metrics(),
    series=evidence.series(), tables=evidence.tables(), documents=validation.documents(),
    figures=evidence.figures(rules, "bench"), pages=evidence.pages(),
)
lap("figures and MLflow logging")
print(json.dumps(seconds))
"""
)


def _stage_seconds(workdir: Path, policy: Path) -> dict[str, float]:
    """Where the gate's variable time goes: its stages timed in one fresh process."""
    code = f"POLICY = {str(policy)!r}\n" + _STAGES
    _, out = _timed([sys.executable, "-c", code], workdir)
    return json.loads(out.strip().splitlines()[-1])


def run(*, quick: bool = False) -> list[Row]:
    n = 50 if quick else 1000
    with tempfile.TemporaryDirectory(prefix="xai-gate-bench-") as folder:
        workdir = Path(folder)
        policy = _prepare(workdir, n)
        compute = _compute_seconds(workdir)
        imports, _ = _timed([sys.executable, "-c", _IMPORTS], workdir)
        _, out = _timed([sys.executable, "-c", _PREFECT_START], workdir)
        prefect_start = float(out.strip().splitlines()[-1])
        gate, _ = _timed(
            [sys.executable, "-m", "flows.cli", "gate", "--policy", str(policy), "--version", "1"],
            workdir,
            ok=(0, 1, 3),  # passed, blocked or inconclusive (an untrained model): finished gates
        )
        stages = _stage_seconds(workdir, policy)
    fixed = imports + prefect_start
    variable = sum(value for name, value in stages.items() if name != "imports")
    return [
        Row("gate_overhead", f"pure Grad-CAM compute ({n} images)", compute, "s"),
        Row("gate_overhead", "fixed start-up: imports", imports, "s"),
        Row("gate_overhead", "fixed start-up: Prefect temporary server", prefect_start, "s"),
        Row("gate_overhead", "fixed start-up, total", fixed, "s", None, "", "<= 15 s",
            fixed <= 15),
        Row("gate_overhead", "whole gate (xai-gate gate)", gate, "s"),
        Row("gate_overhead", "the gate's stages, timed in one process", variable, "s",
            variable / compute, "compute", "<= 1.25x compute", variable / compute <= 1.25),
    ] + [
        Row("gate_overhead", f"  stage: {name}", value, "s")
        for name, value in stages.items()
        if name != "imports"
    ]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run")
    print_rows(run(quick=parser.parse_args().quick), "Gate overhead")


if __name__ == "__main__":
    main()
