"""backend="triton": the Triton kernels (kernels/) against the pure-torch reference and the CPU
backend, forward and backward, plus gradchecks and poisoned output buffers.

Without a GPU the kernels run on CPU tensors through Triton's interpreter, which costs
milliseconds per program, so the cases are small: B = 2, 16 x 20 images, 30 triangles, 8 x 9
textures. test_kernels_compile_for_the_gpu compiles every launch ahead of time for an H100
(no GPU needed) so that the compiled path is checked too; the tests marked gpu run the
compiled kernels where a CUDA device exists.

Tolerances as in the CPU tests: triangle ids exactly equal; values max-abs error relative to
the largest reference value <= 1e-5 (float32) / 1e-12 (float64).
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

try:
    import triton  # noqa: F401  (in extras_require["test"]: CI always installs it)
except ImportError:
    if os.environ.get("CI"):
        raise
    pytest.skip("triton is not installed: pip install -e '.[test]'", allow_module_level=True)

from triton.runtime.jit import JITFunction

import nl3dmm
from nl3dmm.kernels import rasterize as k_rasterize
from nl3dmm.kernels import runtime
from nl3dmm.render import reference
from nl3dmm.render.backends import available_backends, resolve_backend_name
from nl3dmm.render.backends.triton import TritonBackend

from meshes import assert_rel_close, jittered_grid, min_edge_distance, random_soup

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench" / "gpu"))  # static_checks

TOL = {torch.float32: 1e-5, torch.float64: 1e-12}
B, H, W = 2, 16, 20
V, F = 24, 30
TEX_H, TEX_W, C = 8, 9, 3


def _soup(dtype, perspective=True):
    return random_soup(B, V, F, dtype, perspective)


def _uv_away_from_kinks(shape, tex_h=TEX_H, tex_w=TEX_W, lo=-0.3, hi=1.3, margin=0.05,
                        dtype=torch.float64):
    """uv at least `margin` texels from the texel-centre lines where bilinear has kinks."""
    uv = torch.rand(*shape, 2, dtype=torch.float64) * (hi - lo) + lo
    scale = torch.tensor([tex_w, tex_h], dtype=torch.float64)
    x = uv * scale - 0.5
    frac = (x - x.floor()).clamp(margin, 1 - margin)
    return ((x.floor() + frac + 0.5) / scale).to(dtype)


def _smooth_grid(nx, ny, H, W):
    """A grid mesh whose pixel centres stay clear of edges (visibility fixed under gradcheck's
    perturbations), as in test_rasterize."""
    for _ in range(200):
        pos, tri = jittered_grid(1, nx, ny)
        if min_edge_distance(pos, tri, reference.rasterize(pos, tri, (H, W))) > 0.006:
            return pos, tri
    raise RuntimeError("could not draw a grid with pixels clear of edges")


# ---- availability and dispatch ------------------------------------------------------------

def test_available_but_never_chosen_for_cpu_tensors(monkeypatch):
    monkeypatch.delenv("NL3DMM_BACKEND", raising=False)
    assert available_backends()["triton"] is None
    assert resolve_backend_name(None, torch.device("cpu")) == "cpu"
    assert resolve_backend_name("triton", torch.device("cpu")) == "triton"


# ---- rasterize ----------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("cull", [False, True])
@pytest.mark.parametrize("perspective", [False, True])
def test_rasterize_matches_reference_and_cpu(seed, dtype, cull, perspective):
    pos, tri = _soup(dtype, perspective)
    rast = nl3dmm.rasterize(pos, tri, (H, W), cull, backend="triton")
    cpu = nl3dmm.rasterize(pos, tri, (H, W), cull, backend="cpu")
    ref = reference.rasterize(pos.double(), tri, (H, W), cull)
    assert rast.dtype == dtype and rast.shape == (B, H, W, 4)
    assert torch.equal(rast[..., 3].long(), ref[..., 3].long()), "triangle ids differ from the reference"
    assert torch.equal(rast[..., 3], cpu[..., 3]), "triangle ids differ from the CPU backend"
    assert (ref[..., 3] > 0).float().mean() > 0.2, "test mesh covers too little to be useful"
    assert_rel_close(rast[..., :3], ref[..., :3], TOL[dtype], "raster vs reference")
    assert_rel_close(rast[..., :3], cpu[..., :3], TOL[dtype], "raster vs cpu")


def test_gpu_tiles_give_the_same_bits(seed):
    """The GPU path's tiles (one triangle per thread, one pixel per step; 256-pixel blocks)
    run through the interpreter: the same raster, bit for bit, as the interpreter's own tiles,
    and the CPU backend's triangle ids. A small image: one pixel per step is many steps."""
    import static_checks

    pos, tri = _soup(torch.float64)
    size = (6, 7)
    with static_checks.gpu_block_sizes():
        gpu_tiles = nl3dmm.rasterize(pos, tri, size, backend="triton")
    assert (gpu_tiles[..., 3] > 0).any()
    assert torch.equal(gpu_tiles, nl3dmm.rasterize(pos, tri, size, backend="triton"))
    assert torch.equal(gpu_tiles[..., 3], nl3dmm.rasterize(pos, tri, size, backend="cpu")[..., 3])


def test_rasterize_fill_rule_and_depth_ties(seed):
    """Pixel centres exactly on shared edges (vertices snapped to pixel centres) and exact
    depth ties (duplicated triangles) are decided as by the CPU backend, bit for bit."""
    pos, tri = jittered_grid(1, 7, 5, torch.float32, jitter=0.0, perspective=False)
    pos[..., :2] = ((pos[..., :2] + 1) * 16).round().add(0.5).div(16).sub(1).clamp(-1, 1)
    tri = torch.cat([tri, tri.flip(0)])  # every triangle twice: ties go to the smaller index
    rast = nl3dmm.rasterize(pos, tri, (32, 32), backend="triton")
    assert (rast[..., 3] > 0).float().mean() > 0.5
    assert torch.equal(rast, nl3dmm.rasterize(pos, tri, (32, 32), backend="cpu"))
    assert int(rast[..., 3].max()) <= tri.shape[0] // 2, "a duplicate won a depth tie"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_rasterize_backward_matches_reference(seed, dtype):
    pos, tri = _soup(dtype)
    grad = torch.randn(B, H, W, 4, dtype=torch.float64)
    grads = {}
    for backend in ("triton", "cpu"):
        p = pos.clone().requires_grad_(True)
        nl3dmm.rasterize(p, tri, (H, W), backend=backend).backward(grad.to(dtype))
        grads[backend] = p.grad
    p_ref = pos.double().requires_grad_(True)
    reference.rasterize(p_ref, tri, (H, W)).backward(grad)
    tol = 1e-4 if dtype == torch.float32 else 1e-10  # as test_rasterize: gradients amplify
    assert grads["triton"].dtype == dtype
    assert_rel_close(grads["triton"], p_ref.grad, tol, "d rast / d pos vs reference")
    assert_rel_close(grads["triton"], grads["cpu"], TOL[dtype], "d rast / d pos vs cpu")


# Full gradchecks take an interpreted launch per input and per output (~30 s each on 2 cores):
# the default run checks random projections of the Jacobian (fast_mode, a fresh one each run),
# --run-slow the whole Jacobian. The backward is also compared with the CPU one above.
GRADCHECK_MODES = [pytest.param(True, id="projected"),
                   pytest.param(False, id="full", marks=pytest.mark.slow)]


@pytest.mark.parametrize("fast_mode", GRADCHECK_MODES)
def test_rasterize_gradcheck(seed, fast_mode):
    """gradcheck on a tiny case."""
    pos, tri = _smooth_grid(2, 1, 5, 6)
    pos.requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda p: nl3dmm.rasterize(p, tri, (5, 6), backend="triton")[..., :3], (pos,),
        eps=1e-6, atol=1e-7, rtol=1e-5, nondet_tol=1e-12, fast_mode=fast_mode)


# ---- interpolate --------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shared", [False, True])
def test_interpolate_matches_reference_and_cpu(seed, dtype, shared):
    pos, tri = _soup(dtype)
    rast = nl3dmm.rasterize(pos, tri, (H, W), backend="cpu")
    attr = torch.randn(1 if shared else B, V, 5, dtype=dtype)
    grad = torch.randn(B, H, W, 5, dtype=torch.float64)
    results = {}
    for backend in ("triton", "cpu"):
        a, r = attr.clone().requires_grad_(True), rast.clone().requires_grad_(True)
        out = nl3dmm.interpolate(a, r, tri, backend=backend)
        out.backward(grad.to(dtype))
        results[backend] = (out.detach(), a.grad, r.grad)
    a_ref, r_ref = attr.double().requires_grad_(True), rast.double().requires_grad_(True)
    ref = reference.interpolate(a_ref, r_ref, tri)
    ref.backward(grad)
    out, g_attr, g_rast = results["triton"]
    assert out.shape == (B, H, W, 5) and out.dtype == dtype and g_attr.shape == attr.shape
    for actual, expected, what in ((out, ref, "interpolate"), (g_attr, a_ref.grad, "d out / d attr"),
                                   (g_rast, r_ref.grad, "d out / d rast")):
        assert_rel_close(actual, expected, TOL[dtype], f"{what} vs reference")
    for actual, expected, what in zip(results["triton"], results["cpu"], ("out", "d attr", "d rast")):
        assert_rel_close(actual, expected, TOL[dtype], f"{what} vs cpu")
    assert (g_rast[..., 2:] == 0).all(), "depth and id channels get no gradient"


@pytest.mark.parametrize("fast_mode", GRADCHECK_MODES)
def test_interpolate_gradcheck(seed, fast_mode):
    pos, tri = jittered_grid(2, 2, 1)
    rast = nl3dmm.rasterize(pos, tri, (3, 4), backend="cpu")
    attr = torch.randn(2, pos.shape[1], 2, dtype=torch.float64, requires_grad=True)
    shared = torch.randn(pos.shape[1], 2, dtype=torch.float64, requires_grad=True)
    bary = rast[..., :2].clone().requires_grad_(True)
    rest = rast[..., 2:]

    def f(a, b):
        return nl3dmm.interpolate(a, torch.cat([b, rest], -1), tri, backend="triton")

    assert torch.autograd.gradcheck(f, (attr, bary), eps=1e-6, atol=1e-8, nondet_tol=1e-12,
                                    fast_mode=fast_mode)
    assert torch.autograd.gradcheck(lambda a: f(a, bary.detach()), (shared,), eps=1e-6, atol=1e-8,
                                    nondet_tol=1e-12, fast_mode=fast_mode)


# ---- sample_texture -----------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("boundary", ["clamp", "zero", "wrap"])
@pytest.mark.parametrize("shared", [False, True])
def test_sample_texture_matches_reference_and_cpu(seed, dtype, boundary, shared):
    tex = torch.randn(1 if shared else B, TEX_H, TEX_W, C, dtype=dtype)
    uv = _uv_away_from_kinks((B, H, W), dtype=dtype)
    grad = torch.randn(B, H, W, C, dtype=torch.float64)
    results = {}
    for backend in ("triton", "cpu"):
        t, u = tex.clone().requires_grad_(True), uv.clone().requires_grad_(True)
        out = nl3dmm.sample_texture(t, u, boundary, backend=backend)
        out.backward(grad.to(dtype))
        results[backend] = (out.detach(), t.grad, u.grad)
    t_ref, uv_ref = tex.double().requires_grad_(True), uv.double().requires_grad_(True)
    ref = reference.sample_texture(t_ref, uv_ref, boundary)
    ref.backward(grad)
    out, g_tex, g_uv = results["triton"]
    assert out.shape == (B, H, W, C) and out.dtype == dtype and g_tex.shape == tex.shape
    assert_rel_close(out, ref, TOL[dtype], f"sample_texture[{boundary}] vs reference")
    assert_rel_close(g_tex, t_ref.grad, TOL[dtype], "d out / d tex vs reference")
    assert_rel_close(g_uv, uv_ref.grad, TOL[dtype] * 10, "d out / d uv vs reference")
    for actual, expected, what in zip(results["triton"], results["cpu"], ("out", "d tex", "d uv")):
        assert_rel_close(actual, expected, TOL[dtype], f"{what} vs cpu")


@pytest.mark.parametrize("boundary", ["clamp", "zero", "wrap"])
def test_sample_texture_gradcheck(seed, boundary):
    tex = torch.randn(2, 3, 4, 1, dtype=torch.float64, requires_grad=True)
    uv = _uv_away_from_kinks((2, 2, 3), 3, 4).requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda t, u: nl3dmm.sample_texture(t, u, boundary, backend="triton"), (tex, uv),
        eps=1e-7, atol=1e-6, nondet_tol=1e-12)


# ---- every output element written ---------------------------------------------------------

@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_every_output_element_written(seed, dtype):
    """NaN-poisoned out buffers must come back fully written, empty pixels included."""
    backend = TritonBackend()
    pos, tri = _soup(dtype)
    rast = torch.full((B, H, W, 4), float("nan"), dtype=dtype)
    backend.rasterize(pos, tri, H, W, False, out=rast)
    assert not torch.isnan(rast).any()
    assert (rast[..., 3] > 0).any() and (rast[..., 3] == 0).any()
    assert (rast[rast[..., 3] == 0] == 0).all(), "empty pixels must be all zero"

    out = torch.full((B, H, W, 3), float("nan"), dtype=dtype)
    backend.interpolate(torch.randn(B, V, 3, dtype=dtype), True, rast, tri, out=out)
    assert not torch.isnan(out).any() and (out[rast[..., 3] == 0] == 0).all()

    out = torch.full((B, H, W, C), float("nan"), dtype=dtype)
    tex = torch.randn(1, TEX_H, TEX_W, C, dtype=dtype)
    backend.sample_texture(tex, False, torch.rand(B, H, W, 2, dtype=dtype) * 1.4 - 0.2, "zero", out=out)
    assert not torch.isnan(out).any()

    with pytest.raises(ValueError, match="out must be"):
        backend.rasterize(pos, tri, H, W, False, out=torch.empty(B, H, W, 4, dtype=torch.float16))


# ---- the compiled path --------------------------------------------------------------------

def test_kernels_compile_for_the_gpu():
    """Compile each kernel variant that the ops launch on a GPU for an H100 (sm_90), ahead of
    time and without a GPU, at the GPU path's block sizes (recorded by running the ops through
    the interpreter with them; the interpreter's own blocks are larger): the interpreter never
    runs Triton's compiler, so this is what catches compiled-mode-only errors in CI. One dtype
    (float64) per variant keeps it to ~25 compilations; bench/gpu/static_checks.py compiles
    both and tests/test_gpu_static.py checks their registers."""
    if not isinstance(k_rasterize._coverage_kernel, JITFunction):
        pytest.skip("TRITON_INTERPRET=1 is set: every kernel is an interpreted one")
    import static_checks

    variants = {}
    for kernel, args, meta in static_checks.gpu_launch_variants():
        variants[(kernel, tuple(sorted(meta.items())))] = (kernel, args, meta)  # float64 last
    assert len({kernel for kernel, _ in variants}) == 16, "expected all sixteen kernels"
    cuda = torch.device("cuda")
    for kernel, args, meta in variants.values():
        if "BLOCK" in meta:  # texture_mip and antialias take one pixel per thread (no spills)
            sizes = {runtime.pixel_block(cuda, 10**6, per_thread) for per_thread in (1, 2)}
            assert meta["BLOCK"] in sizes, "not a GPU block size"
        if "TRIS" in meta:
            tile = runtime.clip_triangle_tile if "clipped" in kernel.__name__ else runtime.triangle_tile
            assert (meta["TRIS"], meta["PIXELS"]) == tile(cuda, 10**6)
    binaries = static_checks.compile_variants(list(variants.values()), arch=90)
    for (kernel, _, _), binary in zip(variants.values(), binaries):
        assert binary.asm.get("cubin"), f"{kernel.__name__}: no cubin"


# ---- on a GPU: the compiled kernels ---------------------------------------------------------

@pytest.mark.gpu
def test_gpu_matches_cpu_and_is_deterministic(seed):
    pos, tri = random_soup(4, 300, 600, torch.float32)
    size = (96, 128)
    cpu = nl3dmm.rasterize(pos, tri, size, backend="cpu")
    runs = [nl3dmm.rasterize(pos.cuda(), tri.cuda(), size, backend="triton") for _ in range(3)]
    for run in runs[1:]:
        assert torch.equal(run, runs[0]), "GPU rasterization is not bit-deterministic"
    rast = runs[0].cpu()
    assert torch.equal(rast[..., 3], cpu[..., 3]), "triangle ids differ from the CPU backend"
    assert_rel_close(rast[..., :3], cpu[..., :3], 1e-5, "raster vs cpu")

    grad = torch.randn(4, *size, 4)
    p = pos.cuda().requires_grad_(True)
    nl3dmm.rasterize(p, tri.cuda(), size, backend="triton").backward(grad.cuda())
    p_cpu = pos.clone().requires_grad_(True)
    nl3dmm.rasterize(p_cpu, tri, size, backend="cpu").backward(grad)
    assert_rel_close(p.grad.cpu(), p_cpu.grad, 1e-5, "d rast / d pos vs cpu")

    attr = torch.rand(300, 2)
    uv_gpu = nl3dmm.interpolate(attr.cuda(), runs[0], tri.cuda(), backend="triton")
    uv_cpu = nl3dmm.interpolate(attr, cpu, tri, backend="cpu")
    assert_rel_close(uv_gpu.cpu(), uv_cpu, 1e-5, "interpolate vs cpu")
    tex = torch.rand(4, 64, 64, 3)
    for boundary in ("clamp", "zero", "wrap"):
        out_gpu = nl3dmm.sample_texture(tex.cuda(), uv_gpu * 1.2 - 0.1, boundary, backend="triton")
        out_cpu = nl3dmm.sample_texture(tex, uv_gpu.cpu() * 1.2 - 0.1, boundary, backend="cpu")
        assert_rel_close(out_gpu.cpu(), out_cpu, 1e-5, f"sample_texture[{boundary}] vs cpu")


# ---- deterministic gradients (kernels/fixed_sum.py) ------------------------------------------

import contextlib  # noqa: E402
import math  # noqa: E402
import random  # noqa: E402

import triton.language as tl  # noqa: E402

from nl3dmm.kernels import fixed_sum  # noqa: E402
from nl3dmm.kernels import interpolate as k_interpolate  # noqa: E402
from nl3dmm.kernels import texture as k_texture  # noqa: E402
from nl3dmm.kernels.fixed_sum import scatter_add  # noqa: E402


@contextlib.contextmanager
def _programs_in_order(order):
    """Run every interpreted launch's programs in the order order(number of programs) gives
    (a list of linear program indices) instead of the interpreter's row-major loop: a different
    schedule, as a GPU may pick. Patches the interpreter's grid-index setter."""
    from triton.runtime import interpreter

    builder = interpreter.interpreter_builder
    real_dim, real_idx = builder.set_grid_dim, builder.set_grid_idx
    state = {}

    def set_grid_dim(x, y, z):
        state.update(dims=(x, y, z), k=0, order=order(x * y * z))
        real_dim(x, y, z)

    def set_grid_idx(x, y, z):
        _, gy, gz = state["dims"]
        linear = state["order"][state["k"]]
        state["k"] += 1
        real_idx(linear // (gy * gz), (linear // gz) % gy, linear % gz)

    builder.set_grid_dim, builder.set_grid_idx = set_grid_dim, set_grid_idx
    try:
        yield
    finally:
        builder.set_grid_dim, builder.set_grid_idx = real_dim, real_idx


def _backward_grads(dtype, pos, tri, attr, tex, uv, g_rast, g_attr, g_tex):
    """d pos, d attr (shared), d tex (shared) through the three Triton backward passes."""
    p = pos.clone().requires_grad_(True)
    nl3dmm.rasterize(p, tri, (H, W), backend="triton").backward(g_rast.to(dtype))
    rast = nl3dmm.rasterize(pos, tri, (H, W), backend="cpu")
    a = attr.clone().requires_grad_(True)
    nl3dmm.interpolate(a, rast, tri, backend="triton").backward(g_attr.to(dtype))
    t = tex.clone().requires_grad_(True)
    nl3dmm.sample_texture(t, uv, "clamp", backend="triton").backward(g_tex.to(dtype))
    return p.grad, a.grad, t.grad


def test_backward_bits_do_not_depend_on_the_program_order(seed, monkeypatch):
    """The three backward passes with 32-pixel programs (20 per launch) run in row-major,
    reversed and shuffled order: the fixed-point gradients are bit-identical; float64
    atomics (the old kernels, FLOAT) in the same orders are not: the positive control that
    the orders really change the summation order."""
    dtype = torch.float64
    pos, tri = _soup(dtype)
    attr = torch.randn(1, V, 3, dtype=dtype)
    tex = torch.randn(1, TEX_H, TEX_W, 2, dtype=dtype)
    uv = _uv_away_from_kinks((B, H, W), dtype=dtype)
    grads = [torch.randn(B, H, W, n, dtype=dtype) for n in (4, 3, 2)]
    for module in (k_rasterize, k_interpolate, k_texture):
        monkeypatch.setattr(module, "pixel_block", lambda device, n: 32)
    shuffle = random.Random(seed)
    orders = {"row-major": lambda n: list(range(n)), "reversed": lambda n: list(range(n))[::-1],
              "shuffled": lambda n: shuffle.sample(range(n), n)}
    results = {}
    for float_atomics in (False, True):
        monkeypatch.setattr(fixed_sum, "FLOAT_ATOMICS", float_atomics)
        for name, order in orders.items():
            with _programs_in_order(order):
                results[float_atomics, name] = _backward_grads(dtype, pos, tri, attr, tex, uv, *grads)
    for what, fixed, first in zip(("d pos", "d attr", "d tex"), results[False, "row-major"],
                                  results[True, "row-major"]):
        assert_rel_close(fixed, first, 1e-12, f"{what}: fixed point vs float64 atomics")
    for name in ("reversed", "shuffled"):
        for what, a, b in zip(("d pos", "d attr", "d tex"), results[False, "row-major"],
                              results[False, name]):
            assert torch.equal(a, b), f"{what}: fixed-point bits change with the {name} order"
    changed = [what for name in ("reversed", "shuffled")
               for what, a, b in zip(("d pos", "d attr", "d tex"), results[True, "row-major"],
                                     results[True, name]) if not torch.equal(a, b)]
    assert {"d attr", "d tex"} <= set(changed), \
        f"float atomics gave the same bits in another order ({changed}): the control is void"


@triton.jit
def _sum_kernel(x_ptr, index_ptr, meta_ptr, acc_ptr, num_terms, num_values,
                BLOCK: tl.constexpr, PASS: tl.constexpr):
    i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    live = i < num_terms
    x = tl.load(x_ptr + i, mask=live, other=0.0)
    index = tl.load(index_ptr + i, mask=live, other=0)
    scatter_add(meta_ptr, acc_ptr, num_values, index, x, live, PASS)


def _fixed_sums(terms, index, num_values, block=64):
    meta, acc = fixed_sum.scratch(num_values, terms.device)
    for p in fixed_sum.passes():
        runtime.launch(_sum_kernel, (runtime.cdiv(terms.numel(), block),), terms.device, terms,
                       index, meta, acc, terms.numel(), num_values, BLOCK=block, PASS=p)
    return fixed_sum.finish(meta, acc)


def test_fixed_point_sums_match_fsum_within_the_stated_bound(seed):
    """Per value: |sum - math.fsum(terms)| <= 2^(2h - 62) * the largest |term| (h = ceil(log2 n),
    kernels/fixed_sum.py) plus the final rounding, over magnitudes from 2^-1074 to 2^1000,
    cancellations, single terms (exact), empty values (0) and IEEE non-finite rules; and the
    bits do not depend on the order of the terms."""
    gen = torch.Generator().manual_seed(seed)
    values = []
    for n, spread in ((1, 0), (7, 3), (100, 20), (600, 60), (300, 0)):
        x = torch.randn(n, generator=gen, dtype=torch.float64)
        x = x * torch.pow(2.0, torch.randint(-spread, spread + 1, (n,), generator=gen).double())
        values.append(x)
    f64 = lambda *x: torch.tensor(x, dtype=torch.float64)  # noqa: E731
    values.append(f64(2.0**1000, 1.0, -2.0**1000, 3.0))  # cancels to what fixed point lost
    values.append(f64(1e-320, 3e-321, -5e-324))          # subnormals only: exact
    values.append(f64(*[0.1] * 10))
    values.append(f64())                                  # no term: 0
    values.append(f64(1.0, math.inf, 2.0))
    values.append(f64(-math.inf, 1.0))
    values.append(f64(math.inf, -math.inf))
    values.append(f64(1.0, math.nan))
    terms = torch.cat(values)
    index = torch.cat([torch.full((len(v),), i, dtype=torch.int64) for i, v in enumerate(values)])
    perm = torch.randperm(terms.numel(), generator=gen)
    sums = _fixed_sums(terms, index, len(values))
    assert torch.equal(sums.view(torch.int64), _fixed_sums(terms[perm], index[perm],
                                                           len(values)).view(torch.int64))
    for i, v in enumerate(values[:-4]):
        exact = math.fsum(v.tolist())
        n = v.numel()
        largest = float(v.abs().max()) if n else 0.0
        h = math.ceil(math.log2(n)) if n > 1 else 0
        bound = 2.0 ** (2 * h - 62) * largest + math.ulp(exact)
        error = abs(float(sums[i]) - exact)
        assert error <= bound, f"value {i} ({n} terms): |{float(sums[i])!r} - {exact!r}| > {bound}"
        if n == 1:
            assert float(sums[i]) == exact, "a single term must come back exactly"
    assert float(sums[-5]) == 0.0
    assert float(sums[-4]) == float("inf") and float(sums[-3]) == float("-inf")
    assert math.isnan(float(sums[-2])) and math.isnan(float(sums[-1]))
