"""Shared fixtures: fresh random seeds, mesh generators, the shared real data, markers.

Random inputs are fresh on every run (the seed is printed, so a failure can be replayed
with NL3DMM_TEST_SEED=<seed>). Slow tests run with --run-slow; GPU tests skip with a visible
reason where no CUDA device is present.
"""
from __future__ import annotations

import os
import secrets
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


def pytest_addoption(parser):
    parser.addoption("--run-slow", action="store_true", help="also run tests marked slow")


def pytest_collection_modifyitems(config, items):
    if not config.getoption("--run-slow"):
        skip = pytest.mark.skip(reason="slow: run with --run-slow")
        for item in items:
            if "slow" in item.keywords:
                item.add_marker(skip)
    if not torch.cuda.is_available():
        skip = pytest.mark.skip(reason="no CUDA device on this machine")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip)


@pytest.fixture
def seed() -> int:
    value = int(os.environ.get("NL3DMM_TEST_SEED", secrets.randbits(31)))
    torch.manual_seed(value)
    print(f"random seed: NL3DMM_TEST_SEED={value}")
    return value


def shared_data_dir() -> Path | None:
    env = os.environ.get("NL3DMM_SHARED_DATA")
    for candidate in ([Path(env)] if env else []) + [REPO.parent / "shared" / "data"]:
        if candidate.is_dir():
            return candidate
    return None


@pytest.fixture(scope="session")
def shared_data() -> Path:
    path = shared_data_dir()
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("../shared/data is missing: CI must provide it beside the checkout")
        pytest.skip("shared/data not found beside the repository (set NL3DMM_SHARED_DATA)")
    return path


def write_untrained_checkpoint(path: Path, network: str = "cvpr18", face_model: str = "surrey") -> Path:
    """A checkpoint in `nl3dmm train`'s format holding an untrained network (no training: fast)."""
    from nl3dmm.face.facemodel import load_face_model
    from nl3dmm.model.networks import build_model
    from nl3dmm.training.config import make_config

    torch.manual_seed(0)
    model = build_model(network, load_face_model(face_model))
    config = vars(make_config("tiny", model=network, face_model=face_model))
    torch.save({"step": 0, "stage": "pretrain", "model": model.state_dict(), "discriminator": None,
                "optimizers": {}, "history": [], "rng": {}, "config": config}, path)
    return path


@pytest.fixture(scope="session")
def untrained_checkpoint(tmp_path_factory) -> Path:
    return write_untrained_checkpoint(tmp_path_factory.mktemp("ckpt") / "checkpoint-00000000.pt")


@pytest.fixture(scope="session")
def paper():
    """The authors' 53,215-vertex mesh with its statistics (bundled copy)."""
    from nl3dmm.face.facemodel import load_paper_mesh
    return load_paper_mesh()


@pytest.fixture(scope="session")
def sfm(paper):
    """The Surrey Face Model (3,448 vertices), camera statistics carried over from `paper`."""
    from nl3dmm.face.facemodel import load_surrey_model
    return load_surrey_model(reference=paper)
