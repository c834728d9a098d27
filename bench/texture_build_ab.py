"""sample_texture forward and forward+backward (CPU backend, paper scene uvs, B = 8 and 64, median
of 15 after 3 warm-ups) with whichever nl3dmm build the interpreter imports; run it with two
builds alternately to compare them (bench/results/README.md, 2026-12-02).

    python bench/texture_build_ab.py REPO_ROOT    # REPO_ROOT: where bench/paper_scene.py is
"""
import sys, time, statistics, json
sys.path.insert(0, sys.argv[1] + "/bench")
import torch
from paper_scene import Scene
import nl3dmm
out = {}
for B in (8, 64):
    s = Scene(B)
    pos, tex, rast, uv, image = s.forward("cpu")
    uv = uv.detach()
    texr = s.tex.clone().requires_grad_(True)
    def fwd():
        nl3dmm.sample_texture(s.tex, uv, backend="cpu")
    def fb():
        nl3dmm.sample_texture(texr, uv, backend="cpu").sum().backward()
    for name, fn in (("tex fwd", fwd), ("tex fwd+bwd", fb)):
        for _ in range(3): fn()
        t = []
        for _ in range(15):
            a = time.perf_counter(); fn(); t.append((time.perf_counter() - a) * 1e3)
        out[f"{name} B{B}"] = round(statistics.median(t), 2)
print(json.dumps(out))
