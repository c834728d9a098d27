"""Training throughput of the full cvpr18 configuration (224 x 224 input, the paper mesh with
Q = 53,215 vertices): one optimiser step of each stage, images per second = batch / time.

    pytest bench/test_bench_train.py --benchmark-json=bench/results/<name>.json

The CPU numbers are what a developer machine does; GPU numbers (issue 6) come from the same
file on a lent device.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from nl3dmm.model.adversarial import PatchDiscriminator
from nl3dmm.face.facemodel import load_face_model
from nl3dmm.model.networks import build_model
from nl3dmm.training.batches import to_device
from nl3dmm.training.config import TrainConfig
from nl3dmm.training.objectives import FinetuneObjective, pretrain_loss

BATCH = 8


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    face_model = load_face_model("paper")
    model = build_model("cvpr18", face_model).to(memory_format=torch.channels_last)
    rng = np.random.default_rng(0)
    arrays = dict(
        image=(rng.random((BATCH, 224, 224, 3)) * 255).astype(np.uint8),
        m=np.tile(face_model.m_mean, (BATCH, 1)).astype(np.float32),
        landmarks=(rng.random((BATCH, 68, 2)) * 224).astype(np.float32),
        texture=(rng.random((BATCH, 192, 224, 3)) * 255).astype(np.uint8),
        texture_mask=rng.random((BATCH, 192, 224)) > 0.3,
    )
    batch = to_device(arrays, torch.device("cpu"))
    return face_model, model, batch


@pytest.mark.parametrize("stage", ["pretrain", "finetune"])
def test_train_step(benchmark, setup, stage):
    face_model, model, batch = setup
    opt = torch.optim.Adam(model.parameters(), lr=1e-4, betas=(0.5, 0.999))
    objective = FinetuneObjective(model, face_model, PatchDiscriminator(), TrainConfig(adversarial_weight=0.1))

    def step():
        opt.zero_grad(set_to_none=True)
        out = model(batch["image"])
        if stage == "pretrain":
            loss, _ = pretrain_loss(model, out, batch)
        else:
            loss, _, _ = objective(model, out, batch, with_landmarks=True)
        loss.backward()
        opt.step()

    benchmark.extra_info["batch"] = BATCH
    benchmark.pedantic(step, rounds=3, iterations=1, warmup_rounds=1)
