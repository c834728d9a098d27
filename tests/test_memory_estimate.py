"""The step-memory estimate (issue 12 item 7): a batch that cannot fit is refused before
anything big is allocated, with the estimate and the machine's limit; the probe that measures
activations changes nothing in the run; the machine's limit is read correctly."""
from __future__ import annotations

import resource
import time

import numpy as np
import pytest
import torch

from nl3dmm.face.facemodel import load_face_model
from nl3dmm.model.adversarial import FakeHistory
from nl3dmm.model.networks import build_model
from nl3dmm.runtime import machine_memory
from nl3dmm.runtime.memory import _cgroup_limit, _meminfo_total
from nl3dmm.training.batches import ArrayData
from nl3dmm.training.config import make_config
from nl3dmm.training.loop import Run, Trainer
from nl3dmm.training.memory_estimate import BACKWARD_FACTOR, InsufficientMemory, check_fits
from train_helpers import nl3dmm_command, run_cli, tiny_arrays


def _limit_address_space():  # the unfixed code would try to allocate hundreds of GB: fail, not swap
    resource.setrlimit(resource.RLIMIT_AS, (16 * 2**30, 16 * 2**30))


def test_batch_that_cannot_fit_is_refused_in_seconds(tmp_path):
    data = tmp_path / "tiny.npz"
    np.savez(data, **tiny_arrays(4))
    start = time.monotonic()
    run = run_cli(nl3dmm_command("train", "--config", "tiny", "batch_size=100000", f"data={data}",
                                 f"out={tmp_path / 'run'}"), timeout=600, preexec_fn=_limit_address_space)
    seconds = time.monotonic() - start
    assert run.returncode == 2, run.stdout[-2000:] + run.stderr[-2000:]
    message = run.stderr
    assert "a training step needs about" in message and "micro-batch of 100000" in message, message[-2000:]
    assert "GiB of host RAM" in message or "cgroup memory limit" in message, message[-2000:]
    assert "Traceback" not in message
    assert not (tmp_path / "run" / "checkpoints").exists()
    print(f"refused in {seconds:.1f} s: {message.strip()}")


def _trainer(tmp_path, stage: str) -> Trainer:
    config = make_config("tiny", stage=stage, out=str(tmp_path / "run"), batch_size=4, history=4)
    torch.manual_seed(0)
    face_model = load_face_model("surrey")
    model = build_model(config.model, face_model)
    from nl3dmm.model.adversarial import PatchDiscriminator
    discriminator = PatchDiscriminator() if stage == "finetune" else None
    run = Run(config, torch.device("cpu"), 1, 0, print)
    return Trainer(run, ArrayData(**tiny_arrays(4)), face_model, model, discriminator, FakeHistory(4), None)


@pytest.mark.parametrize("stage", ["pretrain", "finetune"])
def test_probe_leaves_the_run_untouched(tmp_path, stage):
    trainer = _trainer(tmp_path, stage)
    modules = [m for m in (trainer.model, trainer.discriminator) if m is not None]
    before = [{k: v.clone() for k, v in m.state_dict().items()} for m in modules]
    rng = torch.get_rng_state()
    estimate = trainer.memory_estimate(stage)
    assert torch.equal(rng, torch.get_rng_state())
    for module, saved in zip(modules, before):
        for key, value in module.state_dict().items():
            assert torch.equal(value, saved[key]), f"{key} changed"  # batch-norm statistics put back
        assert all(p.grad is None for p in module.parameters())
    # Activations of a 224 x 224 encoder are megabytes per sample; weights are counted exactly.
    assert 1 * 2**20 < estimate.activations_per_sample < 1 * 2**30, estimate
    params = sum(p.numel() * 4 for m in modules for p in m.parameters())
    assert estimate.gradients == params
    extra = estimate.optimizer_state - 2 * params  # finetune's encoder-only Adam counts again
    encoder = sum(p.numel() * 4 for p in trainer.model.encoder.parameters())
    assert extra == (2 * encoder if stage == "finetune" else 0)
    bigger = trainer.memory_estimate(stage).__class__(**{**estimate.__dict__, "micro_batch": estimate.micro_batch + 10})
    assert bigger.activations - estimate.activations == int(BACKWARD_FACTOR * 10 * estimate.activations_per_sample)
    assert bigger.total >= estimate.total + bigger.activations - max(estimate.activations, estimate.optimizer_scratch)


def test_refusal_names_estimate_and_limit(tmp_path, monkeypatch):
    trainer = _trainer(tmp_path, "pretrain")
    estimate = trainer.memory_estimate("pretrain")
    import nl3dmm.training.memory_estimate as module
    monkeypatch.setattr(module, "machine_memory", lambda device: (estimate.total - 1, "a test limit"))
    with pytest.raises(InsufficientMemory, match=r"needs about .* GiB .* more than the .* GiB of a test limit"):
        check_fits(estimate, torch.device("cpu"))
    monkeypatch.setattr(module, "machine_memory", lambda device: (estimate.total, "a test limit"))
    assert "limit" in check_fits(estimate, torch.device("cpu"))


def test_machine_memory_reads_meminfo_and_cgroup(tmp_path):
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       24576000 kB\nMemFree:  1 kB\n")
    assert _meminfo_total(str(meminfo)) == 24576000 * 1024
    unlimited, limited, v1 = tmp_path / "max", tmp_path / "limited", tmp_path / "v1"
    unlimited.write_text("max\n")
    limited.write_text("8589934592\n")
    v1.write_text(str(2**63 - 4096))  # cgroup v1's "no limit"
    assert _cgroup_limit((str(unlimited),)) is None and _cgroup_limit((str(v1),)) is None
    assert _cgroup_limit((str(tmp_path / "absent"), str(limited))) == 8 * 2**30
    limit, source = machine_memory(torch.device("cpu"))
    assert limit is not None and limit > 2**30 and source
