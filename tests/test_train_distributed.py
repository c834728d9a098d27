"""Faults of the distributed engine (issue 12), with torchrun's own machinery on gloo/CPU:
an elastic restart after a worker is SIGKILLed resumes to the state of an uninterrupted run;
two launchers (two "nodes" on one machine, c10d rendezvous) train to the state of one process;
a rank that stops answering makes the job fail within dist_timeout instead of hanging.

Each test starts several torchrun jobs: slow (minutes on 2 cores), run with --run-slow."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from nl3dmm.face.facemodel import load_face_model
from nl3dmm.model.checkpoint import list_checkpoints, read_checkpoint
from nl3dmm.model.networks import build_model
from train_helpers import children_with_rank, cli_env, free_port, nl3dmm_command, run_cli, tiny_arrays

pytestmark = pytest.mark.slow
TORCHRUN = [sys.executable, "-m", "torch.distributed.run"]


@pytest.fixture(scope="module")
def data_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "tiny.npz"
    np.savez(path, **tiny_arrays(8))
    return path


def _params(folder: Path) -> dict[str, torch.Tensor]:
    state = read_checkpoint(list_checkpoints(folder / "checkpoints")[0])
    return {k: v for k, v in state["model"].items() if v.dtype.is_floating_point and "running" not in k}


def _worst_relative_difference(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max(((a[k] - b[k]).abs().max() / b[k].abs().max().clamp(min=1e-12)).item() for k in a)


def _standalone(nproc: int, *extra: str) -> list[str]:
    return [*TORCHRUN, "--standalone", f"--nproc_per_node={nproc}", *extra, "-m", "nl3dmm"]


def test_elastic_restart_after_a_killed_worker_resumes_to_the_same_state(tmp_path, data_file):
    common = ["train", "--config", "tiny", "steps=8", "ckpt_every=2", "batch_size=4", f"data={data_file}",
              "progress=false"]
    reference = run_cli([*_standalone(2), *common, f"out={tmp_path / 'ref'}"])
    assert reference.returncode == 0, reference.stderr[-4000:]

    run = tmp_path / "killed"
    log = (tmp_path / "killed.log").open("w")
    proc = subprocess.Popen([*_standalone(2, "--max-restarts=2"), *common, f"out={run}"], env=cli_env(),
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 400
        while not (run / "checkpoints" / "checkpoint-00000004.pt").exists():
            assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "killed.log").read_text()[-4000:]
            time.sleep(0.05)
        victims = children_with_rank(proc.pid, 1)
        assert len(victims) == 1, victims
        os.kill(victims[0], signal.SIGKILL)
        rc = proc.wait(timeout=600)
    finally:
        proc.kill()
        log.close()
    output = (tmp_path / "killed.log").read_text()
    assert rc == 0, output[-4000:]
    assert "torchrun restart 1: resuming" in output, output[-4000:]
    assert "taking over the stale lock" in output or "resumed from" in output, output[-4000:]
    state = read_checkpoint(list_checkpoints(run / "checkpoints")[0])
    assert state["step"] == 8
    worst = _worst_relative_difference(_params(run), _params(tmp_path / "ref"))
    assert worst < 1e-5, f"the restarted run differs from the uninterrupted one by {worst:.2e}"


def test_two_nodes_on_one_machine_equal_one_process(tmp_path, data_file):
    # 8 samples over 4 ranks: micro-batches of 2 (batch norm needs 2), as in the one process's 4 micro-batches.
    common = ["train", "--config", "tiny", "steps=3", "ckpt_every=3", "batch_size=8", f"data={data_file}",
              "progress=false"]
    port = free_port()
    launchers = []
    for node, host in ((0, "1"), (1, "0")):
        cmd = [*TORCHRUN, "--nnodes=2", "--nproc-per-node=2", "--rdzv-backend=c10d",
               f"--rdzv-endpoint=127.0.0.1:{port}", "--rdzv-id=two-nodes", f"--rdzv-conf=is_host={host}",
               "-m", "nl3dmm", *common, f"out={tmp_path / 'nodes'}"]
        launchers.append(subprocess.Popen(cmd, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                          text=True))
    outputs = []
    try:
        for launcher in launchers:
            outputs.append(launcher.communicate(timeout=600)[0])
    finally:
        for launcher in launchers:
            launcher.kill()
    assert [launcher.returncode for launcher in launchers] == [0, 0], "\n".join(o[-3000:] for o in outputs)
    assert any("x 4 process(es)" in o for o in outputs), outputs[0][-3000:]
    single = run_cli(nl3dmm_command(*common, "accumulate=4", f"out={tmp_path / 'one'}"))
    assert single.returncode == 0, single.stderr[-4000:]
    nodes, one = _params(tmp_path / "nodes"), _params(tmp_path / "one")
    worst = _worst_relative_difference(nodes, one)
    # Summing 4 gradients in another order changes float32 last bits, which Adam's normalised
    # step turns into lr-sized differences for near-zero gradients: measured 3.6e-4 here (2 ranks
    # on one node: < 1e-4). Training moved the weights ~100x further; a rank reading the wrong
    # samples would differ by about as much as training moved them.
    torch.manual_seed(0)
    initial = build_model("cvpr18", load_face_model("surrey")).state_dict()
    moved = _worst_relative_difference({k: initial[k] for k in one}, one)  # relative to the trained weights
    print(f"2 nodes x 2 ranks vs one process: {worst:.2e} relative; training moved the weights {moved:.2e}")
    assert worst < 1e-3 and worst < moved / 20, f"4 ranks on 2 nodes and one process differ by {worst:.2e} " \
                                                 f"(relative; training moved them {moved:.2e})"


def test_a_rank_that_stops_answering_fails_the_job_within_the_timeout(tmp_path, data_file):
    """Rank 1 is stopped (SIGSTOP: it hangs, as in a stuck data loader); rank 0 waits in its next
    collective for dist_timeout seconds, then fails, and torchrun ends the job."""
    timeout = 20
    run = tmp_path / "hung"
    proc = subprocess.Popen([*_standalone(2), "train", "--config", "tiny", "steps=50", "ckpt_every=1",
                             "batch_size=4", f"data={data_file}", "progress=false", f"dist_timeout={timeout}",
                             f"out={run}"], env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    victims, waiting = [], []
    try:
        deadline = time.monotonic() + 400
        while not list_checkpoints(run / "checkpoints"):
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[0][-4000:]
            time.sleep(0.05)
        victims, waiting = children_with_rank(proc.pid, 1), children_with_rank(proc.pid, 0)
        assert len(victims) == 1 and len(waiting) == 1, (victims, waiting)
        os.kill(victims[0], signal.SIGSTOP)
        stopped = time.monotonic()
        # Rank 0 must give up by itself: without a timeout it would wait for rank 1 for 30 minutes.
        while Path(f"/proc/{waiting[0]}").exists() and time.monotonic() - stopped < timeout + 240:
            time.sleep(0.2)
        took = time.monotonic() - stopped
        assert not Path(f"/proc/{waiting[0]}").exists(), f"rank 0 still waits {took:.0f} s after rank 1 stopped"
    finally:
        for pid in victims:  # a stopped process acts on torchrun's SIGTERM only once continued
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
    try:
        output = proc.communicate(timeout=300)[0]
    finally:
        proc.kill()
    assert proc.returncode != 0, output[-4000:]
    assert "timed out" in output.lower() or "timeout" in output.lower(), output[-4000:]
    print(f"rank 0 failed {took:.0f} s after rank 1 stopped (dist_timeout={timeout}); torchrun exited "
          f"{proc.returncode}; rank 0 said: {[l for l in output.splitlines() if 'error' in l.lower()][:2]}")
