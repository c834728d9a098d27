"""Fixtures of the benchmark suites: the scene of bench/paper_scene.py per batch size."""
from __future__ import annotations

import pytest
import torch

import nl3dmm
from paper_scene import Scene

_SCENES: dict[int, Scene] = {}


@pytest.fixture
def scene(request):
    batch = request.node.callspec.params["batch"]
    if batch not in _SCENES:
        _SCENES[batch] = Scene(batch)
    return _SCENES[batch]


def pytest_benchmark_update_json(config, benchmarks, output_json):
    output_json["nl3dmm"] = {
        "torch_threads": torch.get_num_threads(),
        "kernel_threads": nl3dmm.render.num_threads(),
        "backends": {k: v or "available" for k, v in nl3dmm.available_backends().items()},
    }
