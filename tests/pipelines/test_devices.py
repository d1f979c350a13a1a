"""Where the gate computes: auto, cpu, cuda[:N], mps; a device that is not here is refused."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError

from pipelines.devices import DeviceError, on_device, resolve_device
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
