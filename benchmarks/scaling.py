"""Scaling: the CAM audit's peak memory at 1k vs 10k images, and Dask's speed-up on 2 workers.

Memory: ``audit_images`` streams batches and keeps only per-image scores and
the worst few full-resolution maps, so fed by a source that makes (or reads)
each batch on demand its peak should not grow with the audit set. The source
here generates each synthetic lesion batch when it is sliced, so the input
itself costs nothing; an in-memory 10k tensor is measured beside it.

Speed-up: the same audit sharded over a local Dask cluster with one worker
vs two (one torch thread each), the shards merged with ``merge_audits``.

    python -m benchmarks.scaling [--quick]
"""

from __future__ import annotations

import argparse
import json
import time
from functools import lru_cache

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
        images, masks = _chunk(i // CHUNK)
        return (masks if self.masks else images)[i % CHUNK]


@lru_cache(maxsize=2)
def _chunk(number: int) -> tuple[torch.Tensor, torch.Tensor]:
    from xai_checks.synthetic import make_lesions

    batch = make_lesions(CHUNK, ruler="always", seed=number)
    return batch.images, batch.masks


def _labels(n: int) -> torch.Tensor:
    return torch.arange(n) % 2


def audit_once(n: int, in_memory: bool) -> dict[str, float]:
    """In this (fresh) process: one CAM audit of ``n`` images; the peak memory and time."""
    from pipelines.audit import audit_images
    from xai_checks.toy_models import SmallCNN

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


def _shard(bounds: tuple[int, int], n: int):
    from pipelines.audit import audit_images
    from xai_checks.toy_models import SmallCNN

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

    from pipelines.audit import merge_audits, shard_bounds

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
    streamed_small = measured[(small, False)]["peak_mb"]
    streamed_large = measured[(large, False)]["peak_mb"]
    in_memory = measured[(large, True)]["peak_mb"]
    n_dask = 128 if quick else 4096
    one = dask_seconds(n_dask, 1, 4)
    two = dask_seconds(n_dask, 2, 4)
    growth, speedup = streamed_large / streamed_small, one / two
    return [
        Row("scaling", f"CAM audit, {small} images streamed", streamed_small, "MB peak RSS"),
        Row("scaling", f"CAM audit, {large} images streamed", streamed_large, "MB peak RSS",
            growth, f"{small}", "<= 1.2x", growth <= 1.2),
        Row("scaling", f"CAM audit, {large} images in memory", in_memory, "MB peak RSS",
            in_memory / streamed_small, f"{small} streamed"),
        Row("scaling", f"Dask, 1 worker ({n_dask} images, 4 shards)", one, "s"),
        Row("scaling", "Dask, 2 workers", two, "s", speedup, "speed-up", ">= 1.7x", speedup >= 1.7),
    ]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run")
    parser.add_argument("--one", type=int, help="measure one audit of this many images")
    parser.add_argument("--in-memory", action="store_true", help="with --one: a dense tensor")
    args = parser.parse_args()
    if args.one:
        print(json.dumps(audit_once(args.one, args.in_memory)))
        return
    print_rows(run(quick=args.quick), "Scaling")


if __name__ == "__main__":
    main()
