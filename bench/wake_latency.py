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
import sys
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parent))
import torch
from paper_scene import Scene
from pause_timing import describe, times_after_pauses
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
    out[name] = describe(times_after_pauses(fn, 30, PAUSE))
print(json.dumps(out))
