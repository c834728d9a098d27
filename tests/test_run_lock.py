"""One writer per run folder (issue 12 item 6): a second run on the same out= is refused with
the holder's pid, host and start time; the lock goes with its holder however it exits; a
lock left by a dead holder is taken over with a message."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nl3dmm.training.run_lock import LOCK_NAME, RunFolderLocked, RunLock
from train_helpers import cli_env, nl3dmm_command, run_cli

HOLD = "import sys, time; from nl3dmm.training.run_lock import RunLock; RunLock(sys.argv[1]).acquire(); " \
       "print('held', flush=True); time.sleep(float(sys.argv[2]))"


def _holder(folder: Path, seconds: float = 300) -> subprocess.Popen:
    """Another process that takes the lock of `folder` and keeps it for `seconds`."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(folder), str(seconds)], env=cli_env(),
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_second_writer_is_refused_with_the_holder(tmp_path):
    holder = _holder(tmp_path / "run")
    try:
        with pytest.raises(RunFolderLocked) as refused:
            RunLock(tmp_path / "run").acquire()
        message = str(refused.value)
        assert f"pid {holder.pid}" in message and socket.gethostname() in message and "started 20" in message
    finally:
        holder.kill()
        holder.wait()


def test_lock_is_released_on_clean_exit_and_taken_over_after_a_kill(tmp_path):
    messages: list[str] = []
    with RunLock(tmp_path / "run", messages.append):
        with pytest.raises(RunFolderLocked):  # a second open file in the same process is refused too
            RunLock(tmp_path / "run").acquire()
    assert (tmp_path / "run" / LOCK_NAME).read_text() == ""  # a clean exit leaves no note
    with RunLock(tmp_path / "run", messages.append):
        pass
    assert messages == []

    holder = _holder(tmp_path / "run")
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    with RunLock(tmp_path / "run", messages.append):
        pass
    assert len(messages) == 1 and "stale lock" in messages[0] and f"pid {holder.pid}" in messages[0] \
        and "no longer running" in messages[0], messages


def test_out_that_is_a_file_is_a_clear_error(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="is a file"):
        RunLock(tmp_path / "file").acquire()


def test_train_refuses_a_folder_another_run_holds(tmp_path):
    """Before the lock, the second run trained into the same checkpoints and TensorBoard log."""
    run = tmp_path / "run"
    holder = _holder(run)
    try:
        start = time.monotonic()
        second = run_cli(nl3dmm_command("train", "--config", "tiny", f"out={run}", "steps=1", "progress=false"),
                         timeout=300)
        assert second.returncode == 2, second.stdout[-2000:] + second.stderr[-2000:]
        assert f"in use by another training run (pid {holder.pid} on host" in second.stderr, second.stderr[-2000:]
        assert "Traceback" not in second.stderr
        assert not (run / "checkpoints").exists() and not (run / "tensorboard").exists()
        print(f"refused in {time.monotonic() - start:.1f} s")
    finally:
        holder.kill()
        holder.wait()
