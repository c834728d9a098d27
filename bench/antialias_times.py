"""Wall time of the CPU antialias backward alone (gradients to colour and positions) on the
peers' paper scene, B = 1: median / best of 15 calls after 3 warm-ups, each after an untimed 50 ms pause (the
table in bench/results/overlap-2026-12-02.md). Run it with two builds in turn.

    python bench/antialias_times.py 512      # image size
"""
import sys
from pathlib import Path

import torch

import nl3dmm

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent / "peers"))
from pause_timing import describe, times_after_pauses  # noqa: E402
from peer_scene import PeerScene  # noqa: E402

size = int(sys.argv[1])
scene = PeerScene(1, size)
pos = scene.pos.clone().requires_grad_(True)
rast = nl3dmm.rasterize(pos.detach(), scene.tri, (size, size), cull_backfaces=False, backend="cpu")
colour = torch.rand(1, size, size, 3, requires_grad=True)
image = nl3dmm.antialias(colour, rast, pos, scene.tri, backend="cpu")
grad = torch.randn_like(image)
times = times_after_pauses(lambda: torch.autograd.grad(image, (colour, pos), grad, retain_graph=True), 15, 0.05)
print(f"antialias backward {size}²: {describe(times)} ms")
