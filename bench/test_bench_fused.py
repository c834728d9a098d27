"""pytest-benchmark suite: render_textured fused vs the chain of separate ops (fused=False), on
the paper scene at 224 x 224 with a background and a mask multiplier, as render_face renders.

    pytest bench/test_bench_fused.py --benchmark-json=bench/results/<name>.json
    python bench/fused_ab.py        # the same cases interleaved A/B in one process (recorded)

Ids read `<op>[<fused|unfused>-B<batch>-]`, CPU backend.
"""
from __future__ import annotations

import pytest
import torch

from paper_scene import Scene

import nl3dmm

BATCHES = [1, 8]
_SCENES: dict[int, "FusedScene"] = {}


class FusedScene(Scene):
    """The paper scene plus a background and a mask multiplier; `render` is the model's chain."""

    def __init__(self, batch: int, dtype=torch.float32, size: int = 224):
        super().__init__(batch, dtype, size)
        gen = torch.Generator().manual_seed(2)
        self.background = torch.rand(batch, size, size, 3, generator=gen, dtype=dtype)
        self.mask = (torch.rand(batch, size, size, generator=gen) > 0.1).to(dtype)
        self.grad = torch.randn(batch, size, size, 3, generator=gen, dtype=dtype)

    def render(self, fused: bool, backend: str = "cpu", requires_grad: bool = False):
        pos = self.pos.clone().requires_grad_(requires_grad)
        tex = self.tex.clone().requires_grad_(requires_grad)
        image, _, _ = nl3dmm.render_textured(pos, self.tri, self.uv, tex, (self.size, self.size), True,
                                             background=self.background, mask=self.mask, backend=backend,
                                             fused=fused)
        return pos, tex, image

    def forward_backward(self, fused: bool, backend: str = "cpu"):
        pos, tex, image = self.render(fused, backend, requires_grad=True)
        image.backward(self.grad)
        return pos.grad, tex.grad


def fused_scene(batch: int) -> FusedScene:
    if batch not in _SCENES:
        _SCENES[batch] = FusedScene(batch)
    return _SCENES[batch]


def _cases():
    for batch in BATCHES:
        for fused in (True, False):
            yield pytest.param(fused, batch, id=f"{'fused' if fused else 'unfused'}-B{batch}-")


@pytest.mark.parametrize("fused, batch", list(_cases()))
def test_textured_forward(benchmark, fused, batch):
    scene = fused_scene(batch)
    with torch.no_grad():
        benchmark.pedantic(lambda: scene.render(fused), rounds=10, iterations=1, warmup_rounds=1)


@pytest.mark.parametrize("fused, batch", list(_cases()))
def test_textured_forward_backward(benchmark, fused, batch):
    scene = fused_scene(batch)
    benchmark.pedantic(lambda: scene.forward_backward(fused), rounds=10, iterations=1, warmup_rounds=1)
