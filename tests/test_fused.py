"""render_textured: the fused rasterize -> interpolate -> sample_texture -> composite.

Against the unfused chain of the same backend (fresh random soups each run, NaN-poisoned
outputs): the image bit-equal on the CPU, the CUDA kernels on the host harness (plain and
ASan+UBSan) and the Triton interpreter, in float32 and float64; the gradients to the texture,
the background, the raster (hence pos) and the pixels' uv (hence the uv attributes) bit-equal
too, because the fused backward rounds to the image's dtype exactly where the unfused chain
holds a tensor (colour gradient g * m, pixel uv gradient) and sums the texture gradient in the
same order (CPU) or in the same exact fixed point (CUDA, Triton). The mask multiplier's
gradient is summed over channels in float64 by the kernel and in the dtype by torch's autograd,
so it is compared within GRAD_TOL (relative to its largest value). Through autograd
(nl3dmm.render_textured, fused vs fused=False), every input's gradient within GRAD_TOL; against
the float64 reference within TOL; gradcheck on a tiny float64 case; bad inputs; and
render_face's output unchanged by the fusion.
"""
from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

import cuda_host
import nl3dmm
from cuda_host import HostCudaBackend
from meshes import assert_rel_close, jittered_grid, min_edge_distance, random_soup
from nl3dmm.render import reference
from nl3dmm.render.backends import get_backend
from nl3dmm.render.backends.base import Backend

DTYPES = [torch.float32, torch.float64]
TOL = {torch.float32: 1e-5, torch.float64: 1e-12}       # vs the float64 reference
GRAD_TOL = {torch.float32: 1e-5, torch.float64: 1e-12}  # float sums in another order
B, H, W, V, F = 2, 13, 17, 40, 70
CPU = get_backend("cpu")


@pytest.fixture(scope="module")
def host_drivers():
    return {variant: cuda_host.build(variant) for variant in ("plain", "asan")}


def _backend(name, host_drivers=None):
    if name.startswith("cuda-host"):
        variant = name.split("-")[-1]
        return HostCudaBackend(host_drivers[variant], workers=2, chunk=7)
    if name == "triton":
        pytest.importorskip("triton")
    return get_backend(name)


def _case(dtype, attr_batched, tex_batched, with_background, with_mask):
    # Degenerate and w < 0 triangles included. Since clipping draws the latter, a soup now and
    # then covers every pixel (seed 2117891692); the comparisons need empty pixels too, so such
    # a draw is replaced by a fresh one.
    for _ in range(50):
        pos, tri = random_soup(B, V, F, dtype)
        ids = CPU.rasterize(pos, tri, H, W, False)[..., 3]
        if bool((ids > 0).any()) and bool((ids == 0).any()):
            break
    else:
        raise AssertionError("50 random soups in a row drew no pixel or every pixel: random_soup "
                             "or the rasterizer changed (replay with NL3DMM_TEST_SEED)")
    attr = (torch.rand(B if attr_batched else 1, V, 2, dtype=torch.float64) * 1.6 - 0.3).to(dtype)
    tex = torch.randn(B if tex_batched else 1, 5, 7, 3, dtype=dtype)
    background = torch.randn(B, H, W, 3, dtype=dtype) if with_background else None
    mask = torch.rand(B, H, W, dtype=dtype) if with_mask else None
    return pos, tri, attr, tex, background, mask


def _unfused(backend, rast, tri, attr, attr_batched, tex, tex_batched, background, mask, boundary, grad):
    """The chain of separate kernels, composited in torch as render_face does, and its
    gradients by the same rules as autograd applies to that composite."""
    dtype = rast.dtype
    uv = backend.interpolate(attr, attr_batched, rast, tri)
    colour = backend.sample_texture(tex, tex_batched, uv, boundary)
    coverage = (rast[..., 3] > 0).to(dtype)
    weight = (coverage if mask is None else coverage * mask)[..., None]
    behind = torch.zeros_like(colour) if background is None else background
    image = colour * weight + behind * (1 - weight)
    grad_tex, grad_uv = backend.sample_texture_backward(tex, tex_batched, uv, boundary, (grad * weight).contiguous())
    _, grad_rast = backend.interpolate_backward(attr, attr_batched, rast, tri, grad_uv)
    grad_mask = ((grad * colour).sum(-1) - (grad * behind).sum(-1)) * coverage
    return {"image": image, "grad_tex": grad_tex, "grad_uv": grad_uv, "grad_rast": grad_rast,
            "grad_background": grad * (1 - weight), "grad_mask": grad_mask}


def _fused(backend, rast, tri, attr, attr_batched, tex, tex_batched, background, mask, boundary, grad):
    B_, H_, W_, _ = rast.shape
    out = torch.full((B_, H_, W_, tex.shape[3]), float("nan"), dtype=rast.dtype)
    image = backend.render_textured(rast, tri, attr, attr_batched, tex, tex_batched, background, mask,
                                    boundary, out=out)
    grad_tex, grad_background, grad_mask, grad_rast, grad_uv = backend.render_textured_backward(
        rast, tri, attr, attr_batched, tex, tex_batched, background, mask, boundary, grad,
        background is not None, mask is not None, True)
    result = {"image": image, "grad_tex": grad_tex, "grad_uv": grad_uv, "grad_rast": grad_rast}
    if background is not None:
        result["grad_background"] = grad_background
    if mask is not None:
        result["grad_mask"] = grad_mask
    return result


def _compare_with_unfused(backend, dtype, boundary, attr_batched, tex_batched, with_background, with_mask):
    pos, tri, attr, tex, background, mask = _case(dtype, attr_batched, tex_batched, with_background, with_mask)
    # The CPU's raster for every backend: rasterize is not what is tested here (the
    # interpreted Triton rasterizer is the slowest part of a Triton case).
    rast = CPU.rasterize(pos, tri, H, W, False)
    assert bool((rast[..., 3] > 0).any()) and bool((rast[..., 3] == 0).any()), "need covered and empty pixels"
    grad = torch.randn(B, H, W, 3, dtype=dtype)
    args = (rast, tri, attr, attr_batched, tex, tex_batched, background, mask, boundary, grad)
    expected, actual = _unfused(backend, *args), _fused(backend, *args)
    for name, value in actual.items():
        assert not bool(value.isnan().any()), f"{name}: NaN left (an element was not written)"
        if name == "grad_mask":
            assert_rel_close(value, expected[name], GRAD_TOL[dtype], name)
        else:
            assert torch.equal(value, expected[name]), f"{name} is not bit-equal to the unfused chain's"
    # The rest of the backward is shared: the same kernels on equal inputs.
    grad_pos = CPU.rasterize_backward(pos, tri, rast, actual["grad_rast"])
    assert bool(torch.isfinite(grad_pos).all()) and bool((grad_pos != 0).any())
    return actual


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ["cpu", "triton", "cuda-host-plain"])
def test_bit_equal_to_the_unfused_chain(seed, host_drivers, name, dtype):
    backend = _backend(name, host_drivers)
    _compare_with_unfused(backend, dtype, "clamp", True, False, True, True)
    _compare_with_unfused(backend, dtype, "wrap", False, True, False, False)


@pytest.mark.parametrize("boundary", ["clamp", "zero", "wrap"])
def test_boundary_modes_and_batching_on_the_cpu(seed, boundary):
    backend = get_backend("cpu")
    for dtype in DTYPES:
        for attr_batched, tex_batched in ((False, False), (True, True)):
            _compare_with_unfused(backend, dtype, boundary, attr_batched, tex_batched, True, True)


def test_cuda_sources_under_asan_ubsan(seed, host_drivers):
    """The CUDA kernels under AddressSanitizer + UndefinedBehaviorSanitizer, bit-equal to the
    plain build and to the unfused chain (which the sanitizer sees too)."""
    plain = _backend("cuda-host-plain", host_drivers)
    asan = _backend("cuda-host-asan", host_drivers)
    for dtype in DTYPES:
        torch.manual_seed(seed + int(dtype == torch.float64))
        sanitized = _compare_with_unfused(asan, dtype, "zero", True, True, True, True)
        torch.manual_seed(seed + int(dtype == torch.float64))
        for name, value in _compare_with_unfused(plain, dtype, "zero", True, True, True, True).items():
            assert torch.equal(value, sanitized[name]), f"{name}: ASan build differs from the plain build"


def test_every_backend_agrees_with_the_cpu(seed, host_drivers):
    """The fused image of each backend vs the CPU's on one raster: the CUDA kernels bit-equal
    (the same textured_pixel.h), Triton's within TOL (its restatement of the math)."""
    pos, tri, attr, tex, background, mask = _case(torch.float64, True, False, True, True)
    rast = CPU.rasterize(pos, tri, H, W, True)
    images = {name: _backend(name, host_drivers).render_textured(rast, tri, attr, True, tex, False, background,
                                                                 mask, "clamp")
              for name in ("cpu", "triton", "cuda-host-plain")}
    assert torch.equal(images["cuda-host-plain"], images["cpu"])
    assert_rel_close(images["triton"], images["cpu"], TOL[torch.float64], "triton vs cpu image")


# ---- through autograd ------------------------------------------------------------------------

def _inputs(dtype, requires_grad=True):
    pos, tri, attr, tex, background, mask = _case(dtype, False, True, True, True)
    leaves = [t.clone().requires_grad_(requires_grad) for t in (pos, attr[0], tex, background, mask)]
    return tri, leaves


def _render(leaves, tri, backend, fused):
    pos, uv, tex, background, mask = leaves
    return nl3dmm.render_textured(pos, tri, uv, tex, (H, W), cull_backfaces=True, boundary="clamp",
                                  background=background, mask=mask, backend=backend, fused=fused)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ["cpu", "triton"])
def test_autograd_matches_the_unfused_ops(seed, name, dtype):
    if name == "triton":
        pytest.importorskip("triton")
    tri, leaves = _inputs(dtype)
    weights = [torch.randn(B, H, W, 3, dtype=dtype), torch.randn(B, H, W, dtype=dtype)]
    grads, outputs = {}, {}
    for fused in (True, False):
        for leaf in leaves:
            leaf.grad = None
        image, mask, rast = _render(leaves, tri, name, fused)
        ((image * weights[0]).sum() + (mask * weights[1]).sum()).backward()
        outputs[fused] = (image, mask, rast)
        grads[fused] = [leaf.grad.clone() for leaf in leaves]
    for a, b in zip(outputs[True], outputs[False]):
        assert torch.equal(a, b), "fused forward differs from the unfused ops'"
    for what, a, b in zip(("pos", "uv", "texture", "background", "mask"), grads[True], grads[False]):
        assert_rel_close(a, b, GRAD_TOL[dtype], f"d/d {what}")


@pytest.mark.parametrize("dtype", DTYPES)
def test_matches_the_reference(seed, dtype):
    """The reference backend runs the unfused chain in pure torch: the CPU's fused result and
    gradients within TOL (float32 against float64 inputs' reference)."""
    tri, leaves = _inputs(dtype)
    ref_leaves = [leaf.detach().double().requires_grad_(True) for leaf in leaves]
    grad = torch.randn(B, H, W, 3, dtype=torch.float64)
    image, _, rast = _render(leaves, tri, "cpu", None)
    (image * grad.to(dtype)).sum().backward()
    ref_image, _, ref_rast = _render(ref_leaves, tri, "reference", None)
    (ref_image * grad).sum().backward()
    assert torch.equal(rast[..., 3], ref_rast[..., 3].to(dtype)), "triangle ids differ"
    assert_rel_close(image, ref_image, TOL[dtype], "image")
    # pos moves barycentrics of near-degenerate triangles steeply: float32 keeps ~1e-4 there.
    tolerance = {torch.float32: 1e-3, torch.float64: 1e-9}[dtype]
    for what, leaf, ref in zip(("pos", "uv", "texture", "background", "mask"), leaves, ref_leaves):
        assert_rel_close(leaf.grad, ref.grad, tolerance if what == "pos" else TOL[dtype] * 10, f"d/d {what}")


def test_gradcheck_tiny_case(seed):
    """Every input at once on a grid mesh whose pixel centres stay clear of its edges (no
    visibility change under the perturbation) and uv clear of texel-centre lines."""
    for _ in range(200):
        pos, tri = jittered_grid(1, 3, 2)
        if min_edge_distance(pos, tri, reference.rasterize(pos, tri, (5, 6))) > 0.006:
            break
    else:
        raise RuntimeError("could not draw a grid with pixel centres clear of edges")
    uv = torch.rand(pos.shape[1], 2, dtype=torch.float64) * 0.8 + 0.1
    tex = torch.randn(1, 3, 4, 2, dtype=torch.float64)
    background = torch.randn(1, 5, 6, 2, dtype=torch.float64)
    mask = torch.rand(1, 5, 6, dtype=torch.float64)
    inputs = tuple(t.requires_grad_(True) for t in (pos, uv, tex, background, mask))

    def image(pos, uv, tex, background, mask):
        return nl3dmm.render_textured(pos, tri, uv, tex, (5, 6), boundary="zero", background=background,
                                      mask=mask, backend="cpu", fused=True)[0]

    assert torch.autograd.gradcheck(image, inputs, eps=1e-7, atol=1e-6)


# ---- bad input ---------------------------------------------------------------------------

def test_bad_inputs_give_clear_errors(seed):
    pos, tri, attr, tex, background, mask = _case(torch.float32, False, False, True, True)
    uv = attr[0]

    def call(**changes):
        args = dict(pos=pos, tri=tri, uv=uv, texture=tex, resolution=(H, W), background=background,
                    mask=mask, backend="cpu")
        args.update(changes)
        return nl3dmm.render_textured(**args)

    with pytest.raises(ValueError, match="uv must have 2 channels"):
        call(uv=torch.rand(V, 3))
    with pytest.raises(ValueError, match="uv has 39 vertices but pos has 40"):
        call(uv=uv[:-1])
    with pytest.raises(TypeError, match="attr is torch.float64 but rast is torch.float32"):
        call(uv=uv.double())
    with pytest.raises(ValueError, match="tex contains NaN"):
        call(texture=tex.clone().index_fill_(1, torch.tensor([2]), float("nan")))
    with pytest.raises(ValueError, match=r"background must have shape \(B, H, W, C\)"):
        call(background=background[..., :2])
    with pytest.raises(TypeError, match="background is torch.float64"):
        call(background=background.double())
    with pytest.raises(ValueError, match="background contains NaN"):
        call(background=background.clone().fill_(float("nan")))
    with pytest.raises(ValueError, match=r"mask must have shape \(B, H, W\)"):
        call(mask=mask[:1])
    with pytest.raises(ValueError, match="mask contains NaN or Inf"):
        call(mask=mask.clone().fill_(float("inf")))
    with pytest.raises(ValueError, match="boundary"):
        call(boundary="mirror")
    with pytest.raises(ValueError, match="the reference backend has no fused kernel"):
        call(backend="reference", fused=True)
    with pytest.raises(ValueError, match="tri"):
        call(tri=tri[:, :2])


def test_deferred_validation_names_the_input(seed):
    """validate="deferred" counts bad values without a host sync and reports them, naming the
    op and the input, at check_pending()."""
    pos, tri, attr, tex, background, mask = _case(torch.float32, False, False, True, True)
    for name, bad in (("background", background.clone().fill_(float("inf"))),
                      ("mask", mask.clone().fill_(float("nan")))):
        args = {"background": background, "mask": mask, name: bad}
        nl3dmm.render_textured(pos, tri, attr, tex, (H, W), validate="deferred", **args)
        with pytest.raises(ValueError, match=f"render_textured: {name} contains NaN or Inf"):
            nl3dmm.render.check_pending()
    nl3dmm.render_textured(pos, tri, attr, tex, (H, W), background=background, mask=mask, validate="deferred")
    nl3dmm.render.check_pending()  # clean inputs: nothing to report


def test_bypassed_validation_gives_a_clear_error():
    """A tri changed behind the validation cache after the forward: the fused backward kernel
    checks the indices it follows and the backend names the problem (in a child process, so a
    segfault would fail the test rather than kill pytest)."""
    script = textwrap.dedent("""
        import torch, nl3dmm
        pos = torch.tensor([[[-1, -1, 0, 1], [1, -1, 0, 1], [-1, 1, 0, 1.0]]], requires_grad=True)
        tri = torch.tensor([[0, 1, 2]], dtype=torch.int32)
        image, _, _ = nl3dmm.render_textured(pos, tri, torch.rand(3, 2), torch.rand(1, 4, 4, 3), (8, 8))
        tri.numpy()[0, 1] = 10 ** 6
        try:
            image.sum().backward()
        except ValueError as exc:
            print("ValueError:", exc)
        else:
            print("no error")
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"child died with {done.returncode}: {done.stderr[-2000:]}"
    assert "render_textured_backward: tri holds a vertex index outside 0..V-1" in done.stdout, done.stdout


# ---- the model's render ------------------------------------------------------------------

def test_render_face_unchanged_by_the_fusion(seed, sfm):
    from nl3dmm.face.camera import pose_para_to_m
    from nl3dmm.face.rendering import render_face

    size = 96
    rng = np.random.default_rng(seed)
    v = sfm.mean_shape.astype(np.float64)
    scale = 0.8 * size / np.ptp(v[:, :2], axis=0).max()
    centre = v[:, :2].mean(0)
    poses = [[*rng.uniform(-0.3, 0.3, 3), size / 2 + 0.5 - scale * centre[0],
              size / 2 + 0.5 - scale * centre[1], 0, scale] for _ in range(2)]
    m = torch.from_numpy(np.stack([pose_para_to_m(p) for p in poses])).float()
    vertices = torch.from_numpy(v)[None].float().expand(2, -1, -1).contiguous()
    texture = torch.rand(2, 64, 64, 3)
    background = torch.rand(2, size, size, 3)
    face_mask = (torch.rand(2, size, size) > 0.2).float()
    grads, outputs = {}, {}
    for fused in (None, False):
        leaves = [t.clone().requires_grad_(True) for t in (vertices, m, texture, background)]
        out = render_face(*leaves[:3], sfm.triangles, sfm.uv, size, leaves[3], face_mask, backend="cpu",
                          fused=fused)
        (out["image"] * torch.linspace(-1, 1, 3)).sum().backward()
        outputs[fused] = out
        grads[fused] = [leaf.grad for leaf in leaves]
    assert float(outputs[None]["mask"].mean()) > 0.1
    for key in ("image", "mask", "rast"):
        assert torch.equal(outputs[None][key], outputs[False][key]), f"render_face {key} changed"
    for what, a, b in zip(("vertices", "m", "texture", "background"), grads[None], grads[False]):
        assert_rel_close(a, b, GRAD_TOL[torch.float32], f"render_face d/d {what}")


@pytest.mark.parametrize("dtype", DTYPES)
def test_cpu_coverage_is_torchs(seed, dtype):
    """render_textured's mask comes from the backend's coverage: on the CPU a kernel of the
    thread pool, elsewhere the torch expression; they must agree on every pixel."""
    pos, tri = random_soup(3, 60, 90, dtype)
    rast = nl3dmm.rasterize(pos, tri, (33, 47), backend="cpu")
    assert 0 < int((rast[..., 3] > 0).sum()) < rast[..., 3].numel(), "need covered and empty pixels"
    got = get_backend("cpu").coverage(rast)
    assert got.dtype == dtype and got.shape == rast.shape[:3]
    assert torch.equal(got, Backend.coverage(get_backend("cpu"), rast))
