"""Scaling: the audit's peak memory at 1k vs 10k images, and Dask's speed-up on 2 workers.

Memory, twice:

* ``audit_images`` alone, fed by a source that generates each synthetic
  lesion batch when it is sliced, so the input itself costs nothing; an
  in-memory 10k tensor is measured beside it;
* the gate's image stages as the gate runs them: an audit set of PNG files
  and masks on disk, loaded with ``load_audit_set`` (lazy stacks), then the
  CAM stage (Grad-CAM and LayerCAM) and the counterfactual stage.

Both stream batches and keep only per-image scores and the worst few
full-resolution maps, so their peak should not grow with the audit set.

Speed-up: the same audit sharded over a local Dask cluster with one worker
vs two (one torch thread each), the shards merged with ``merge_audits``.

    python -m benchmarks.scaling [--quick]
"""

from __future__ import annotations

import argparse
import csv
import json
import tempfile
import time
from functools import lru_cache
from pathlib import Path

import torch

from benchmarks._common import Row, current_peak_mb, peak_rss_mb, print_rows

__all__ = ["GeneratedLesions", "run"]

CHUNK = 256


class GeneratedLesions:
    """A read-only (N, 3, 64, 64) view whose pixels (or masks) are generated when sliced."""

    def __init__(self, n: int, *, masks: bool = False) -> None:
        self.n, self.masks = n, masks
        self.shape = torch.Size((n, 64, 64) if masks else (n, 3, 64, 64))

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: slice | torch.Tensor) -> torch.Tensor:
        wanted = torch.arange(self.n)[index]
        return torch.stack([self._one(int(i)) for i in wanted.reshape(-1)])

    def _one(self, i: int) -> torch.Tensor:
        images, masks, _ = _chunk(i // CHUNK)
        return (masks if self.masks else images)[i % CHUNK]


@lru_cache(maxsize=2)
def _chunk(number: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    from xai_checks.examples.synthetic import make_lesions

    batch = make_lesions(CHUNK, ruler="always", seed=number)
    return batch.images, batch.masks, batch.labels


def _labels(n: int) -> torch.Tensor:
    return torch.arange(n) % 2


def audit_once(n: int, in_memory: bool) -> dict[str, float]:
    """In this (fresh) process: one CAM audit of ``n`` images; the peak memory and time."""
    from pipelines.stages.cam import audit_images
    from xai_checks.examples.toy_models import SmallCNN

    torch.manual_seed(0)
    model = SmallCNN().eval()
    images, masks = GeneratedLesions(n), GeneratedLesions(n, masks=True)
    if in_memory:
        images, masks = images[:], masks[:]
    baseline = current_peak_mb()
    start = time.perf_counter()
    audit_images(model, images, _labels(n), masks, batch_size=64, progress=False)
    return {
        "baseline_mb": baseline,
        "peak_mb": current_peak_mb(),
        "seconds": time.perf_counter() - start,
    }


def write_lesions(folder: Path, n: int) -> Path:
    """``n`` synthetic lesions as PNGs plus a manifest, one chunk in memory at a time."""
    from PIL import Image

    from xai_checks.examples.synthetic import CLASS_NAMES

    for sub in ("images", "masks"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    manifest = folder / "manifest.csv"
    with manifest.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", "label", "spurious_mask"])
        for i in range(n):
            images, masks, labels = _chunk(i // CHUNK)
            pixels = (images[i % CHUNK] * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
            Image.fromarray(pixels).save(folder / f"images/{i:05d}.png")
            Image.fromarray(masks[i % CHUNK].to(torch.uint8).numpy() * 255).save(
                folder / f"masks/{i:05d}.png"
            )
            label = CLASS_NAMES[int(labels[i % CHUNK])]
            writer.writerow([f"images/{i:05d}.png", label, f"masks/{i:05d}.png"])
    return manifest


def stages_once(manifest: str) -> dict[str, float]:
    """In this (fresh) process: the gate's image stages on an audit set on disk."""
    from pipelines.audit_sets.images import load_audit_set
    from pipelines.policy import AuditRules
    from pipelines.stages.assembly import cam_stage, counterfactual_stage
    from pipelines.tracking import LoadedModel
    from xai_checks.examples.synthetic import CLASS_NAMES
    from xai_checks.examples.toy_models import SmallCNN

    torch.manual_seed(0)
    model = LoadedModel(SmallCNN().eval(), "bench", "1", "bench", tuple(CLASS_NAMES), None)
    rules = AuditRules.from_options(batch_size=64, sanity=False)
    baseline = current_peak_mb()
    start = time.perf_counter()
    data = load_audit_set(manifest, class_names=model.class_names)
    cam_stage(model, data, rules)
    counterfactual_stage(model, data, rules)
    return {
        "baseline_mb": baseline,
        "peak_mb": current_peak_mb(),
        "seconds": time.perf_counter() - start,
    }


def _shard(bounds: tuple[int, int], n: int):
    from pipelines.stages.cam import audit_images
    from xai_checks.examples.toy_models import SmallCNN

    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = SmallCNN().eval()
    start, stop = bounds
    images, masks = GeneratedLesions(n), GeneratedLesions(n, masks=True)
    return audit_images(
        model,
        images[start:stop],
        _labels(n)[start:stop],
        masks[start:stop],
        image_ids=[str(i) for i in range(start, stop)],
        batch_size=64,
        progress=False,
    )


def dask_seconds(n: int, workers: int, shards: int) -> float:
    """Wall time of the sharded audit on a fresh local cluster (its start not counted)."""
    from distributed import Client, LocalCluster

    from pipelines.stages.cam import merge_audits, shard_bounds

    with (
        LocalCluster(
            n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
    ):
        client.run(torch.set_num_threads, 1)
        client.submit(_shard, (0, 64), 64).result()  # warm: imports and first call
        start = time.perf_counter()
        bounds = shard_bounds(n, shards, 64)
        parts = client.gather(client.map(_shard, bounds, n=n, pure=False))
        merge_audits(parts)
        return time.perf_counter() - start


def run(*, quick: bool = False) -> list[Row]:
    small, large = (64, 640) if quick else (1000, 10000)
    measured = {
        (n, memory): peak_rss_mb(
            "benchmarks.scaling", "--one", str(n), *(["--in-memory"] if memory else [])
        )
        for n, memory in ((small, False), (large, False), (large, True))
    }
    with tempfile.TemporaryDirectory(prefix="xai-gate-scaling-") as tmp:
        stages = {
            n: peak_rss_mb(
                "benchmarks.scaling", "--stages", str(write_lesions(Path(tmp) / str(n), n))
            )["peak_mb"]
            for n in (small, large)
        }
    streamed_small = measured[(small, False)]["peak_mb"]
    streamed_large = measured[(large, False)]["peak_mb"]
    in_memory = measured[(large, True)]["peak_mb"]
    n_dask = 128 if quick else 4096
    one = dask_seconds(n_dask, 1, 4)
    two = dask_seconds(n_dask, 2, 4)
    growth, speedup = streamed_large / streamed_small, one / two
    stage_growth = stages[large] / stages[small]
    return [
        Row("scaling", f"CAM audit, {small} images streamed", streamed_small, "MB peak RSS"),
        Row("scaling", f"CAM audit, {large} images streamed", streamed_large, "MB peak RSS",
            growth, f"{small}", "<= 1.2x", growth <= 1.2),
        Row("scaling", f"CAM audit, {large} images in memory", in_memory, "MB peak RSS",
            in_memory / streamed_small, f"{small} streamed"),
        Row("scaling", f"gate image stages, {small} PNGs on disk", stages[small], "MB peak RSS"),
        Row("scaling", f"gate image stages, {large} PNGs on disk", stages[large], "MB peak RSS",
            stage_growth, f"{small}", "<= 1.2x", stage_growth <= 1.2),
        Row("scaling", f"Dask, 1 worker ({n_dask} images, 4 shards)", one, "s"),
        Row("scaling", "Dask, 2 workers", two, "s", speedup, "speed-up", ">= 1.7x", speedup >= 1.7),
    ]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run")
    parser.add_argument("--one", type=int, help="measure one audit of this many images")
    parser.add_argument("--in-memory", action="store_true", help="with --one: a dense tensor")
    parser.add_argument("--stages", help="measure the gate's image stages on this manifest")
    args = parser.parse_args()
    if args.stages:
        print(json.dumps(stages_once(args.stages)))
        return
    if args.one:
        print(json.dumps(audit_once(args.one, args.in_memory)))
        return
    print_rows(run(quick=args.quick), "Scaling")


if __name__ == "__main__":
    main()
