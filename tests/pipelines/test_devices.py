"""Where the gate computes: auto, cpu, cuda[:N], mps; a device that is not here is refused."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError

from pipelines.devices import DeviceError, on_device, resolve_device, worker_device
from pipelines.policy import GatePolicy
from pipelines.tracking.models import LoadedModel

CUDA = torch.cuda.is_available()


def test_auto_is_cuda_when_available_else_the_cpu():
    assert resolve_device("auto") == torch.device("cuda" if CUDA else "cpu")
    assert resolve_device("cpu") == torch.device("cpu")


@pytest.mark.skipif(CUDA, reason="checks the refusal on a machine without CUDA")
def test_cuda_on_a_machine_without_it_is_refused_by_name():
    with pytest.raises(DeviceError, match="device 'cuda:1': CUDA is not available"):
        resolve_device("cuda:1")


@pytest.mark.skipif(not CUDA, reason="needs a CUDA device")
def test_a_cuda_index_beyond_the_machine_is_refused():
    with pytest.raises(DeviceError, match="CUDA device"):
        resolve_device(f"cuda:{torch.cuda.device_count()}")


def test_the_policy_key_takes_only_device_names_and_does_not_change_the_hash():
    base = GatePolicy(model="m", audit_set="a.csv")
    assert base.device == "auto"
    for spec in ("cpu", "cuda", "cuda:3", "mps"):
        assert GatePolicy(model="m", audit_set="a.csv", device=spec).digest() == base.digest()
    for bad in ("gpu", "cuda:x", "CPU"):
        with pytest.raises(ValidationError):
            GatePolicy(model="m", audit_set="a.csv", device=bad)


def test_the_model_moves_once_and_only_when_it_is_elsewhere():
    loaded = LoadedModel(torch.nn.Linear(2, 2), "m", "1", "models:/m/1", None, None)
    assert on_device(loaded, "cpu") is loaded
    assert on_device(loaded, "auto").module.weight.device == resolve_device("auto")


def test_dask_workers_each_take_their_own_gpu_when_no_index_is_given():
    """Worker i of a cluster takes cuda:(i mod GPUs) for ``auto`` and ``cuda``; a device the
    user named with an index, the CPU and MPS are taken as they are."""
    assert [worker_device("auto", worker=i, gpus=2) for i in range(4)] == [
        "cuda:0",
        "cuda:1",
        "cuda:0",
        "cuda:1",
    ]
    assert worker_device("cuda", worker=5, gpus=4) == "cuda:1"
    assert worker_device("cuda:3", worker=1, gpus=4) == "cuda:3"
    assert worker_device("cpu", worker=1, gpus=4) == "cpu"
    assert worker_device("mps", worker=1, gpus=4) == "mps"
    assert worker_device("auto", worker=1, gpus=0) == "auto"  # no GPU: auto means the CPU
    assert worker_device("auto", worker=None, gpus=2) == "auto"  # not a worker


def test_outside_a_dask_worker_the_device_is_the_one_asked_for():
    assert worker_device("auto") == "auto"
    assert worker_device("cuda") == "cuda"


def test_a_real_dask_worker_knows_its_number():
    """A local cluster of two single-thread workers: each reads its own number, so on a
    two-GPU machine they would take cuda:0 and cuda:1."""
    from distributed import Client, LocalCluster

    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
    ):
        workers = sorted(client.scheduler_info()["workers"])
        picked = {
            client.submit(worker_device, "cuda", gpus=2, workers=[address], pure=False).result()
            for address in workers
        }
    assert picked == {"cuda:0", "cuda:1"}
