"""Rasterize and the textured forward+backward (rasterize -> interpolate -> sample_texture, then
backward) on the paper scene, CPU backend, median and best of 25 calls after 3 warm-ups, with
whichever nl3dmm build the interpreter imports: run it with two builds' interpreters, alternately,
to compare builds on one machine (bench/results/clip-cost-2026-12-02.md).

    python bench/build_ab.py REPO_ROOT    # REPO_ROOT: where bench/paper_scene.py is
"""
import sys, time, statistics, json
sys.path.insert(0, sys.argv[1] + "/bench")
import torch
from paper_scene import Scene
import nl3dmm
out = {}
for B in (1, 8):
    s = Scene(B)
    def rast():
        nl3dmm.rasterize(s.pos, s.tri, (224, 224), cull_backfaces=True, backend="cpu")
    def fb():
        pos, tex, rast, uv, image = s.forward("cpu", requires_grad=True)
        image.sum().backward()
    for name, fn in (("rasterize", rast), ("fwd+bwd", fb)):
        for _ in range(3): fn()
        t = []
        for _ in range(25):
            a = time.perf_counter(); fn(); t.append((time.perf_counter() - a) * 1e3)
        out[f"{name} B{B}"] = (statistics.median(t), min(t))
print(json.dumps(out))
