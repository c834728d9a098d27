"""Wall time of the CPU rasterize forward and of its backward alone (torch.autograd.grad of
the raster) on the peers' paper scene, each call after an untimed pause (the peers protocol's
50 ms; 0 for back to back): median / best / spread / p90 of 31 calls after 3 warm-ups. Run it with two
builds in turn (bench/results/pool-2026-12-06.md).

    python bench/raster_pause_times.py 1 512 [PAUSE_S]      # batch, image size
"""
import sys
from pathlib import Path

import torch

import nl3dmm

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent / "peers"))
from pause_timing import describe, times_after_pauses  # noqa: E402
from peer_scene import PeerScene  # noqa: E402

batch, size = (int(a) for a in sys.argv[1:3])
pause = float(sys.argv[3]) if len(sys.argv) > 3 else 0.05
scene = PeerScene(batch, size)
pos = scene.pos.clone().requires_grad_(True)


def forward() -> torch.Tensor:
    return nl3dmm.rasterize(pos, scene.tri, (size, size), cull_backfaces=False, backend="cpu")


rast = forward()
grad = torch.randn_like(rast)
grad[..., 3] = 0


def backward() -> None:
    torch.autograd.grad(rast, pos, grad, retain_graph=True)


line = [f"{name} {describe(times_after_pauses(call, 31, pause))} ms"
        for name, call in (("rasterize", forward), ("rasterize backward", backward))]
print(f"B={batch} {size}² pause {pause * 1e3:.0f} ms: " + " | ".join(line))
