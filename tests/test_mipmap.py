"""Mip-mapped texture sampling: interpolate_derivatives (uv's screen derivatives), the mip
pyramid (engine/render/mipmap.py) and sample_texture(..., uv_da=...) (trilinear).

Kernels against the float64 reference on fresh random inputs: forward and gradients within
1e-12 of the largest reference value in float64 and 1e-5 in float32 (uv and uv_da gradients,
which carry factors of the texture size, 1e-11 / 1e-4); gradcheck in float64; NaN-poisoned
outputs must be overwritten. The CUDA source runs through the host harness (tests/cuda_host.py)
against the CPU kernels: forward bit-equal, gradients within 1e-6 (f32) / 1e-12 (f64). The
Triton kernels run through Triton's interpreter on CPU tensors (as tests/test_triton.py):
forward bit-equal to the CPU kernels, gradients within the reference tolerances.
"""
from __future__ import annotations

import math

import pytest
import torch

import nl3dmm
from meshes import assert_rel_close, jittered_grid, random_soup
from nl3dmm.render import mipmap, reference
from nl3dmm.render.backends.cpu import CpuBackend

TOL = {torch.float32: 1e-5, torch.float64: 1e-12}
BOUNDARIES = ["clamp", "zero", "wrap"]


# ---- interpolate_derivatives ------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shared", [False, True])
def test_interpolate_derivatives_match_reference(seed, dtype, shared):
    pos, tri = random_soup(3, 40, 60, dtype)
    rast = nl3dmm.rasterize(pos, tri, (21, 27))
    B, H, W, _ = rast.shape
    attr = torch.randn(1 if shared else B, 40, 3, dtype=dtype)
    grad_out = torch.randn(B, H, W, 6, dtype=torch.float64)
    a_cpu = attr.clone().requires_grad_(True)
    out = nl3dmm.interpolate_derivatives(a_cpu, rast, tri, pos, backend="cpu")
    out.backward(grad_out.to(dtype))
    a_ref = attr.double().requires_grad_(True)
    ref = reference.interpolate_derivatives(a_ref, rast.double(), tri, pos.double())
    ref.backward(grad_out)
    assert out.shape == (B, H, W, 6) and out.dtype == dtype
    assert_rel_close(out, ref, TOL[dtype], "interpolate_derivatives")
    assert_rel_close(a_cpu.grad, a_ref.grad, TOL[dtype], "d out_da / d attr")
    assert (out[rast[..., 3] == 0] == 0).all()


def test_interpolate_derivatives_are_the_screen_derivatives(seed):
    """Against central differences of interpolate itself, taken by shifting the image by
    +-h pixels (moving the vertices instead of the pixel centres): a check independent of the
    formula. Perspective mesh, so the barycentrics are not linear in screen space."""
    pos, tri = jittered_grid(2, 4, 3, perspective=True)
    H, W, h = 24, 30, 1e-4
    attr = torch.randn(2, pos.shape[1], 2, dtype=torch.float64)
    out_da = nl3dmm.interpolate_derivatives(attr, nl3dmm.rasterize(pos, tri, (H, W)), tri, pos)

    def shifted(dx: float, dy: float):
        p = pos.clone()  # screen x = (x/w + 1) W/2: the pixel centre moves by +dx if x/w moves by -2dx/W
        p[..., 0] -= 2 * dx / W * p[..., 3]
        p[..., 1] -= 2 * dy / H * p[..., 3]
        rast = nl3dmm.rasterize(p, tri, (H, W))
        return nl3dmm.interpolate(attr, rast, tri), rast[..., 3]

    (xp, ip), (xm, im) = shifted(h, 0), shifted(-h, 0)
    (yp, jp), (ym, jm) = shifted(0, h), shifted(0, -h)
    ids = nl3dmm.rasterize(pos, tri, (H, W))[..., 3]
    same = (ids > 0) & (ip == ids) & (im == ids) & (jp == ids) & (jm == ids)
    assert same.sum() > 0.5 * ids.numel()
    fd = torch.stack([(xp - xm) / (2 * h), (yp - ym) / (2 * h)], -1).reshape(*xp.shape[:3], 4)
    err = (fd - out_da)[same].abs().max().item()
    assert err <= 1e-6 * out_da[same].abs().max().item(), f"finite differences differ by {err:.2e}"


def test_interpolate_derivatives_gradcheck(seed):
    pos, tri = jittered_grid(2, 3, 2)
    rast = nl3dmm.rasterize(pos, tri, (8, 10))
    attr = torch.randn(2, pos.shape[1], 2, dtype=torch.float64, requires_grad=True)
    shared = torch.randn(pos.shape[1], 2, dtype=torch.float64, requires_grad=True)
    for a in (attr, shared):
        assert torch.autograd.gradcheck(
            lambda x: nl3dmm.interpolate_derivatives(x, rast, tri, pos, backend="cpu"), (a,),
            eps=1e-6, atol=1e-8)


def test_interpolate_derivatives_every_pixel_written(seed):
    pos, tri = random_soup(2, 40, 60, torch.float32)
    rast = nl3dmm.rasterize(pos, tri, (21, 27))
    out = torch.full((2, 21, 27, 6), float("nan"))
    CpuBackend().interpolate_derivatives(torch.randn(2, 40, 3), True, rast, tri, pos, out=out)
    assert not torch.isnan(out).any()


def test_interpolate_derivatives_bad_inputs():
    pos, tri = jittered_grid(2, 3, 2)
    rast = nl3dmm.rasterize(pos, tri, (8, 10))
    attr = torch.randn(2, pos.shape[1], 2, dtype=torch.float64)
    with pytest.raises(ValueError, match="pos must have shape"):
        nl3dmm.interpolate_derivatives(attr, rast, tri, pos[..., :3])
    with pytest.raises(ValueError, match="pos has batch 1"):
        nl3dmm.interpolate_derivatives(attr, rast, tri, pos[:1])
    with pytest.raises(TypeError, match="pos is torch.float32"):
        nl3dmm.interpolate_derivatives(attr, rast, tri, pos.float())
    bad = pos.clone()
    bad[1, 3, 0] = float("nan")
    with pytest.raises(ValueError, match="pos contains NaN"):
        nl3dmm.interpolate_derivatives(attr, rast, tri, bad)


# ---- the pyramid ------------------------------------------------------------------------------

@pytest.mark.parametrize("size", [(8, 8), (7, 5), (1, 9), (6, 13), (1, 1)])
def test_pyramid_shapes_and_mean(seed, size):
    """Level l is max(1, n >> l) a side down to 1 x 1; every level keeps the texture's mean
    (the area weights partition each finer level exactly), so the last one is the mean."""
    tex = torch.rand(2, *size, 3, dtype=torch.float64)
    levels = nl3dmm.mip_levels(tex)
    deepest = max(size).bit_length() - 1
    assert len(levels) == deepest
    for level, m in enumerate(levels, start=1):
        assert m.shape == (2, max(1, size[0] >> level), max(1, size[1] >> level), 3)
        assert torch.allclose(m.mean((1, 2)), tex.mean((1, 2)), atol=1e-14)
    if levels:
        assert levels[-1].shape[1:3] == (1, 1)
    assert len(nl3dmm.mip_levels(tex, max_mip_level=1)) == min(1, deepest)


def test_pyramid_box_and_odd_weights():
    even = torch.arange(16.0, dtype=torch.float64).reshape(1, 4, 4, 1)
    assert torch.equal(nl3dmm.mip_levels(even)[0][0, :, :, 0],
                       torch.tensor([[2.5, 4.5], [10.5, 12.5]], dtype=torch.float64))
    row = torch.tensor([[1.0, 2.0, 4.0, 8.0, 16.0]], dtype=torch.float64).reshape(1, 1, 5, 1)
    # n = 5 -> m = 2: texel 0 covers [0, 2.5), texel 1 covers [2.5, 5), each 2.5 texels wide.
    expected = torch.tensor([(1 + 2 + 0.5 * 4) / 2.5, (0.5 * 4 + 8 + 16) / 2.5], dtype=torch.float64)
    assert torch.allclose(nl3dmm.mip_levels(row)[0][0, 0, :, 0], expected, atol=1e-15)


# ---- trilinear sample_texture -----------------------------------------------------------------

def _kink_free_uv(n: int, size: tuple[int, int], margin: float = 0.03) -> torch.Tensor:
    """n uv points (float64) at least `margin` texels from every texel-centre line of every
    level of a `size` texture, where the bilinear surfaces have kinks."""
    picked = []
    while sum(len(p) for p in picked) < n:
        uv = torch.rand(4 * n, 2, dtype=torch.float64) * 1.4 - 0.2
        ok = torch.ones(4 * n, dtype=torch.bool)
        for level in range(max(size).bit_length()):
            h, w = mipmap.level_shape(*size, level)
            x = uv * torch.tensor([w, h], dtype=torch.float64) - 0.5
            frac = x - x.floor()
            ok &= ((frac > margin) & (frac < 1 - margin)).all(1)
        picked.append(uv[ok])
    return torch.cat(picked)[:n]


def _uv_da(n: int, size: tuple[int, int], lod_range: tuple[float, float], kink_free: bool = False):
    """uv derivatives (n, 4) whose footprint on a `size` texture has lod uniform in lod_range;
    kink_free keeps the lod off integers and the two axes' footprints apart."""
    lod = torch.rand(n, dtype=torch.float64) * (lod_range[1] - lod_range[0]) + lod_range[0]
    if kink_free:
        lod = lod.floor() + 0.1 + 0.8 * (lod - lod.floor())
    angle = torch.rand(n, 2, dtype=torch.float64) * 2 * math.pi
    scale = torch.exp2(lod).unsqueeze(1) * torch.stack([torch.ones(n, dtype=torch.float64),
                                                        0.3 + 0.5 * torch.rand(n, dtype=torch.float64)], 1)
    swap = torch.rand(n) < 0.5  # which screen axis has the longer footprint
    scale = torch.where(swap.unsqueeze(1), scale.flip(1), scale)
    tx, ty = scale * torch.cos(angle), scale * torch.sin(angle)  # texels per pixel step, x and y axes
    h, w = size
    return torch.stack([tx[:, 0] / w, tx[:, 1] / w, ty[:, 0] / h, ty[:, 1] / h], 1)


def _mip_inputs(B, H, W, size, lod_range=(-1.0, 5.0), kink_free=False, dtype=torch.float64):
    n = B * H * W
    uv = _kink_free_uv(n, size).reshape(B, H, W, 2)
    da = _uv_da(n, size, lod_range, kink_free).reshape(B, H, W, 4)
    return uv.to(dtype), da.to(dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("boundary", BOUNDARIES)
@pytest.mark.parametrize("shared", [False, True])
def test_trilinear_matches_reference(seed, dtype, boundary, shared):
    B, H, W, size, C = 2, 9, 11, (13, 20), 3  # odd and even sides; levels 13x20 ... 1x1
    tex = torch.randn(1 if shared else B, *size, C, dtype=dtype)
    uv, da = _mip_inputs(B, H, W, size, dtype=dtype)
    grad_out = torch.randn(B, H, W, C, dtype=torch.float64)

    leaves = [t.clone().requires_grad_(True) for t in (tex, uv, da)]
    out = nl3dmm.sample_texture(leaves[0], leaves[1], boundary, backend="cpu", uv_da=leaves[2])
    out.backward(grad_out.to(dtype))
    refs = [t.double().requires_grad_(True) for t in (tex, uv, da)]
    ref = reference.sample_texture_mip([refs[0], *mipmap.mip_levels(refs[0])], refs[1], refs[2], boundary)
    ref.backward(grad_out)

    assert out.shape == (B, H, W, C) and out.dtype == dtype
    assert_rel_close(out, ref, TOL[dtype], f"trilinear[{boundary}]")
    assert_rel_close(leaves[0].grad, refs[0].grad, TOL[dtype], "d out / d tex (through the pyramid)")
    assert_rel_close(leaves[1].grad, refs[1].grad, TOL[dtype] * 10, "d out / d uv")
    assert_rel_close(leaves[2].grad, refs[2].grad, TOL[dtype] * 10, "d out / d uv_da")


def test_prebuilt_levels_and_max_level(seed):
    tex = torch.randn(1, 32, 24, 2, dtype=torch.float64)
    uv, da = _mip_inputs(1, 6, 7, (32, 24), lod_range=(0.0, 6.0))
    levels = nl3dmm.mip_levels(tex, max_mip_level=2)
    built = nl3dmm.sample_texture(tex, uv, uv_da=da, max_mip_level=2)
    given = nl3dmm.sample_texture(tex, uv, uv_da=da, mip=levels)
    assert torch.equal(built, given)
    assert_rel_close(built, reference.sample_texture_mip([tex, *levels], uv, da), 1e-12, "max_mip_level=2")
    # lod beyond level 2 samples level 2 alone
    far = da * 64
    assert_rel_close(nl3dmm.sample_texture(tex, uv, uv_da=far, mip=levels),
                     reference.sample_texture(levels[1], uv), 1e-12, "clamped to the last level")


@pytest.mark.parametrize("boundary", BOUNDARIES)
def test_gradcheck(seed, boundary):
    size = (7, 10)  # levels 7x10, 3x5, 1x2, 1x1
    tex = torch.randn(2, *size, 2, dtype=torch.float64, requires_grad=True)
    uv, da = _mip_inputs(2, 3, 4, size, lod_range=(0.0, 3.0), kink_free=True)
    uv.requires_grad_(True)
    da.requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda t, u, d: nl3dmm.sample_texture(t, u, boundary, backend="cpu", uv_da=d),
        (tex, uv, da), eps=1e-7, atol=1e-6)


def test_small_footprint_is_plain_bilinear(seed):
    """A footprint of at most one texel samples level 0 alone: the bilinear lookup, bit for bit."""
    tex = torch.randn(2, 16, 12, 3)
    uv = torch.rand(2, 10, 9, 2) * 1.2 - 0.1
    da = _uv_da(2 * 10 * 9, (16, 12), (-6.0, 0.0)).reshape(2, 10, 9, 4).float()
    for backend in ("cpu", "reference"):
        plain = nl3dmm.sample_texture(tex, uv, backend=backend)
        mip = nl3dmm.sample_texture(tex, uv, backend=backend, uv_da=da)
        assert torch.equal(mip, plain), backend


def _checkerboard_plane(resolution: int, texels: int):
    """A perspective quad filling the screen, uv over [0, 1]^2, and a 1-texel checkerboard."""
    w = torch.tensor([1.0, 1.0, 2.5, 2.5], dtype=torch.float64)  # the far edge is 2.5x farther
    xy = torch.tensor([[-1.0, -1.0], [1.0, -1.0], [-1.0, 1.0], [1.0, 1.0]], dtype=torch.float64)
    pos = torch.cat([xy * w[:, None], torch.zeros(4, 1, dtype=torch.float64), w[:, None]], 1)[None].float()
    tri = torch.tensor([[0, 1, 3], [0, 3, 2]], dtype=torch.int32)
    uv_attr = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    rast = nl3dmm.rasterize(pos, tri, (resolution, resolution))
    uv = nl3dmm.interpolate(uv_attr, rast, tri)
    uv_da = nl3dmm.interpolate_derivatives(uv_attr, rast, tri, pos)
    i = torch.arange(texels)
    board = ((i[:, None] + i[None, :]) % 2).float().reshape(1, texels, texels, 1)
    return board, uv, uv_da, rast[..., 3] > 0


def test_checkerboard_far_away_averages_to_grey():
    """1024^2 checkerboard seen at 32x32 (a footprint of 20-80 texels): bilinear lookups alias
    to whatever texels the pixel centres hit; the trilinear lookup gives the average, 0.5."""
    board, uv, uv_da, covered = _checkerboard_plane(32, 1024)
    assert bool(covered.all())
    plain = nl3dmm.sample_texture(board, uv)[covered]
    mip = nl3dmm.sample_texture(board, uv, uv_da=uv_da)[covered]
    ref = reference.sample_texture_mip([board, *nl3dmm.mip_levels(board)], uv, uv_da)[covered]
    assert_rel_close(mip, ref, 1e-5, "checkerboard")
    assert plain.var().item() > 0.01, "the bilinear lookups should alias"
    assert mip.var().item() < 1e-4 * plain.var().item()
    assert abs(mip.mean().item() - 0.5) < 1e-3


def test_every_pixel_written_and_thread_count_free(seed):
    tex = torch.randn(1, 20, 14, 3)
    uv, da = _mip_inputs(2, 7, 8, (20, 14), dtype=torch.float32)
    packed = torch.cat([t.reshape(1, -1, 3) for t in (tex, *nl3dmm.mip_levels(tex))], 1)
    shape = (20, 14, len(nl3dmm.mip_levels(tex)))
    out = torch.full((2, 7, 8, 3), float("nan"))
    cpu = CpuBackend()
    cpu.sample_texture_mip(packed, False, uv, da, "zero", shape, out=out)
    assert not torch.isnan(out).any()
    grad = torch.randn(2, 7, 8, 3)
    threads = nl3dmm.render.num_threads()
    try:
        nl3dmm.render.set_num_threads(1)
        one = cpu.sample_texture_mip_backward(packed, False, uv, da, "zero", shape, grad)
        nl3dmm.render.set_num_threads(2)
        two = cpu.sample_texture_mip_backward(packed, False, uv, da, "zero", shape, grad)
    finally:
        nl3dmm.render.set_num_threads(threads)
    assert all(torch.equal(a, b) for a, b in zip(one, two))


def test_bad_inputs():
    tex = torch.randn(1, 8, 8, 3)
    uv = torch.rand(2, 4, 5, 2)
    da = torch.rand(2, 4, 5, 4) * 0.1
    with pytest.raises(ValueError, match="uv_da must have shape"):
        nl3dmm.sample_texture(tex, uv, uv_da=da[..., :2])
    with pytest.raises(ValueError, match="uv_da must have shape"):
        nl3dmm.sample_texture(tex, uv, uv_da=da[:1])
    with pytest.raises(TypeError, match="uv_da is torch.float64"):
        nl3dmm.sample_texture(tex, uv, uv_da=da.double())
    nan = da.clone()
    nan[1, 2, 3, 1] = float("nan")
    with pytest.raises(ValueError, match="uv_da contains NaN"):
        nl3dmm.sample_texture(tex, uv, uv_da=nan)
    with pytest.raises(ValueError, match="uv \\(or uv_da\\) holds NaN"):  # the kernel's own check
        nl3dmm.sample_texture(tex, uv, uv_da=nan, validate="deferred")
    with pytest.raises(ValueError, match="uv_da contains NaN"):  # and the deferred count
        nl3dmm.render.check_pending()
    with pytest.raises(ValueError, match="need uv_da"):
        nl3dmm.sample_texture(tex, uv, mip=nl3dmm.mip_levels(tex))
    with pytest.raises(ValueError, match="need uv_da"):
        nl3dmm.sample_texture(tex, uv, max_mip_level=2)
    with pytest.raises(ValueError, match="not both"):
        nl3dmm.sample_texture(tex, uv, uv_da=da, mip=nl3dmm.mip_levels(tex), max_mip_level=1)
    for bad_level in (-1, True, 1.5):
        with pytest.raises(ValueError, match="max_mip_level"):
            nl3dmm.sample_texture(tex, uv, uv_da=da, max_mip_level=bad_level)
    levels = nl3dmm.mip_levels(tex)
    with pytest.raises(ValueError, match="level 2"):
        nl3dmm.sample_texture(tex, uv, uv_da=da, mip=[levels[0], levels[0]])
    with pytest.raises(ValueError, match="only 3"):
        nl3dmm.sample_texture(tex, uv, uv_da=da, mip=levels + [levels[-1]])
    with pytest.raises(TypeError, match="list of tensors"):
        nl3dmm.sample_texture(tex, uv, uv_da=da, mip=levels[0])
    poisoned = [m.clone() for m in levels]
    poisoned[1][0, 0, 0, 0] = float("inf")
    with pytest.raises(ValueError, match="mip contains NaN or Inf"):
        nl3dmm.sample_texture(tex, uv, uv_da=da, mip=poisoned)


# ---- the CUDA source on the host harness (tests/cuda_host.py) ---------------------------------

GRAD_TOL = {torch.float32: 1e-6, torch.float64: 1e-12}


@pytest.fixture(scope="module")
def harness():
    import cuda_host
    return cuda_host


def _mip_case(seed_value, dtype, batched, size=(13, 20), B=2, H=9, W=11, C=3):
    torch.manual_seed(seed_value)
    tex = torch.randn(B if batched else 1, *size, C, dtype=dtype)
    levels = nl3dmm.mip_levels(tex)
    packed = torch.cat([t.reshape(tex.shape[0], -1, C) for t in (tex, *levels)], 1).contiguous()
    uv, da = _mip_inputs(B, H, W, size, dtype=dtype)
    return packed, (size[0], size[1], len(levels)), uv, da, torch.randn(B, H, W, C, dtype=dtype)


def _derivative_case(seed_value, dtype, batched):
    torch.manual_seed(seed_value)
    pos, tri = random_soup(2, 40, 60, dtype)  # degenerate and w < 0 triangles included
    rast = nl3dmm.rasterize(pos, tri, (21, 27))
    attr = torch.randn(2 if batched else 1, 40, 3, dtype=dtype)
    return attr, rast, tri, pos, torch.randn(2, 21, 27, 6, dtype=dtype)


def _assert_grad_close(actual, expected, what):
    assert not bool(actual.isnan().any()), f"{what}: NaN left in the harness output"
    scale = expected.abs().max().item()
    assert scale > 0, f"{what}: an all-zero gradient proves nothing"
    err = (actual.double() - expected.double()).abs().max().item()
    assert err <= GRAD_TOL[expected.dtype] * scale, f"{what}: relative error {err / scale:.2e}"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("batched", [False, True])
@pytest.mark.parametrize("boundary", BOUNDARIES)
def test_cuda_source_trilinear_matches_cpu(harness, seed, dtype, batched, boundary):
    host = harness.HostCudaBackend(harness.build("plain"), workers=3, chunk=5)
    packed, shape, uv, da, grad = _mip_case(seed, dtype, batched)
    cpu = CpuBackend()
    poisoned = torch.full((*uv.shape[:3], packed.shape[2]), float("nan"), dtype=dtype)
    out = host.sample_texture_mip(packed, batched, uv, da, boundary, shape, out=poisoned)
    assert torch.equal(out, cpu.sample_texture_mip(packed, batched, uv, da, boundary, shape))
    expected = cpu.sample_texture_mip_backward(packed, batched, uv, da, boundary, shape, grad)
    actual = host.sample_texture_mip_backward(packed, batched, uv, da, boundary, shape, grad)
    for name, a, e in zip(("grad_tex", "grad_uv", "grad_uv_da"), actual, expected):
        _assert_grad_close(a, e, name)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("batched", [False, True])
def test_cuda_source_derivatives_match_cpu(harness, seed, dtype, batched):
    host = harness.HostCudaBackend(harness.build("plain"), workers=3, chunk=5)
    attr, rast, tri, pos, grad = _derivative_case(seed, dtype, batched)
    cpu = CpuBackend()
    poisoned = torch.full((*rast.shape[:3], 6), float("nan"), dtype=dtype)
    out = host.interpolate_derivatives(attr, batched, rast, tri, pos, out=poisoned)
    assert torch.equal(out, cpu.interpolate_derivatives(attr, batched, rast, tri, pos))
    _assert_grad_close(host.interpolate_derivatives_backward(attr, batched, rast, tri, pos, grad),
                       cpu.interpolate_derivatives_backward(attr, batched, rast, tri, pos, grad), "grad_attr")


def test_cuda_source_mip_gradients_bit_identical_for_any_schedule(harness, seed):
    packed, shape, uv, da, grad = _mip_case(seed, torch.float32, False)
    attr, rast, tri, pos, grad_da = _derivative_case(seed, torch.float32, False)
    runs = []
    for workers, chunk in ((1, 1 << 20), (4, 1), (3, 7)):
        host = harness.HostCudaBackend(harness.build("plain"), workers=workers, chunk=chunk)
        runs.append([*host.sample_texture_mip_backward(packed, False, uv, da, "wrap", shape, grad),
                     host.interpolate_derivatives_backward(attr, False, rast, tri, pos, grad_da)])
    for other in runs[1:]:
        assert all(torch.equal(a.view(torch.int32), b.view(torch.int32)) for a, b in zip(runs[0], other))


@pytest.mark.parametrize("variant", ["asan", "tsan"])
def test_cuda_source_mip_under_sanitizers(harness, seed, variant):
    host = harness.HostCudaBackend(harness.build(variant), workers=4, chunk=1)
    packed, shape, uv, da, grad = _mip_case(seed, torch.float32, True, B=2, H=5, W=6)
    attr, rast, tri, pos, grad_da = _derivative_case(seed, torch.float32, True)
    cpu = CpuBackend()
    assert torch.equal(host.sample_texture_mip(packed, True, uv, da, "zero", shape),
                       cpu.sample_texture_mip(packed, True, uv, da, "zero", shape))
    host.sample_texture_mip_backward(packed, True, uv, da, "zero", shape, grad)
    assert torch.equal(host.interpolate_derivatives(attr, True, rast, tri, pos),
                       cpu.interpolate_derivatives(attr, True, rast, tri, pos))
    host.interpolate_derivatives_backward(attr, True, rast, tri, pos, grad_da)


# ---- Triton, through its interpreter on CPU tensors -------------------------------------------

def _triton_backend():
    pytest.importorskip("triton")
    from nl3dmm.render.backends.triton import TritonBackend
    return TritonBackend()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("boundary", BOUNDARIES)
def test_triton_trilinear_matches_cpu_and_reference(seed, dtype, boundary):
    _triton_backend()
    shared = boundary == "wrap"  # batched and shared textures, without doubling the cases
    B, H, W, size, C = 2, 6, 7, (13, 20), 3
    tex = torch.randn(1 if shared else B, *size, C, dtype=dtype)
    uv, da = _mip_inputs(B, H, W, size, dtype=dtype)
    grad_out = torch.randn(B, H, W, C, dtype=torch.float64)
    results = {}
    for backend in ("triton", "cpu"):
        leaves = [t.clone().requires_grad_(True) for t in (tex, uv, da)]
        out = nl3dmm.sample_texture(leaves[0], leaves[1], boundary, backend=backend, uv_da=leaves[2])
        out.backward(grad_out.to(dtype))
        results[backend] = [out.detach()] + [t.grad for t in leaves]
    refs = [t.double().requires_grad_(True) for t in (tex, uv, da)]
    ref = reference.sample_texture_mip([refs[0], *mipmap.mip_levels(refs[0])], refs[1], refs[2], boundary)
    ref.backward(grad_out)
    triton_out, cpu_out = results["triton"], results["cpu"]
    assert torch.equal(triton_out[0], cpu_out[0]), "forward is not bit-equal to the CPU kernel"
    for i, (what, tol) in enumerate((("out", 1), ("d tex", 1), ("d uv", 10), ("d uv_da", 10)),):
        expected = ref.detach() if i == 0 else refs[i - 1].grad
        assert_rel_close(triton_out[i], expected, TOL[dtype] * tol, f"triton {what} vs reference")
        assert_rel_close(triton_out[i], cpu_out[i], TOL[dtype] * tol, f"triton {what} vs cpu")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shared", [False, True])
def test_triton_derivatives_match_cpu_and_reference(seed, dtype, shared):
    _triton_backend()
    pos, tri = random_soup(2, 30, 40, dtype)
    rast = nl3dmm.rasterize(pos, tri, (16, 20))
    attr = torch.randn(1 if shared else 2, 30, 3, dtype=dtype)
    grad_out = torch.randn(2, 16, 20, 6, dtype=torch.float64)
    results = {}
    for backend in ("triton", "cpu"):
        a = attr.clone().requires_grad_(True)
        out = nl3dmm.interpolate_derivatives(a, rast, tri, pos, backend=backend)
        out.backward(grad_out.to(dtype))
        results[backend] = (out.detach(), a.grad)
    a_ref = attr.double().requires_grad_(True)
    ref = reference.interpolate_derivatives(a_ref, rast.double(), tri, pos.double())
    ref.backward(grad_out)
    assert torch.equal(results["triton"][0], results["cpu"][0]), "forward is not bit-equal to the CPU kernel"
    assert_rel_close(results["triton"][0], ref, TOL[dtype], "triton out_da vs reference")
    assert_rel_close(results["triton"][1], a_ref.grad, TOL[dtype], "triton d attr vs reference")


@pytest.mark.slow  # 84 s in the interpreter; the Triton gradients are compared with the CPU's by default
def test_triton_gradcheck_and_every_pixel_written(seed):
    backend = _triton_backend()
    size = (6, 5)
    tex = torch.randn(1, *size, 1, dtype=torch.float64, requires_grad=True)
    uv, da = _mip_inputs(1, 2, 3, size, lod_range=(0.0, 2.0), kink_free=True)
    uv.requires_grad_(True)
    da.requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda t, u, d: nl3dmm.sample_texture(t, u, "clamp", backend="triton", uv_da=d),
        (tex, uv, da), eps=1e-7, atol=1e-6, nondet_tol=1e-12)
    pos, tri = jittered_grid(1, 2, 2)
    rast = nl3dmm.rasterize(pos, tri, (6, 7))
    attr = torch.randn(1, pos.shape[1], 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda a: nl3dmm.interpolate_derivatives(a, rast, tri, pos, backend="triton"), (attr,),
        eps=1e-6, atol=1e-8, nondet_tol=1e-12)
    out = torch.full((1, 6, 7, 4), float("nan"), dtype=torch.float64)
    backend.interpolate_derivatives(attr.detach(), False, rast, tri, pos, out=out)
    assert not torch.isnan(out).any() and (out[rast[..., 3] == 0] == 0).all()
    packed = torch.cat([t.reshape(1, -1, 1) for t in (tex.detach(), *nl3dmm.mip_levels(tex.detach()))], 1)
    out = torch.full((1, 2, 3, 1), float("nan"), dtype=torch.float64)
    backend.sample_texture_mip(packed, False, uv.detach(), da.detach(), "zero", (*size, 2), out=out)
    assert not torch.isnan(out).any()
