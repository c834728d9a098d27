"""sample_texture: CPU kernels vs the reference in every boundary mode, gradcheck, poisoning.

Tolerance: max-abs error relative to the largest reference value, 1e-5 for float32 and
1e-12 for float64.
"""
from __future__ import annotations

import pytest
import torch

import nl3dmm
from nl3dmm.render import reference
from nl3dmm.render.backends.cpu import CpuBackend

from meshes import assert_rel_close

TOL = {torch.float32: 1e-5, torch.float64: 1e-12}


def _uv_away_from_kinks(B, H, W, Ht, Wt, lo=-0.3, hi=1.3, margin=0.05, dtype=torch.float64):
    """uv whose bilinear position sits at least `margin` texels from a texel-centre line,
    where the bilinear surface has kinks (finite differences there are meaningless)."""
    uv = torch.rand(B, H, W, 2, dtype=torch.float64) * (hi - lo) + lo
    scale = torch.tensor([Wt, Ht], dtype=torch.float64)
    x = uv * scale - 0.5
    frac = x - x.floor()
    frac = frac.clamp(margin, 1 - margin)
    return ((x.floor() + frac + 0.5) / scale).to(dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("boundary", ["clamp", "zero", "wrap"])
@pytest.mark.parametrize("shared", [False, True])
def test_forward_and_backward_match_reference(seed, dtype, boundary, shared):
    B, H, W, Ht, Wt, C = 3, 13, 17, 7, 9, 4
    tex = torch.randn(1 if shared else B, Ht, Wt, C, dtype=dtype)
    uv = _uv_away_from_kinks(B, H, W, Ht, Wt, dtype=dtype)
    grad_out = torch.randn(B, H, W, C, dtype=torch.float64)

    t_cpu, uv_cpu = tex.clone().requires_grad_(True), uv.clone().requires_grad_(True)
    out = nl3dmm.sample_texture(t_cpu, uv_cpu, boundary, backend="cpu")
    out.backward(grad_out.to(dtype))
    t_ref, uv_ref = tex.double().requires_grad_(True), uv.double().requires_grad_(True)
    ref = reference.sample_texture(t_ref, uv_ref, boundary)
    ref.backward(grad_out)

    assert out.shape == (B, H, W, C) and out.dtype == dtype
    assert_rel_close(out, ref, TOL[dtype], f"sample_texture[{boundary}]")
    assert_rel_close(t_cpu.grad, t_ref.grad, TOL[dtype], "d out / d tex")
    assert_rel_close(uv_cpu.grad, uv_ref.grad, TOL[dtype] * 10, "d out / d uv")


def test_texel_centres_return_texels(seed):
    tex = torch.randn(1, 5, 6, 3, dtype=torch.float64)
    j, i = torch.meshgrid(torch.arange(6), torch.arange(5), indexing="xy")
    uv = torch.stack([(j.double() + 0.5) / 6, (i.double() + 0.5) / 5], -1)[None]
    assert torch.allclose(nl3dmm.sample_texture(tex, uv), tex, atol=1e-12)


def test_boundary_modes_outside_the_texture():
    tex = torch.arange(1.0, 5.0).reshape(1, 2, 2, 1)
    far_left = torch.tensor([[[[-5.0, 0.25]]]])
    assert nl3dmm.sample_texture(tex, far_left, "clamp").item() == 1.0
    assert nl3dmm.sample_texture(tex, far_left, "zero").item() == 0.0
    assert nl3dmm.sample_texture(tex, torch.tensor([[[[1.25, 0.25]]]]), "wrap").item() == 1.0


def test_every_pixel_written(seed):
    tex = torch.randn(2, 8, 8, 3)
    uv = torch.rand(2, 10, 12, 2)
    out = torch.full((2, 10, 12, 3), float("nan"))
    CpuBackend().sample_texture(tex, True, uv, "clamp", out=out)
    assert not torch.isnan(out).any()


@pytest.mark.parametrize("boundary", ["clamp", "zero", "wrap"])
def test_gradcheck(seed, boundary):
    tex = torch.randn(2, 4, 5, 2, dtype=torch.float64, requires_grad=True)
    uv = _uv_away_from_kinks(2, 3, 4, 4, 5).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda t, u: nl3dmm.sample_texture(t, u, boundary, backend="cpu"),
                                    (tex, uv), eps=1e-7, atol=1e-6)
