"""Ctrl-C (issue 12 item 10): SIGINT at any moment of `nl3dmm train` stops it with one line
naming the checkpoint to resume from, exit status 130, no traceback, no partial file left, and
the run resumes from that checkpoint."""
from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from nl3dmm.model.checkpoint import list_checkpoints, read_checkpoint
from nl3dmm.training.interrupts import interrupts_held
from train_helpers import cli_env, nl3dmm_command, run_cli, tiny_arrays


def test_sigint_inside_a_held_block_arrives_after_it():
    # Python's own handler, whatever this process inherited: a shell starts background jobs
    # (`pytest ... &`, nohup) with SIGINT ignored, and an ignored SIGINT must stay ignored.
    inherited = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        finished = []
        with pytest.raises(KeyboardInterrupt):
            with interrupts_held():
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(0.2)  # a KeyboardInterrupt here would cut the write short
                finished.append(True)
        assert finished == [True]
        with interrupts_held():  # and none when none came
            pass
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        with interrupts_held():  # an ignored SIGINT is still ignored after the block
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)
        assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, inherited)


@pytest.fixture(scope="module")
def data_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "tiny.npz"
    np.savez(path, **tiny_arrays(4))
    return path


def _wait_for(condition, proc: subprocess.Popen, seconds: float = 300) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"the run ended or took too long before the moment to interrupt "
                                 f"(rc {proc.poll()}): {proc.communicate()[1][-2000:]}")
        time.sleep(0.005)


MOMENTS = {
    # while the model is being built: nothing saved yet
    "startup": lambda run, out: "NonlinearFaceModel" in out.read_text(),
    # between checkpoints: after the first one, before the next
    "training": lambda run, out: bool(list_checkpoints(run / "checkpoints")),
    # while torch.save writes the second checkpoint's temporary file
    "checkpoint write": lambda run, out: len(list_checkpoints(run / "checkpoints")) == 1 and any(
        (run / "checkpoints").glob(".tmp-checkpoint-*")),
}


@pytest.mark.slow
@pytest.mark.parametrize("moment", list(MOMENTS))
def test_ctrl_c_stops_cleanly_and_the_run_resumes(tmp_path, data_file, moment):
    run = tmp_path / "run"
    common = ["train", "--config", "tiny", "steps=6", "ckpt_every=2", f"data={data_file}", "progress=false"]
    stdout = tmp_path / "stdout.txt"
    with stdout.open("w") as sink:
        proc = subprocess.Popen(nl3dmm_command(*common, f"out={run}"), env=cli_env(), stdout=sink,
                                stderr=subprocess.PIPE, text=True)
        _wait_for(lambda: MOMENTS[moment](run, stdout), proc)
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 130, stderr[-3000:]
    assert "Traceback" not in stderr and "enforce fail" not in stderr, stderr[-3000:]
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr[-3000:]
    leftovers = [p.name for p in run.rglob("*") if p.name.startswith(".tmp")]
    assert not leftovers, f"partial files left: {leftovers}"
    saved = list_checkpoints(run / "checkpoints")
    if saved:
        assert f"resume from {saved[0]}" in lines[0], lines[0]
        read_checkpoint(saved[0])  # complete, not truncated
    else:
        assert "nothing saved" in lines[0], lines[0]
    if moment == "checkpoint write":  # the write under way when Ctrl-C came was finished, not lost
        assert len(saved) == 2, saved
    resumed = run_cli(nl3dmm_command(*common, f"out={run}", "--resume"))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert read_checkpoint(list_checkpoints(run / "checkpoints")[0])["step"] == 6
