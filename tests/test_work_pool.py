"""The CPU kernels' thread pool (csrc/cpu/work_pool.h): every chunk once, under ThreadSanitizer
too; concurrent Python callers, forked children and more threads than cores get the serial
results bit for bit; the input check it runs (all_finite) finds every NaN and Inf."""
from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch

import nl3dmm
from nl3dmm.render import checks
from meshes import random_soup

ROOT = Path(__file__).resolve().parents[1]
COMPILER = os.environ.get("CXX", "g++")


def _build(tmp_path: Path, name: str, flags: list[str]) -> Path:
    exe = tmp_path / name
    cmd = [COMPILER, "-std=c++17", "-g", "-fopenmp", *flags, f"-I{ROOT / 'csrc'}",
           str(ROOT / "tests" / "work_pool_stress.cpp"), str(ROOT / "csrc" / "cpu" / "work_pool.cpp"),
           "-o", str(exe), "-lpthread"]
    done = subprocess.run(cmd, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    return exe


# Helpers asleep between calls / polling; on the pool only, or on OpenMP's team whenever it
# can (libgomp is not built for ThreadSanitizer: the team runs plain only).
@pytest.mark.parametrize("variant,flags,omp", [("plain", ["-O2"], "0"), ("plain", ["-O2"], "1"),
                                               ("tsan", ["-O1", "-fsanitize=thread"], "0")])
@pytest.mark.parametrize("spin_us", ["0", "100000"])
def test_stress_driver_every_chunk_once(tmp_path, variant, flags, omp, spin_us):
    exe = _build(tmp_path, variant, flags)
    env = {**os.environ, "OMP_NUM_THREADS": "4", "NL3DMM_POOL_SPIN_US": spin_us, "NL3DMM_POOL_OMP": omp,
           "TSAN_OPTIONS": "halt_on_error=1 exitcode=66"}
    done = subprocess.run([str(exe)], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0 and done.stdout.strip() == "ok", (done.stdout + done.stderr)[-3000:]
    assert "WARNING: ThreadSanitizer" not in done.stderr, done.stderr[-3000:]


def _render(pos: torch.Tensor, tri: torch.Tensor, tex: torch.Tensor, uv: torch.Tensor):
    pos = pos.clone().requires_grad_(True)
    tex = tex.clone().requires_grad_(True)
    rast = nl3dmm.rasterize(pos, tri, (37, 53), backend="cpu")
    image = nl3dmm.sample_texture(tex, nl3dmm.interpolate(uv, rast, tri, backend="cpu"), backend="cpu")
    (image * torch.linspace(-1, 1, 3)).sum().backward()
    return rast.detach(), image.detach(), pos.grad, tex.grad


def _scene(batch: int):
    pos, tri = random_soup(batch, 300, 500, torch.float32)
    return pos, tri, torch.rand(batch, 16, 24, 3), torch.rand(300, 2)


def _serial(scene):
    before = nl3dmm.render.num_threads()
    try:
        nl3dmm.render.set_num_threads(1)
        return _render(*scene)
    finally:
        nl3dmm.render.set_num_threads(before)


def _assert_equal(got, want):
    for g, w in zip(got, want):
        assert torch.equal(g, w)


def test_concurrent_python_threads_get_the_serial_results(seed):
    """The kernels release the GIL: calls from several threads overlap, one gets the pool and
    the others run their chunks themselves."""
    scenes = [_scene(b) for b in (1, 2, 3, 1)]
    want = [_serial(s) for s in scenes]
    got: dict[int, list] = {i: [] for i in range(len(scenes))}
    errors = []

    def work(i):
        try:
            for _ in range(6):
                got[i].append(_render(*scenes[i]))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(scenes))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not errors, errors
    assert not any(t.is_alive() for t in threads), "a rendering thread hung"
    for i, results in got.items():
        assert len(results) == 6
        for r in results:
            _assert_equal(r, want[i])


def _child(scene, queue):
    queue.put([t.numpy() for t in _render(*scene)])


def test_a_forked_child_renders_without_the_parents_helpers(seed):
    """A DataLoader worker is a fork of a process whose pool threads are running: the child
    has none of them and must neither hang nor differ."""
    scene = _scene(1)
    want = _render(*scene)  # the parent's pool is started and its helpers exist
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_child, args=(scene, queue))
    child.start()
    got = queue.get(timeout=120)
    child.join(timeout=60)
    assert child.exitcode == 0
    _assert_equal([torch.from_numpy(g) for g in got], want)


def test_more_threads_than_cores_change_no_bit(seed):
    scene = _scene(2)
    want = _serial(scene)
    before = nl3dmm.render.num_threads()
    try:
        nl3dmm.render.set_num_threads(7)
        _assert_equal(_render(*scene), want)
    finally:
        nl3dmm.render.set_num_threads(before)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_all_finite_finds_every_bad_value(seed, dtype, bad):
    x = torch.randn(3 * 65536 + 5, dtype=dtype) * 1e30  # large values: no sum may overflow
    assert checks._all_finite(x)
    # Every position class: first, last, either side of the pool's 65,536-value pieces, random.
    for i in (0, x.numel() - 1, 65535, 65536, 131071, int(torch.randint(0, x.numel(), ()))):
        y = x.clone()
        y[i] = bad
        assert not checks._all_finite(y), i
        with pytest.raises(ValueError, match=r"pos contains NaN or Inf \(first at index"):
            checks.check_pos(y.reshape(1, -1, 1).expand(1, -1, 4).contiguous())


def test_all_finite_of_a_view_is_torchs(seed):
    """Non-contiguous tensors are checked by torch, with the same answer."""
    x = torch.randn(64, 64, dtype=torch.float64)
    x[3, 5] = float("nan")
    assert not checks._all_finite(x.t())
    assert checks._all_finite(x[:, 6:].t())


_OVERLAP_SCRIPT = r"""
import sys, torch, nl3dmm
sys.path.insert(0, sys.argv[2])
from meshes import random_soup
torch.manual_seed(int(sys.argv[1]))
pos, tri = random_soup(1, 300, 500, torch.float32)
uv, tex = torch.rand(300, 2), torch.rand(1, 32, 24, 3)
background, mask = torch.rand(1, 61, 47, 3), torch.rand(1, 61, 47)
for threads in (1, 2, 7, 2):
    nl3dmm.render.set_num_threads(threads)
    leaves = [t.clone().requires_grad_(True) for t in (pos, uv, tex, background, mask)]
    p, u, t, bg, m = leaves
    image, _, rast = nl3dmm.render_textured(p, tri, u, t, (61, 47), background=bg, mask=m, backend="cpu")
    pixel_uv = nl3dmm.interpolate(u, rast, tri, backend="cpu")
    uv_da = nl3dmm.interpolate_derivatives(u, rast, tri, p, backend="cpu")
    mip = nl3dmm.sample_texture(t, pixel_uv, backend="cpu", uv_da=uv_da)
    plain = nl3dmm.sample_texture(t, pixel_uv, boundary="wrap", backend="cpu")
    weights = torch.randn(1, 61, 47, 3, generator=torch.Generator().manual_seed(1))
    smooth = nl3dmm.antialias(image, rast, p, tri, backend="cpu")
    ((smooth + mip + plain) * weights).sum().backward()
    grads = [leaf.grad for leaf in leaves]
    assert all(bool((g != 0).any()) for g in grads)
    if threads == 1:
        want = grads
    else:
        for name, g, w in zip(("pos", "uv", "tex", "background", "mask"), grads, want):
            assert torch.equal(g, w), (threads, name)
print("ok")
"""


# The pool's helpers polling (so that they do take the gathers), or OpenMP's team on every call.
@pytest.mark.parametrize("threads", [{"NL3DMM_POOL_SPIN_US": "100000", "NL3DMM_POOL_OMP": "0"},
                                     {"NL3DMM_POOL_OMP": "1"}], ids=["pool", "team"])
def test_backward_gathers_beside_the_scatter_change_no_bit(seed, threads):
    """With one image, a backward pass's serial scatter (to texels, vertices) runs while the
    helpers take its per-pixel gathers (scatter_by_image). Every gradient of the fused and
    unfused chains, the mip-mapped lookup, interpolate_derivatives and antialias is the same at
    1, 2 and 7 threads, on the pool and on OpenMP's team."""
    env = {**os.environ, **threads}
    done = subprocess.run([sys.executable, "-c", _OVERLAP_SCRIPT, str(seed), str(ROOT / "tests")],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), (done.stdout + done.stderr)[-3000:]


# Shared by the two affinity scripts below: a scene, and the CPU masks of the pool's helpers.
_POOL_PRELUDE = r"""
import os, time, torch, nl3dmm
pos = torch.rand(1, 300, 4) * 2 - 1
pos[..., 3] = 1
tri = torch.randint(0, 300, (600, 3), dtype=torch.int32)


def helper_cpus(count):
    # A helper names itself when it first runs, which may be after the call that started it.
    for _ in range(500):
        found = []
        for tid in os.listdir("/proc/self/task"):
            with open(f"/proc/self/task/{tid}/comm") as f:
                if f.read().strip() == "nl3dmm-pool":
                    found.append(os.sched_getaffinity(int(tid)))
        if len(found) >= count:
            return found
        time.sleep(0.01)
    return found
"""

_AFFINITY_SCRIPT = _POOL_PRELUDE + r"""
nl3dmm.render.set_num_threads(2)
want = nl3dmm.rasterize(pos, tri, (64, 64))
cpus = sorted(os.sched_getaffinity(0))[:2]
for cpu, other in ((cpus[0], cpus[1]), (cpus[1], cpus[0])):
    os.sched_setaffinity(0, {cpu})  # this (the calling) thread only
    assert torch.equal(nl3dmm.rasterize(pos, tri, (64, 64)), want)
    helpers = helper_cpus(1)
    assert len(helpers) == 1 and all(cpu not in h and other in h for h in helpers), (cpu, helpers)
# More threads, the caller still on cpus[1]: the new helpers start with the caller's one-CPU
# mask and must get the others' too.
nl3dmm.render.set_num_threads(4)
assert torch.equal(nl3dmm.rasterize(pos, tri, (64, 64)), want)
helpers = helper_cpus(3)
assert len(helpers) == 3 and all(cpus[1] not in h and cpus[0] in h for h in helpers), helpers
print("ok")
"""

_ONE_CPU_SCRIPT = _POOL_PRELUDE + r"""
cpu = sorted(os.sched_getaffinity(0))[0]
os.sched_setaffinity(0, {cpu})
nl3dmm.render.set_num_threads(2)
a = nl3dmm.rasterize(pos, tri, (64, 64))
nl3dmm.render.set_num_threads(1)
assert torch.equal(a, nl3dmm.rasterize(pos, tri, (64, 64)))
helpers = helper_cpus(1)
assert helpers and all(h == {cpu} for h in helpers), helpers
print("ok")
"""


def _run_script(script: str, **env: str) -> None:
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                          env={**os.environ, **env})
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), (done.stdout + done.stderr)[-3000:]


def test_helpers_stay_off_the_callers_cpu():
    """Linux would wake a helper on the caller's CPU and preempt the caller (a 2-band scatter
    then took twice as long): after a call, every helper may run anywhere but there."""
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("one CPU: nowhere else for a helper to run")
    _run_script(_AFFINITY_SCRIPT, NL3DMM_POOL_OMP="0")  # the pool's helpers, not OpenMP's team


def test_a_process_on_one_cpu_keeps_its_mask():
    """Where only the caller's CPU is allowed (taskset), helpers keep the process's mask and
    the results are unchanged."""
    _run_script(_ONE_CPU_SCRIPT, NL3DMM_POOL_OMP="0")


_TEAM_SCRIPT = r"""
import os, threading, time, torch, nl3dmm
# Many vertices: the call's first loop (the finiteness check of pos) starts within
# microseconds of torch's op, while torch's threads still poll.
pos = torch.rand(1, 200000, 4) * 2 - 1
pos[..., 3] = 1
tri = torch.randint(0, 200000, (600, 3), dtype=torch.int32)
want = nl3dmm.rasterize(pos, tri, (128, 128))  # starts OpenMP's team and the pool
big = torch.ones(1 << 22)
# Linux often wakes torch's thread onto the caller's CPU, where it waits while the caller runs
# (then the kernels rightly leave it alone): here every other thread gets the other CPU.
cpus = sorted(os.sched_getaffinity(0))
os.sched_setaffinity(0, {cpus[0]})
for tid in os.listdir("/proc/self/task"):
    if int(tid) != threading.get_native_id():
        os.sched_setaffinity(int(tid), {cpus[1]})
team = pool = 0
for _ in range(50):
    time.sleep(0.2)  # torch's threads asleep: the pool
    before = nl3dmm.render.pool_counts()
    assert torch.equal(nl3dmm.rasterize(pos, tri, (128, 128)), want)
    pool += nl3dmm.render.pool_counts()[1] > before[1]
    big.mul_(1.0)  # a parallel torch op: its threads poll for the next one
    before = nl3dmm.render.pool_counts()
    assert torch.equal(nl3dmm.rasterize(pos, tri, (128, 128)), want)
    team += nl3dmm.render.pool_counts()[0] > before[0]
    if team >= 3 and pool >= 3:
        print("ok")
        break
else:
    print("team", team, "pool", pool)
"""


def test_a_running_openmp_team_takes_the_call():
    """Right after a parallel torch op, torch's OpenMP threads are still running (polling for
    the next op): the kernels borrow them instead of waking their own pool, which would share
    a core with them; after a pause they sleep, and the pool runs the call. Same bits either
    way (the rasters are compared with the first). NL3DMM_POOL_OMP=0 makes it fail."""
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("one CPU: no second thread to borrow")
    _run_script(_TEAM_SCRIPT, OMP_NUM_THREADS="2")
