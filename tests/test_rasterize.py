"""rasterize: the CPU kernels against the pure-torch reference, plus the properties the
reference cannot show by itself (fill rule, tie rule, determinism, every pixel written).

Tolerance: float32 kernels vs the float64 reference, max-abs error relative to the largest
reference value <= 1e-5; float64 kernels <= 1e-12. Triangle ids must match exactly.
"""
from __future__ import annotations

import pytest
import torch

import nl3dmm
from nl3dmm.render import reference
from nl3dmm.render.backends.cpu import CpuBackend

from meshes import assert_rel_close, jittered_grid, min_edge_distance, random_soup

TOL = {torch.float32: 1e-5, torch.float64: 1e-12}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("cull", [False, True])
@pytest.mark.parametrize("perspective", [False, True])
def test_forward_matches_reference(seed, dtype, cull, perspective):
    pos, tri = random_soup(3, 40, 60, dtype, perspective)
    H, W = 29, 37  # odd, non-square: catches row/column mix-ups
    rast = nl3dmm.rasterize(pos, tri, (H, W), cull, backend="cpu")
    ref = reference.rasterize(pos.double(), tri, (H, W), cull)
    assert rast.dtype == dtype and rast.shape == (3, H, W, 4)
    assert torch.equal(rast[..., 3].long(), ref[..., 3].long()), "triangle ids differ"
    covered = (ref[..., 3] > 0).float().mean().item()
    assert 0.2 < covered < 1.0, f"test mesh covers {covered:.0%} of pixels: not a useful case"
    assert_rel_close(rast[..., :3], ref[..., :3], TOL[dtype], "raster (b0, b1, depth)")


def test_every_pixel_written(seed):
    """The kernel must write all of a poisoned output, empty pixels included."""
    pos, tri = random_soup(2, 30, 20, torch.float32)
    out = torch.full((2, 16, 24, 4), float("nan"))
    CpuBackend().rasterize(pos, tri, 16, 24, False, out=out)
    assert not torch.isnan(out).any()
    assert (out[..., 3] == 0).any() and (out[..., 3] > 0).any()
    assert (out[out[..., 3] == 0] == 0).all(), "empty pixels must be all zero"


def test_shared_edges_are_watertight(seed):
    """A jittered grid covering the screen: every pixel inside it is drawn exactly once, so
    there are no cracks between triangles (a pixel on a shared edge goes to one of them)."""
    pos, tri = jittered_grid(1, 7, 5, torch.float32, jitter=0.0, perspective=False)
    # Snap vertices to pixel centres of a 64x64 image so that many pixel centres lie exactly
    # on shared edges, where the fill rule decides.
    pos[..., :2] = ((pos[..., :2] + 1) * 32).round().add(0.5).div(32).sub(1).clamp(-1, 1)
    rast = nl3dmm.rasterize(pos, tri, (64, 64), backend="cpu")
    ids = nl3dmm.rasterize(pos, tri, (64, 64), backend="reference")[..., 3]
    assert torch.equal(rast[..., 3], ids)
    # Coverage per triangle, summed, equals the number of covered pixels only if no pixel
    # is claimed by two triangles; and the interior must be fully covered.
    per_triangle = []
    for f in range(tri.shape[0]):
        alone = nl3dmm.rasterize(pos, tri[f:f + 1], (64, 64), backend="cpu")
        per_triangle.append(alone[..., 3] > 0)
    claims = torch.stack(per_triangle).sum(0)
    assert claims.max() == 1, "a pixel is covered by two triangles of one surface"
    x0, y0 = int(((pos[0, :, 0].min() + 1) * 32).ceil()), int(((pos[0, :, 1].min() + 1) * 32).ceil())
    x1, y1 = int(((pos[0, :, 0].max() + 1) * 32).floor()), int(((pos[0, :, 1].max() + 1) * 32).floor())
    interior = rast[0, y0 + 1:y1 - 1, x0 + 1:x1 - 1, 3]
    assert (interior > 0).all(), "a crack: an interior pixel is not covered"


def test_depth_ties_go_to_smaller_triangle_index():
    quad = torch.tensor([[[-1, -1, 0, 1], [1, -1, 0, 1], [1, 1, 0, 1], [-1, 1, 0, 1]]], dtype=torch.float32)
    tri = torch.tensor([[0, 1, 2], [0, 2, 3], [0, 1, 2], [0, 2, 3]], dtype=torch.int32)
    rast = nl3dmm.rasterize(quad, tri.flip(0).contiguous(), (8, 8), backend="cpu")
    # flipped order: triangles 0, 1 are the copies of original 3, 2; the smaller ids win.
    assert set(rast[..., 3].unique().tolist()) == {1.0, 2.0}


def test_nearest_fragment_wins_and_depth_is_clipped():
    tri = torch.tensor([[0, 1, 2]], dtype=torch.int32)
    base = torch.tensor([[-1, -1, 0, 1], [3, -1, 0, 1], [-1, 3, 0, 1]], dtype=torch.float32)
    near, far = base.clone(), base.clone()
    near[:, 2], far[:, 2] = -0.5, 0.5
    pos = torch.cat([far, near]).unsqueeze(0)
    both = torch.tensor([[0, 1, 2], [3, 4, 5]], dtype=torch.int32)
    rast = nl3dmm.rasterize(pos, both, (4, 4), backend="cpu")
    assert (rast[..., 3] == 2).all() and torch.allclose(rast[..., 2], torch.tensor(-0.5))
    clipped = base.clone()
    clipped[:, 2] = 1.5  # beyond the far plane
    assert (nl3dmm.rasterize(clipped[None], tri, (4, 4), backend="cpu")[..., 3] == 0).all()


def test_backface_culling_follows_winding():
    ccw = torch.tensor([[[-1, -1, 0, 1], [1, -1, 0, 1], [-1, 1, 0, 1]]], dtype=torch.float32)
    tri = torch.tensor([[0, 1, 2]], dtype=torch.int32)
    cw = tri[:, [0, 2, 1]].contiguous()
    assert (nl3dmm.rasterize(ccw, tri, (8, 8), cull_backfaces=True)[..., 3] > 0).any()
    assert (nl3dmm.rasterize(ccw, cw, (8, 8), cull_backfaces=True)[..., 3] == 0).all()
    assert (nl3dmm.rasterize(ccw, cw, (8, 8), cull_backfaces=False)[..., 3] > 0).any()


def test_degenerate_and_behind_camera_triangles_are_skipped():
    pos = torch.tensor([[[-1, -1, 0, 1], [1, -1, 0, 1], [-1, 1, 0, 1], [0.5, 0.5, 0, -1.0]]])
    tri = torch.tensor([[0, 0, 1], [0, 1, 1], [0, 1, 3]], dtype=torch.int32)
    rast = nl3dmm.rasterize(pos, tri, (8, 8), backend="cpu")
    assert not torch.isnan(rast).any() and (rast == 0).all()


def test_row_zero_is_clip_y_minus_one():
    """A triangle in the lower half of clip space (y < 0) must land in the first rows."""
    pos = torch.tensor([[[-1, -1, 0, 1], [1, -1, 0, 1], [-1, -0.5, 0, 1]]])
    rast = nl3dmm.rasterize(pos, torch.tensor([[0, 1, 2]], dtype=torch.int32), (8, 4))
    rows = (rast[0, :, :, 3] > 0).any(1).nonzero().flatten().tolist()
    assert rows and max(rows) <= 1


@pytest.mark.parametrize("batch", [1, 2])
def test_bit_identical_across_runs_and_threads(seed, batch):
    """B = 2: one thread per image with 1-2 threads, triangles split across 3-4 threads.
    B = 1: the backward's scatter in two bands of rows, whichever threads run them."""
    pos, tri = random_soup(batch, 200, 400, torch.float32)
    before = nl3dmm.render.num_threads()
    try:
        results = []
        for threads in (1, 2, 3, 4, 1):
            nl3dmm.render.set_num_threads(threads)
            p = pos.clone().requires_grad_(True)
            r = nl3dmm.rasterize(p, tri, (45, 61))
            (r[..., :3] * torch.linspace(-1, 1, 3)).sum().backward()
            results.append((r.detach(), p.grad))
        for r, g in results[1:]:
            assert torch.equal(r, results[0][0])
            assert torch.equal(g, results[0][1])
    finally:
        nl3dmm.render.set_num_threads(before)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_backward_matches_reference(seed, dtype):
    pos, tri = random_soup(2, 40, 60, dtype)
    H, W = 23, 31
    grad_out = torch.randn(2, H, W, 4, dtype=torch.float64)
    p_cpu = pos.clone().requires_grad_(True)
    nl3dmm.rasterize(p_cpu, tri, (H, W), backend="cpu").backward(grad_out.to(dtype))
    p_ref = pos.double().requires_grad_(True)
    reference.rasterize(p_ref, tri, (H, W)).backward(grad_out)
    assert_rel_close(p_cpu.grad, p_ref.grad, 1e-4 if dtype == torch.float32 else 1e-10, "d rast / d pos")


def _smooth_grid(batch: int, nx: int, ny: int, H: int, W: int, perspective: bool = True):
    """A grid whose pixel centres stay clear of triangle edges, so that gradcheck's
    perturbations never change which triangle covers a pixel."""
    for _ in range(200):
        pos, tri = jittered_grid(batch, nx, ny, perspective=perspective)
        rast = reference.rasterize(pos, tri, (H, W))
        # Snapping moves edges by up to 1/256 px; gradcheck's eps moves them ~1e-5 px.
        if min_edge_distance(pos, tri, rast) > 0.006:
            return pos, tri
    raise RuntimeError("could not draw a grid with pixels clear of edges")


@pytest.mark.parametrize("perspective", [False, True])
def test_gradcheck_pos(seed, perspective):
    pos, tri = _smooth_grid(2, 3, 2, 9, 11, perspective)
    pos.requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda p: nl3dmm.rasterize(p, tri, (9, 11), backend="cpu")[..., :3], (pos,),
        eps=1e-6, atol=1e-7, rtol=1e-5)
