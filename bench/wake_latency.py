"""Where the CPU renderer's variance comes from (issue 15): rasterize and the textured
forward+backward on the paper scene (B = 1, 224 x 224, CPU backend), 30 calls each after 3
warm-ups, each call after an untimed pause of PAUSE seconds (the peers protocol's 50 ms; 0 for
back to back). Prints median, best, median/best and the 90th percentile. Vary the environment,
not the code: OMP_NUM_THREADS, GOMP_SPINCOUNT, OMP_WAIT_POLICY, a competing load.

    PAUSE=0.05 OMP_NUM_THREADS=2 python bench/wake_latency.py
    (results: bench/results/variance-2026-12-02.md)
"""
import json
import os
import statistics
import sys
import time
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parent))
import torch
from paper_scene import Scene
import nl3dmm

PAUSE = float(os.environ.get("PAUSE", "0.05"))
s = Scene(1)
def fb():
    pos, tex, rast, uv, image = s.forward("cpu", requires_grad=True)
    image.sum().backward()
def rast():
    nl3dmm.rasterize(s.pos, s.tri, (224, 224), cull_backfaces=True, backend="cpu")
out = {"threads": torch.get_num_threads(), "pause_s": PAUSE}
for name, fn in (("rasterize", rast), ("fwd+bwd", fb)):
    for _ in range(3): fn()
    t = []
    for _ in range(30):
        time.sleep(PAUSE)
        a = time.perf_counter(); fn(); t.append((time.perf_counter() - a) * 1e3)
    med, best = statistics.median(t), min(t)
    out[name] = f"median {med:.2f} best {best:.2f} spread {med/best:.2f} p90 {sorted(t)[26]:.2f}"
print(json.dumps(out))
