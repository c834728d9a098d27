"""One device resolution for training, evaluation, reconstruction and the loader."""
from __future__ import annotations

import pytest
import torch

from nl3dmm.runtime import resolve_device


def test_auto_and_cpu():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected and resolve_device(None).type == expected
    assert resolve_device("cpu") == torch.device("cpu") == resolve_device(torch.device("cpu"))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message of a CPU-only torch")
@pytest.mark.parametrize("name", ["cuda", "cuda:1"])
def test_cuda_without_a_gpu_is_a_clear_error(name):
    with pytest.raises(ValueError, match="sees no CUDA GPU"):
        resolve_device(name)


@pytest.mark.parametrize("name", ["tpu", "npu", "", "cuda:x"])
def test_unknown_devices_are_named(name):
    with pytest.raises(ValueError, match="device"):
        resolve_device(name)


def test_wrong_type():
    with pytest.raises(TypeError, match="device must be"):
        resolve_device(3)


@pytest.mark.gpu
def test_bare_cuda_takes_the_local_rank(monkeypatch):
    monkeypatch.setenv("LOCAL_RANK", str(torch.cuda.device_count() - 1))
    assert resolve_device("cuda") == torch.device("cuda", torch.cuda.device_count() - 1)
    assert resolve_device("cuda:0") == torch.device("cuda", 0)
