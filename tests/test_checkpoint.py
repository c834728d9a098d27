"""Checkpoints (issue 12 items 2 and 5): loading never runs code from the file, whichever
command opens it; what the trainer writes loads weights-only; a checkpoint is verified before
older ones are deleted, and rotation never deletes a good checkpoint in favour of an
unreadable one."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from nl3dmm.cli import main
from nl3dmm.model import checkpoint
from nl3dmm.model.checkpoint import (CheckpointError, UnsafeCheckpointError, checkpoint_path, list_checkpoints,
                                     load_latest, read_checkpoint, require_plain, rng_state, save_checkpoint,
                                     set_rng_state)
from nl3dmm.training.config import make_config
from nl3dmm.training.loop import train


class Evil:
    """Unpickling this creates `sentinel`: any code could run in its place."""

    def __init__(self, sentinel):
        self.sentinel = str(sentinel)

    def __reduce__(self):
        return open, (self.sentinel, "w")


def _state(step: int, stage: str = "pretrain") -> dict:
    """A small state with every key a training checkpoint has."""
    return {"step": step, "stage": stage, "model": {"weight": torch.randn(3, 2)}, "discriminator": None,
            "optimizers": {"model": {"state": {0: {"step": torch.tensor(1.0)}}, "param_groups": [{"lr": 1e-3}]}},
            "history": [], "rng": rng_state(), "config": {"model": "cvpr18", "face_model": "surrey"}}


def _evil_checkpoint(path, sentinel):
    torch.save({**_state(5), "extra": Evil(sentinel)}, path)
    return path


def test_a_checkpoint_that_would_run_code_is_refused_and_the_code_never_runs(tmp_path):
    sentinel = tmp_path / "pwned"
    path = _evil_checkpoint(tmp_path / "evil.pt", sentinel)
    with pytest.raises(UnsafeCheckpointError, match=r"evil\.pt holds types a weights-only load refuses") as info:
        read_checkpoint(path)
    assert "open" in str(info.value)  # the refused global is named
    assert not sentinel.exists(), "unpickling ran the file's code"


@pytest.mark.parametrize("command", ["train --resume", "reconstruct", "eval", "represent"])
def test_every_command_refuses_a_foreign_checkpoint(tmp_path, command, capsys):
    sentinel = tmp_path / "pwned"
    if command == "train --resume":
        run = tmp_path / "run"
        (run / "checkpoints").mkdir(parents=True)
        evil = _evil_checkpoint(checkpoint_path(run / "checkpoints", 5), sentinel)
        argv = ["train", "--config", "tiny", f"out={run}", "--resume"]
    else:
        evil = _evil_checkpoint(tmp_path / "evil.pt", sentinel)
        image = tmp_path / "photo.png"
        image.write_bytes(b"")
        argv = {"reconstruct": ["reconstruct", str(image), "--ckpt", str(evil), "--out", str(tmp_path / "o"), "--quiet"],
                "eval": ["eval", "aflw2000", "--data", str(tmp_path), "--ckpt", str(evil), "--quiet"],
                "represent": ["represent", "--ckpt", str(evil), "--out", str(tmp_path / "o")]}[command]
    assert main(argv) == 2
    assert not sentinel.exists(), f"{command} ran code from the checkpoint"
    error = capsys.readouterr().err
    assert str(evil) in error and "weights-only load refuses" in error, error


def test_a_foreign_checkpoint_stops_a_resume_instead_of_being_skipped(tmp_path):
    folder = tmp_path / "checkpoints"
    save_checkpoint(_state(2), folder, 2, log=lambda _: None)
    _evil_checkpoint(checkpoint_path(folder, 4), tmp_path / "pwned")
    with pytest.raises(UnsafeCheckpointError, match="checkpoint-00000004"):
        load_latest(folder)


def test_checkpoints_of_the_previous_format_are_refused_by_name(tmp_path):
    """Before weights-only loading, the RNG state held numpy's tuple with a numpy array."""
    legacy = {**_state(3), "rng": {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "cuda": None}}
    torch.save(legacy, tmp_path / "old.pt")
    with pytest.raises(UnsafeCheckpointError, match=r"old\.pt was written by an nl3dmm version before weights-only"):
        read_checkpoint(tmp_path / "old.pt")


def test_state_of_foreign_types_is_not_written(tmp_path):
    with pytest.raises(TypeError, match=r"checkpoint\['rng'\]\['numpy'\]\[1\] is a numpy.ndarray"):
        save_checkpoint({**_state(1), "rng": {"numpy": np.random.get_state()}}, tmp_path, 1)
    with pytest.raises(TypeError, match=r"checkpoint\['config'\]\['lr'\] is a numpy.float64"):
        require_plain({"config": {"lr": np.float64(1e-3)}})
    assert not list(tmp_path.iterdir()), "a refused state left a file behind"


def test_rng_state_round_trips_through_a_weights_only_checkpoint(tmp_path, seed):
    np.random.seed(seed)
    np.random.standard_normal()  # leaves a cached Gaussian in numpy's state
    path = save_checkpoint(_state(1), tmp_path, 1)
    expected = (torch.rand(4), np.random.rand(4), np.random.standard_normal(3))
    torch.manual_seed(seed + 1)
    np.random.seed(seed + 1)
    set_rng_state(read_checkpoint(path)["rng"])
    got = (torch.rand(4), np.random.rand(4), np.random.standard_normal(3))
    assert torch.equal(expected[0], got[0])
    np.testing.assert_array_equal(expected[1], got[1])
    np.testing.assert_array_equal(expected[2], got[2])


def test_rotation_counts_only_checkpoints_that_read_back(tmp_path):
    """keep=1 with an unreadable newest file: the one just written is kept (the old code kept
    the unreadable file and deleted both good ones)."""
    folder, messages = tmp_path / "checkpoints", []
    save_checkpoint(_state(2), folder, 2, keep=1, log=messages.append)
    corrupt = checkpoint_path(folder, 4)
    corrupt.write_bytes(checkpoint_path(folder, 2).read_bytes()[:1000])
    save_checkpoint(_state(3), folder, 3, keep=1, log=messages.append)
    assert list_checkpoints(folder) == [corrupt, checkpoint_path(folder, 3)]
    assert any("checkpoint-00000004.pt does not read back" in m for m in messages), messages
    assert load_latest(folder, log=messages.append)["step"] == 3


def test_a_checkpoint_that_does_not_read_back_is_never_renamed_into_place(tmp_path, monkeypatch):
    folder = tmp_path / "checkpoints"
    good = save_checkpoint(_state(2), folder, 2, keep=1)
    real_save = torch.save

    def truncating_save(state, file):  # a disk that drops the end of the file
        real_save(state, file)
        file.truncate(1000)

    monkeypatch.setattr(checkpoint.torch, "save", truncating_save)
    with pytest.raises(CheckpointError, match="unreadable"):
        save_checkpoint(_state(3), folder, 3, keep=1)
    assert list(folder.iterdir()) == [good], "the bad file was kept, or the good one deleted"


@pytest.mark.slow  # two short training runs: ~15 s on 2 idle cores
def test_keep_one_with_a_corrupt_newest_checkpoint_resumes_from_the_good_one(tmp_path):
    """Issue 12 item 5 end to end: the first resume skips the corrupt newest file and saves step
    3; the good step-3 checkpoint must survive for the next resume."""
    out, quiet = tmp_path / "run", (lambda *_: None)
    options = dict(batch_size=2, ckpt_every=1, keep_checkpoints=1, out=str(out), image_every=100)
    train(make_config("tiny", steps=2, **options), log=quiet)
    folder = out / "checkpoints"
    checkpoint_path(folder, 4).write_bytes(checkpoint_path(folder, 2).read_bytes()[:4096])
    messages = []
    train(make_config("tiny", steps=3, **options), resume=True, log=messages.append)
    assert any("resumed from" in m and "checkpoint-00000002" in m for m in messages), messages
    state = load_latest(folder, log=messages.append)
    assert state is not None and state["step"] == 3, list_checkpoints(folder)
