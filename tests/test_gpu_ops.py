"""Every op on a CUDA device, on both GPU backends, against the CPU backend: part of the first
device minutes (bench/gpu/acceptance.sh runs `pytest -m gpu`).

test_cuda.py and test_triton.py take rasterize -> interpolate -> sample_texture onto a device;
this file adds what came later: clipping (a random soup with vertices behind the eye),
antialias, interpolate_derivatives, mip-mapped sample_texture and render_textured's fused
pass, forward and backward, on `cuda` (NL3DMM_CUDA_UNVERIFIED=1: these are the tests that
would verify it) and on `triton`. Triangle ids equal the CPU backend's; every output and
gradient agrees within 1e-5 of its largest value in float32 (1e-4 for gradients summed from
many terms: pos, attributes, texture) and 1e-10 in float64; two runs are bit-identical.

The same comparison runs without a device through Triton's interpreter (not marked gpu), so
this file's own code is exercised on every machine.
"""
from __future__ import annotations

import pytest
import torch

import nl3dmm

from meshes import assert_rel_close, random_soup

H, W = 29, 37
TOL = {torch.float32: 1e-5, torch.float64: 1e-10}
SUMMED = {"d pos", "d attr", "d uv_attr", "d tex", "d tex (mip)", "d texture"}  # 10x TOL


def every_op(backend: str, device: str, dtype: torch.dtype, seed: int) -> dict[str, torch.Tensor]:
    """Each op once, forward and backward, on a random soup (overlapping, perspective, a vertex
    behind the eye in every image); every output and gradient, on the CPU."""
    gen = torch.Generator().manual_seed(seed)
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    pos, tri = random_soup(2, 40, 70, dtype)
    torch.random.set_rng_state(state)

    def rand(*shape):
        return torch.rand(*shape, generator=gen, dtype=dtype).to(device).requires_grad_(True)

    pos = pos.to(device).requires_grad_(True)
    tri = tri.to(device)
    attr, uv_attr = rand(2, 40, 3), rand(40, 2)
    tex, texture = rand(2, 16, 16, 3), rand(1, 8, 8, 3)
    background, mask = rand(2, H, W, 3), rand(2, H, W)
    out = {}
    rast = nl3dmm.rasterize(pos, tri, (H, W), backend=backend)
    out["rast"] = rast
    out["colour"] = colour = nl3dmm.interpolate(attr, rast, tri, backend=backend)
    out["antialias"] = nl3dmm.antialias(colour, rast, pos, tri, backend=backend)
    uv = nl3dmm.interpolate(uv_attr, rast, tri, backend=backend)
    uv_da = nl3dmm.interpolate_derivatives(uv_attr, rast, tri, pos.detach(), backend=backend)
    out["uv_da"] = uv_da
    out["mip"] = nl3dmm.sample_texture(tex, uv, "wrap", backend=backend, uv_da=uv_da * 6)
    out["image"], out["weight"], _ = nl3dmm.render_textured(
        pos, tri, uv_attr, texture, (H, W), background=background, mask=mask, backend=backend)
    loss = sum((o * torch.rand(o.shape, generator=gen, dtype=dtype).to(device)).sum()
               for name, o in out.items() if name != "rast")
    loss.backward()
    grads = {"d pos": pos, "d attr": attr, "d uv_attr": uv_attr, "d tex (mip)": tex,
             "d texture": texture, "d background": background, "d mask": mask}
    out.update({name: leaf.grad for name, leaf in grads.items()})
    return {name: value.detach().cpu() for name, value in out.items()}


def compare(backend: str, device: str, dtype: torch.dtype, seed: int) -> None:
    expected = every_op("cpu", "cpu", dtype, seed)
    first = every_op(backend, device, dtype, seed)
    again = every_op(backend, device, dtype, seed)
    assert torch.equal(first["rast"][..., 3], expected["rast"][..., 3]), f"{backend}: triangle ids differ"
    blended = (expected["antialias"] != expected["colour"]).any(-1).sum()
    assert int(blended) > 20, "the soup should blend along its silhouettes"
    for name, value in expected.items():
        tol = TOL[dtype] * (10 if name in SUMMED and dtype == torch.float32 else 1)
        assert_rel_close(first[name], value, tol, f"{backend} on {device}: {name}")
        assert torch.equal(again[name], first[name]), f"{backend} on {device}: {name} differs between runs"


def test_every_op_through_the_triton_interpreter_matches_cpu(seed):
    """This file's comparison, run here: Triton's interpreter on the CPU (float64)."""
    pytest.importorskip("triton")
    compare("triton", "cpu", torch.float64, seed)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("backend", ["cuda", "triton"])
def test_every_op_on_a_gpu_matches_cpu(monkeypatch, seed, backend, dtype):
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device on this machine")
    monkeypatch.setenv("NL3DMM_CUDA_UNVERIFIED", "1")
    compare(backend, "cuda", dtype, seed)
