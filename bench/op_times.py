"""Time of each autograd op of the peers' forward+backward chain (render_textured on the paper
scene, bench/peers/peer_scene.py), from torch's profiler: self CPU ms per call, averaged over
10 calls, each after an untimed 50 ms pause as in the peers comparison. Run it with two builds
in turn to see which op a change moved (bench/results/overlap-2026-12-02.md).

    python bench/op_times.py 1 512      # batch, image size
"""
import sys
import time
from pathlib import Path

import torch
from torch.profiler import profile

sys.path.insert(0, str(Path(__file__).resolve().parent / "peers"))
from peer_scene import PeerScene  # noqa: E402
from peer_nl3dmm import Ours  # noqa: E402

batch, size = (int(a) for a in sys.argv[1:3])
scene = PeerScene(batch, size)
ours = Ours(scene)
pos = scene.pos.clone().requires_grad_(True)
tex = scene.tex.clone().requires_grad_(True)
for _ in range(3):
    ours._image(pos, tex).backward(scene.grad_image)
with profile() as prof:
    for _ in range(10):
        time.sleep(0.05)
        ours._image(pos, tex).backward(scene.grad_image)
ops = {e.key: e.self_cpu_time_total / e.count / 1e3 for e in prof.key_averages() if e.key.startswith("_")}
print(" | ".join(f"{k} {v:.2f}" for k, v in ops.items()))
