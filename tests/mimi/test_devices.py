"""`mimi.devices.resolve_device`: what users type for a device, checked in one place."""

from __future__ import annotations

import pytest
import torch

import mimi
from mimi.devices import resolve_device
from mimi.errors import MimiError


def test_names_and_devices_resolve():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    assert resolve_device("auto") == torch.device("cuda" if torch.cuda.is_available() else "cpu")


@pytest.mark.parametrize("name", ["nonsense", "", "gpu0"])
def test_unknown_names_are_one_clear_error(name):
    with pytest.raises(MimiError, match="is not a torch device") as info:
        resolve_device(name)
    assert "\n" not in str(info.value)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
@pytest.mark.parametrize("name", ["cuda", "cuda:1", torch.device("cuda")])
def test_cuda_without_cuda_is_refused(name):
    with pytest.raises(MimiError, match="CUDA is not available"):
        resolve_device(name)


def test_loading_checks_the_device(tiny_model, tmp_path):
    path = mimi.save(tiny_model, tmp_path / "m.safetensors")
    with pytest.raises(MimiError, match="is not a torch device"):
        mimi.load(path, device="nonsense")
