"""Each step of the textured chain timed alone, each after its own untimed pause of PAUSE
seconds: rasterize -> interpolate -> sample_texture -> the loss sum -> backward (paper scene,
B = BATCH, 224 x 224, CPU backend; median / best ms of 25). Shows which step pays a thread
wake-up after a pause (bench/results/pool-2026-12-02.md).

    PAUSE=0.05 python bench/chain_steps.py
"""
import os
import statistics
import sys
import time
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parent))
from paper_scene import Scene
import nl3dmm

PAUSE = float(os.environ.get("PAUSE", "0.05"))
s = Scene(int(os.environ.get("BATCH", "1")))
times = {k: [] for k in ("rasterize", "interpolate", "sample_texture", "sum", "backward")}


def step(name, fn):
    time.sleep(PAUSE)
    a = time.perf_counter()
    out = fn()
    times[name].append((time.perf_counter() - a) * 1e3)
    return out


for _ in range(25):
    pos = s.pos.clone().requires_grad_(True)
    tex = s.tex.clone().requires_grad_(True)
    rast = step("rasterize", lambda: nl3dmm.rasterize(pos, s.tri, (s.size, s.size), cull_backfaces=True, backend="cpu"))
    uv = step("interpolate", lambda: nl3dmm.interpolate(s.uv, rast, s.tri, backend="cpu"))
    image = step("sample_texture", lambda: nl3dmm.sample_texture(tex, uv, backend="cpu"))
    loss = step("sum", lambda: image.sum())
    step("backward", lambda: loss.backward())
print({k: f"{statistics.median(v):.2f} / {min(v):.2f}" for k, v in times.items()})
