"""Bad options stop a command at once with a message naming them (issue 12 item 8): training
overrides are checked before anything is built, --device is checked against this torch,
counts must be positive, reconstruct refuses boxes off the image and photos too large to
render before running the model, and a junk .npz is named for what it is. (A string or bools as
rasterize's resolution: tests/test_render_faults.py.)"""
from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from nl3dmm.cli import main
from nl3dmm.data.samples import split_names
from nl3dmm.tasks.aflw2000 import evaluate_folder
from nl3dmm.tasks.reconstruct import MAX_SIDE
from nl3dmm.training.config import make_config


@pytest.mark.parametrize("override, words", [
    ("ckpt_every=0", "ckpt_every must be >= 1"),
    ("log_every=0", "log_every must be >= 1"),
    ("image_every=-1", "image_every must be >= 1"),
    ("keep_checkpoints=-1", "keep_checkpoints must be >= 1"),
    ("lr=-1", "lr must be a finite number > 0"),
    ("warmup=-5", "warmup must be >= 0"),
    ("grad_clip=nan", "grad_clip must be a finite number"),
    ("device=tpu", "device must be auto, cpu, cuda or cuda:N"),
    ("seed=-1", "seed must be in"),
])
def test_bad_overrides_stop_train_before_anything_is_built(tmp_path, capsys, override, words):
    run = tmp_path / "run"
    assert main(["train", "--config", "tiny", f"out={run}", override]) == 2
    assert words in capsys.readouterr().err
    assert not run.exists(), "the run started before the option was checked"


def test_wrong_python_types_are_named():
    with pytest.raises(TypeError, match="steps must be int, got '3'"):
        make_config("tiny", steps="3")
    with pytest.raises(TypeError, match="amp must be bool"):
        make_config("tiny", amp=1)


def test_device_cuda_without_cuda_is_a_clear_error(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main(["train", "--config", "tiny", f"out={tmp_path / 'run'}", "device=cuda"]) == 2
    assert "device=cuda, but" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["reconstruct", "x.jpg", "--ckpt", "c.pt", "--out", str(tmp_path), "--device", "cuda:0"])
    assert exit_info.value.code == 2
    assert "--device=cuda:0, but" in capsys.readouterr().err


def test_out_that_is_a_file_is_refused(tmp_path, capsys):
    taken = tmp_path / "notes.txt"
    taken.write_text("not a folder")
    assert main(["train", "--config", "tiny", f"out={taken}"]) == 2
    assert f"out={taken} is a file" in capsys.readouterr().err


def test_resuming_with_another_stage_says_so(tmp_path, capsys, untrained_checkpoint):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    shutil.copy(untrained_checkpoint, run / "checkpoints" / "checkpoint-00000001.pt")  # tiny: pretrain, surrey
    assert main(["train", "--config", "tiny", "stage=finetune", f"out={run}", "--resume"]) == 2
    error = capsys.readouterr().err
    assert "was written in stage 'pretrain'" in error and "stage=finetune" in error, error


def test_overrides_may_stand_among_the_options(tmp_path, monkeypatch):
    seen = {}

    def fake_train(config, resume=False):
        seen.update(config=config, resume=resume)
        return {}

    monkeypatch.setattr("nl3dmm.training.loop.train", fake_train)
    assert main(["train", f"out={tmp_path / 'x'}", "--config", "tiny", "steps=1", "--resume", "lr=0.5"]) == 0
    config = seen["config"]
    assert (config.out, config.steps, config.lr, config.face_model) == (str(tmp_path / "x"), 1, 0.5, "surrey")
    assert seen["resume"]


def test_counts_must_be_positive(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["eval", "aflw2000", "--data", str(tmp_path), "--ckpt", "c.pt", "--limit", "-1"])
    assert "argument --limit: expected an integer >= 1, got -1" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["reconstruct", "x.jpg", "--ckpt", "c.pt", "--out", str(tmp_path), "--batch", "0"])
    with pytest.raises(ValueError, match="limit must be >= 1"):
        evaluate_folder(tmp_path, lambda crops: {}, limit=-1)


@pytest.fixture(scope="module")
def photo(tmp_path_factory):
    path = tmp_path_factory.mktemp("photo") / "face.png"
    Image.fromarray(np.full((64, 80, 3), 128, np.uint8)).save(path)
    return path


def test_box_wholly_outside_the_image_fails_that_file(tmp_path, photo, untrained_checkpoint, capsys):
    argv = ["reconstruct", str(photo), "--ckpt", str(untrained_checkpoint), "--out", str(tmp_path), "--quiet"]
    assert main(argv + ["--box", "100,10,140,50"]) == 1
    assert "lies wholly outside the 80 x 64 px image" in capsys.readouterr().err
    assert main(argv + ["--box", "70,10,140,50"]) == 0  # overlapping the image is fine


def test_a_photo_too_large_to_render_is_refused_before_inference(tmp_path, untrained_checkpoint, capsys,
                                                                 monkeypatch):
    big = tmp_path / "wide.png"
    Image.fromarray(np.zeros((40, MAX_SIDE + 1, 3), np.uint8)).save(big)

    def no_inference(*args, **kwargs):
        raise AssertionError("the model ran on an image that cannot be rendered")

    monkeypatch.setattr("nl3dmm.tasks.reconstruct.predict", no_inference)
    argv = ["reconstruct", str(big), "--ckpt", str(untrained_checkpoint), "--out", str(tmp_path / "o"), "--quiet"]
    assert main(argv) == 1
    assert f"at most {MAX_SIDE} px on a side" in capsys.readouterr().err


def test_a_junk_npz_is_named_for_what_it_is(tmp_path, capsys):
    from nl3dmm.training.loop import open_training_data

    junk = tmp_path / "junk.npz"
    junk.write_bytes(np.random.default_rng(0).bytes(3000))
    with pytest.raises(ValueError, match="is not an .npz archive") as info:
        open_training_data(str(junk))
    assert "pickled" not in str(info.value)


def test_split_names():
    assert split_names(" image1, image2,,image3 ") == ["image1", "image2", "image3"]
    assert split_names(None) == []
