"""interpolate: CPU kernels vs the reference (forward, backward), gradcheck, poisoning.

Tolerance: max-abs error relative to the largest reference value, 1e-5 for float32 and
1e-12 for float64.
"""
from __future__ import annotations

import pytest
import torch

import nl3dmm
from nl3dmm.render import reference
from nl3dmm.render.backends.cpu import CpuBackend

from meshes import assert_rel_close, jittered_grid, random_soup

TOL = {torch.float32: 1e-5, torch.float64: 1e-12}


def _raster(dtype, batch=3, H=21, W=27):
    pos, tri = random_soup(batch, 40, 60, dtype)
    return nl3dmm.rasterize(pos, tri, (H, W), backend="cpu"), tri


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shared", [False, True])
def test_forward_and_backward_match_reference(seed, dtype, shared):
    rast, tri = _raster(dtype)
    B, H, W, _ = rast.shape
    attr = torch.randn((1 if shared else B), 40, 5, dtype=dtype)
    grad_out = torch.randn(B, H, W, 5, dtype=torch.float64)

    a_cpu, r_cpu = attr.clone().requires_grad_(True), rast.clone().requires_grad_(True)
    out = nl3dmm.interpolate(a_cpu, r_cpu, tri, backend="cpu")
    out.backward(grad_out.to(dtype))
    a_ref, r_ref = attr.double().requires_grad_(True), rast.double().requires_grad_(True)
    ref = reference.interpolate(a_ref, r_ref, tri)
    ref.backward(grad_out)

    assert out.shape == (B, H, W, 5) and out.dtype == dtype
    assert_rel_close(out, ref, TOL[dtype], "interpolate")
    assert_rel_close(a_cpu.grad, a_ref.grad, TOL[dtype], "d out / d attr")
    assert_rel_close(r_cpu.grad, r_ref.grad, TOL[dtype], "d out / d rast")
    assert (r_cpu.grad[..., 2:] == 0).all(), "depth and id channels get no gradient"


def test_unbatched_attr_accepted(seed):
    rast, tri = _raster(torch.float32, batch=2)
    attr = torch.randn(40, 2)
    a = attr.clone().requires_grad_(True)
    out = nl3dmm.interpolate(a, rast, tri)
    out.sum().backward()
    assert torch.equal(out, nl3dmm.interpolate(attr[None].expand(2, -1, -1).contiguous(), rast, tri))
    assert a.grad.shape == (40, 2)


def test_every_pixel_written(seed):
    rast, tri = _raster(torch.float32, batch=2)
    attr = torch.randn(2, 40, 3)
    out = torch.full((2, 21, 27, 3), float("nan"))
    CpuBackend().interpolate(attr, True, rast, tri.int(), out=out)
    assert not torch.isnan(out).any()
    assert (out[rast[..., 3] == 0] == 0).all()


def test_interpolating_depth_reproduces_raster_depth(seed):
    """With w = 1 (the paper's weak perspective) the raster's depth channel and depth
    interpolated as an attribute are the same quantity computed two ways."""
    pos, tri = random_soup(2, 40, 60, torch.float64, perspective=False)
    pos[..., 3] = 1.0  # the soup's vertex behind the eye too: its triangles are drawn, clipped
    rast = nl3dmm.rasterize(pos, tri, (19, 23))
    depth = nl3dmm.interpolate(pos[..., 2:3].contiguous(), rast, tri)
    hit = rast[..., 3] > 0
    assert torch.allclose(depth[..., 0][hit], rast[..., 2][hit], atol=1e-12)


def test_gradcheck(seed):
    pos, tri = jittered_grid(2, 3, 2)
    rast = nl3dmm.rasterize(pos, tri, (8, 10))
    attr = torch.randn(2, pos.shape[1], 3, dtype=torch.float64, requires_grad=True)
    bary = rast[..., :2].clone().requires_grad_(True)
    rest = rast[..., 2:]

    def f(a, b):
        return nl3dmm.interpolate(a, torch.cat([b, rest], -1), tri, backend="cpu")

    assert torch.autograd.gradcheck(f, (attr, bary), eps=1e-6, atol=1e-8)
    shared = torch.randn(pos.shape[1], 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a: f(a, bary.detach()), (shared,), eps=1e-6, atol=1e-8)
