"""The parts of bench/gpu/acceptance.sh that run without a GPU: argument handling, the step
runner's time limits, the result writer, and the clean refusal on a machine with no GPU."""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench" / "gpu"))

import acceptance  # noqa: E402

SCRIPT = REPO / "bench" / "gpu" / "acceptance.sh"


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=120,
                          env={"PATH": "/usr/bin:/bin", "PYTHON": sys.executable})


def test_plan_fits_eight_minutes_and_covers_every_part(tmp_path):
    steps = acceptance.plan(tmp_path)
    assert [s.name for s in steps] == ["build", "pytest", "memcheck", "racecheck", "initcheck",
                                       "streams", "bench"]
    assert sum(s.limit_s for s in steps) <= acceptance.DEFAULT_BUDGET_S < 8 * 60
    assert any("-m" in s.argv and "gpu" in s.argv for s in steps if s.name == "pytest")
    assert all(s.env.get("NL3DMM_CUDA_UNVERIFIED") == "1" for s in steps if s.name != "build")


def test_dry_run_prints_the_plan():
    run = _run("--dry-run", "--steps", "pytest,bench", "--budget", "300")
    assert run.returncode == 0, run.stderr
    assert "budget: 300 s" in run.stdout
    assert "pytest" in run.stdout and "gpu_bench.py" in run.stdout and "memcheck" not in run.stdout


@pytest.mark.parametrize("args, words", [(["--steps", "bench,nope"], "--steps takes names"),
                                         (["--steps", ","], "--steps takes names"),
                                         (["--budget", "-5"], "--budget must be positive"),
                                         (["--budget", "soon"], "invalid float")])
def test_bad_arguments_are_named(args, words):
    run = _run(*args)
    assert run.returncode == 2 and words in run.stderr, run.stderr


def test_refuses_without_a_gpu_and_writes_nothing(tmp_path):
    if acceptance.cuda_device_name() is not None:
        pytest.skip("this machine has a GPU")
    out = tmp_path / "results"
    run = _run("--out", str(out))
    assert run.returncode == 2
    assert "no CUDA device" in run.stderr
    assert not out.exists()


def test_step_runner_records_pass_fail_timeout_and_skips(tmp_path):
    py = sys.executable
    results = [
        acceptance.run_step(acceptance.Step("ok", [py, "-c", "print('hello')"], 30), tmp_path, 30),
        acceptance.run_step(acceptance.Step("bad", [py, "-c", "raise SystemExit(3)"], 30), tmp_path, 30),
        acceptance.run_step(acceptance.Step("missing", ["x"], 30, needs="no-such-tool-here"), tmp_path, 30),
        acceptance.run_step(acceptance.Step("late", [py, "-c", "print(1)"], 30), tmp_path, 0),
    ]
    started = time.monotonic()
    slow = acceptance.Step("slow", ["bash", "-c", f"{py} -c 'import time; time.sleep(60)' & wait"], 30)
    results.append(acceptance.run_step(slow, tmp_path, 1.5))
    assert time.monotonic() - started < 20, "a timed-out step (and its children) must be stopped"
    assert [r.status for r in results] == ["passed", "failed", "skipped", "skipped", "timed out"]
    assert results[1].returncode == 3 and results[4].returncode is None
    assert "hello" in (tmp_path / "ok.log").read_text()

    acceptance.write_results(tmp_path, "NVIDIA H200", results, "2026-12-02T01:00:00+00:00")
    info = json.loads((tmp_path / "steps.json").read_text())
    assert info["device"] == "NVIDIA H200" and len(info["results"]) == 5
    summary = (tmp_path / "summary.md").read_text()
    assert "| slow | timed out |" in summary and "| missing | skipped |" in summary
    assert "no-such-tool-here not found" in summary


def test_device_folder_names():
    assert acceptance.device_folder_name("NVIDIA H200") == "NVIDIA-H200"
    assert acceptance.device_folder_name("NVIDIA H100 80GB HBM3") == "NVIDIA-H100-80GB-HBM3"
    assert "/" not in acceptance.device_folder_name("a/../b")
    assert acceptance.device_folder_name("///") == "unknown-device"


def test_gpu_steps_refuse_without_a_gpu(tmp_path, capsys):
    """The steps' own scripts also exit 2 with a message instead of failing half-way."""
    if acceptance.cuda_device_name() is not None:
        pytest.skip("this machine has a GPU")
    import gpu_bench
    import streams_case

    assert gpu_bench.main(["--out", str(tmp_path / "bench")]) == 2
    assert not (tmp_path / "bench").exists()
    assert streams_case.main([]) == 2
    assert "no CUDA device" in capsys.readouterr().err


def test_benchmark_table_rows():
    import gpu_bench

    text = gpu_bench.table([
        {"backend": "cuda", "batch": 8, "size": 224, "forward_ms": 1.0,
         "forward_full_validation_ms": 1.25, "forward_backward_ms": 2.0},
        {"backend": "triton", "batch": 256, "size": 512, "error": "RuntimeError: out of memory"}])
    assert "| cuda | 8 | 224 | 1.000 | 1.250 | 2.000 | 4,000 |" in text
    assert "| triton | 256 | 512 | RuntimeError: out of memory |" in text
