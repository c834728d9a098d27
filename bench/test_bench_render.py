"""pytest-benchmark suites of the rendering ops on the paper mesh at 224 x 224.

    pytest bench --benchmark-json=bench/results/<name>.json      # time everything
    pytest bench --benchmark-disable                            # run each case once (CI)
    python bench/summarize.py bench/results/<name>.json         # markdown table with ratios

Ids read `<op>[<backend>-B<batch>-]`. The reference backend is timed at B = 1 and 8 only
(B = 64 takes minutes per round); compare it against cpu at the same B.
"""
from __future__ import annotations

import pytest
import torch

import nl3dmm

BATCHES = [1, 8, 64]
# TODO(issue 4): add "triton" (and "cuda") for runs on a GPU machine, with the scene on the
# GPU. On CPU tensors the Triton backend runs through Triton's interpreter, whose timings mean
# nothing (about 0.1 s per small launch), so it is left out of the CPU suite.
BACKENDS = ["cpu", "reference"]


def _cases():
    for backend in BACKENDS:
        for batch in BATCHES:
            if backend == "reference" and batch > 8:
                continue
            yield pytest.param(backend, batch, id=f"{backend}-B{batch}-")


def _run(benchmark, fn, batch):
    rounds = 3 if batch >= 64 else 10
    benchmark.pedantic(fn, rounds=rounds, iterations=1, warmup_rounds=1)


@pytest.mark.parametrize("backend, batch", list(_cases()))
def test_rasterize(benchmark, scene, backend, batch):
    _run(benchmark, lambda: nl3dmm.rasterize(scene.pos, scene.tri, (224, 224), True, backend=backend), batch)


@pytest.mark.parametrize("backend, batch", list(_cases()))
def test_interpolate(benchmark, scene, backend, batch):
    rast = nl3dmm.rasterize(scene.pos, scene.tri, (224, 224), True)
    _run(benchmark, lambda: nl3dmm.interpolate(scene.uv, rast, scene.tri, backend=backend), batch)


@pytest.mark.parametrize("backend, batch", list(_cases()))
def test_sample_texture(benchmark, scene, backend, batch):
    rast = nl3dmm.rasterize(scene.pos, scene.tri, (224, 224), True)
    uv = nl3dmm.interpolate(scene.uv, rast, scene.tri)
    _run(benchmark, lambda: nl3dmm.sample_texture(scene.tex, uv, backend=backend), batch)


@pytest.mark.parametrize("backend, batch", list(_cases()))
def test_forward(benchmark, scene, backend, batch):
    """rasterize + interpolate + sample_texture, no autograd graph."""
    def run():
        with torch.no_grad():
            return scene.forward(backend)
    _run(benchmark, run, batch)


@pytest.mark.parametrize("backend, batch", list(_cases()))
def test_forward_backward(benchmark, scene, backend, batch):
    """The full chain with gradients to the vertices and the texture."""
    grad = torch.randn(batch, 224, 224, 3, generator=torch.Generator().manual_seed(1))

    def run():
        pos, tex, _, _, image = scene.forward(backend, requires_grad=True)
        image.backward(grad)
        return pos.grad, tex.grad
    _run(benchmark, run, batch)


@pytest.mark.parametrize("backend, batch", list(_cases()))
def test_backward_only(benchmark, scene, backend, batch):
    """Backward of the chain alone (forward outside the timed region)."""
    grad = torch.randn(batch, 224, 224, 3, generator=torch.Generator().manual_seed(1))

    def setup():
        _, _, _, _, image = scene.forward(backend, requires_grad=True)
        return (image,), {}

    benchmark.pedantic(lambda image: image.backward(grad), setup=setup,
                       rounds=3 if batch >= 64 else 10, iterations=1)
