"""The CUDA kernels (csrc/cuda/render_cuda.cu) executed on the CPU by the host harness
(tests/cuda_host.py), on every CI run and without a GPU or nvcc.

Against the CPU backend, with the harness's outputs NaN-poisoned and its scratch filled with
garbage first: triangle ids identical, forward values bit-equal, gradients within GRAD_TOL
(relative to the largest magnitude: the CPU sums in double and rounds once, the harness sums
exactly in fixed point and rounds once, so float32 may differ by one ulp and float64 by the
CPU's summation error). Gradients are bit-identical across worker counts and chunk sizes.
The same sources also run under ASan+UBSan and TSan (several workers, chunk 1), and mutants
built from them by textual substitution (a racy accumulate, a racy z-test, a removed bounds
guard) must be reported by the sanitizer that should catch them.

g++ must be on PATH (it is wherever the extension builds). Measured: 63 s of CPU time with a
cold build cache (ten g++ compiles: three variants, three mutants, the shim self-test), 9 s
warm (NL3DMM_HOST_BUILD_DIR keeps the cache; CI can persist it).
"""
from __future__ import annotations

import math
import re
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import scipy.io as sio
import torch

import cuda_host
from cuda_host import HarnessError, HostCudaBackend
from meshes import jittered_grid, random_soup
from nl3dmm.render.backends import get_backend

GRAD_TOL = {torch.float32: 1e-6, torch.float64: 1e-12}
DTYPES = [torch.float32, torch.float64]
BOUNDARIES = ["clamp", "zero", "wrap"]
CPU = get_backend("cpu")


@pytest.fixture(scope="module")
def drivers() -> dict[str, Path]:
    """The plain, ASan+UBSan and TSan harnesses, built in parallel (cached by source hash)."""
    with ThreadPoolExecutor(3) as pool:
        return dict(zip(cuda_host.VARIANTS, pool.map(cuda_host.build, cuda_host.VARIANTS)))


@pytest.fixture(scope="module")
def host(drivers) -> HostCudaBackend:
    return HostCudaBackend(drivers["plain"], workers=3, chunk=5)


def poisoned(shape, dtype) -> torch.Tensor:
    return torch.full(shape, float("nan"), dtype=dtype)


def assert_grad_close(actual: torch.Tensor, expected: torch.Tensor, what: str) -> None:
    assert actual.shape == expected.shape, what
    assert not bool(actual.isnan().any()), f"{what}: NaN left in the harness output"
    scale = expected.abs().max().item()
    assert scale > 0, f"{what}: all-zero gradient proves nothing"
    err = (actual.double() - expected.double()).abs().max().item()
    assert err <= GRAD_TOL[expected.dtype] * scale, f"{what}: relative error {err / scale:.2e}"


def run_chain(backend, pos, tri, attr, attr_batched, tex, tex_batched, boundary, resolution, cull, seed):
    """Every op forward and backward on one backend; forward outputs into NaN-poisoned
    buffers. The upstream gradients come from `seed`, so two backends get the same ones."""
    gen = torch.Generator().manual_seed(seed)
    B, (H, W), dtype = pos.shape[0], resolution, pos.dtype
    rast = backend.rasterize(pos, tri, H, W, cull, out=poisoned((B, H, W, 4), dtype))
    uv = backend.interpolate(attr, attr_batched, rast, tri, out=poisoned((B, H, W, attr.shape[2]), dtype))
    image = backend.sample_texture(tex, tex_batched, uv, boundary, out=poisoned((B, H, W, tex.shape[3]), dtype))
    grad_image = torch.randn(image.shape, generator=gen, dtype=dtype)
    grad_tex, grad_uv = backend.sample_texture_backward(tex, tex_batched, uv, boundary, grad_image)
    grad_attr, grad_rast = backend.interpolate_backward(attr, attr_batched, rast, tri, grad_uv)
    grad_rast = grad_rast + torch.randn(grad_rast.shape, generator=gen, dtype=dtype) * (rast[..., 3:] > 0)
    grad_pos = backend.rasterize_backward(pos, tri, rast, grad_rast.contiguous())
    return {"rast": rast, "uv": uv, "image": image, "grad_tex": grad_tex, "grad_uv": grad_uv,
            "grad_attr": grad_attr, "grad_rast": grad_rast, "grad_pos": grad_pos}


FORWARD = ("rast", "uv", "image")


def compare_with_cpu(host, seed, pos, tri, attr, attr_batched, tex, tex_batched, boundary, resolution, cull):
    args = (pos, tri, attr, attr_batched, tex, tex_batched, boundary, resolution, cull, seed)
    expected, actual = run_chain(CPU, *args), run_chain(host, *args)
    assert torch.equal(actual["rast"][..., 3], expected["rast"][..., 3]), "triangle ids differ"
    assert bool(expected["rast"][..., 3].gt(0).any()), "nothing was drawn: the case proves nothing"
    for name in FORWARD:
        assert torch.equal(actual[name], expected[name]), f"forward {name} is not bit-equal"
    for name in ("grad_tex", "grad_uv", "grad_attr", "grad_pos"):
        assert_grad_close(actual[name], expected[name], name)
    return actual


def soup_case(dtype, batched, seed_value):
    torch.manual_seed(seed_value)
    pos, tri = random_soup(2, 60, 120, dtype)  # holds degenerate and w < 0 triangles
    attr = torch.rand(2 if batched else 1, 60, 2, dtype=dtype) * 1.4 - 0.2
    tex = torch.rand(2 if batched else 1, 9, 11, 3, dtype=dtype)
    return pos, tri, attr, tex


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cull", [False, True])
@pytest.mark.parametrize("batched", [False, True])
def test_random_soup_every_op_matches_cpu(host, seed, dtype, cull, batched):
    pos, tri, attr, tex = soup_case(dtype, batched, seed)
    compare_with_cpu(host, seed, pos, tri, attr, batched, tex, batched, "clamp", (37, 53), cull)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("boundary", BOUNDARIES)
def test_boundary_modes_match_cpu(host, seed, dtype, boundary):
    pos, tri, attr, tex = soup_case(dtype, True, seed)
    compare_with_cpu(host, seed, pos, tri, attr * 3 - 1, True, tex[:1].contiguous(), False, boundary, (23, 19), False)


@pytest.mark.parametrize("dtype", DTYPES)
def test_jittered_grid_matches_cpu(host, seed, dtype):
    pos, tri = jittered_grid(2, 6, 5, dtype)
    attr = torch.rand(1, pos.shape[1], 2, dtype=dtype)
    tex = torch.rand(2, 8, 6, 2, dtype=dtype)
    out = compare_with_cpu(host, seed, pos, tri, attr, False, tex, True, "wrap", (29, 31), True)
    assert out["rast"][..., 3].gt(0).float().mean() > 0.6, "the grid should cover most pixels"


def paper_case(shared_data, size, batch=1, sample=11):
    from nl3dmm.face.camera import image_to_clip, project_pose_para
    from nl3dmm.face.facemodel import load_paper_mesh
    mesh = load_paper_mesh()
    files = sorted((shared_data / "prnet" / "aflw2000").glob("image*.mat"))
    poses = [sio.loadmat(files[(sample + i) % len(files)])["Pose_Para"].reshape(-1) for i in range(batch)]
    points = np.stack([project_pose_para(mesh.mean_shape, pose, 450) for pose in poses])
    pos = image_to_clip(torch.from_numpy(points), 450, 450).float()
    return pos, torch.from_numpy(mesh.triangles), torch.from_numpy(mesh.uv)[None], size


def test_paper_mesh_posed_by_aflw2000_label(host, shared_data, seed):
    """The authors' 53,215-vertex mesh with a real AFLW2000-3D Pose_Para (yaw 38 degrees)."""
    pos, tri, uv, size = paper_case(shared_data, 96)
    tex = torch.rand(1, 48, 56, 3)
    out = compare_with_cpu(host, seed, pos, tri, uv, False, tex, False, "clamp", (size, size), True)
    assert out["rast"][..., 3].gt(0).float().mean() > 0.1


def test_paper_mesh_full_size_batch(host, shared_data, seed):
    pos, tri, uv, size = paper_case(shared_data, 224, batch=4)
    tex = torch.rand(4, 192, 224, 3)
    compare_with_cpu(host, seed, pos, tri, uv, False, tex, True, "clamp", (size, size), True)


def test_gradients_bit_identical_for_any_schedule(drivers, seed):
    """Shared attributes and texture: every vertex and texel collects terms from many pixels,
    racing threads land them in different orders, and the bits must not change."""
    pos, tri, attr, tex = soup_case(torch.float32, False, seed)
    runs = []
    for workers, chunk in ((1, 1 << 20), (4, 1), (3, 7), (2, 64)):
        backend = HostCudaBackend(drivers["plain"], workers=workers, chunk=chunk)
        out = run_chain(backend, pos, tri, attr, False, tex, False, "wrap", (41, 37), False, seed)
        runs.append(out)
    for name in ("grad_tex", "grad_attr", "grad_pos", "grad_uv", *FORWARD):
        for other in runs[1:]:
            assert torch.equal(runs[0][name].view(torch.int32), other[name].view(torch.int32)), name


def test_fixed_point_sum_is_the_exact_sum_correctly_rounded(host, seed):
    """float64 grad_attr of interpolate: each value is a sum of w * g terms; the harness must
    return exactly math.fsum of the terms (the correctly rounded exact sum), even with terms
    spanning 40 orders of magnitude and cancelling."""
    pos, tri = jittered_grid(1, 3, 2, torch.float64)
    rast = CPU.rasterize(pos, tri, 9, 11, False)
    attr = torch.rand(1, pos.shape[1], 2, dtype=torch.float64)
    gen = torch.Generator().manual_seed(seed)
    scale = 10.0 ** torch.randint(-20, 21, (1, 9, 11, 2), generator=gen).double()
    grad_out = torch.randn(1, 9, 11, 2, generator=gen, dtype=torch.float64) * scale
    grad_attr, _ = host.interpolate_backward(attr, False, rast, tri, grad_out)
    terms: dict[tuple[int, int], list[float]] = {}
    for (row, col), r in np.ndenumerate(rast[0, ..., 0].numpy()):
        rs = rast[0, row, col].tolist()
        if rs[3] == 0:
            continue
        corners = tri[int(rs[3]) - 1].tolist()
        for k, w in enumerate((rs[0], rs[1], 1.0 - rs[0] - rs[1])):
            for c in range(2):
                terms.setdefault((corners[k], c), []).append(w * grad_out[0, row, col, c].item())
    expected = torch.zeros_like(grad_attr)
    for (v, c), values in terms.items():
        expected[0, v, c] = math.fsum(values)
    assert torch.equal(grad_attr, expected)


def test_non_finite_terms_follow_ieee_addition(host):
    """A direct backend call (no validation): an Inf upstream gradient gives Inf, +Inf with
    -Inf gives NaN, as the CPU's double sums do."""
    pos = torch.tensor([[[-1, -1, 0, 1], [1, -1, 0, 1], [-1, 1, 0, 1.0]]], dtype=torch.float64)
    tri = torch.tensor([[0, 1, 2]], dtype=torch.int32)
    rast = CPU.rasterize(pos, tri, 4, 4, False)
    attr = torch.rand(1, 3, 3, dtype=torch.float64)
    grad_out = torch.ones(1, 4, 4, 3, dtype=torch.float64)
    grad_out[0, 0, 0, 0] = float("inf")
    grad_out[0, 0, 0, 1], grad_out[0, 0, 1, 1] = float("inf"), float("-inf")
    expected, _ = CPU.interpolate_backward(attr, False, rast, tri, grad_out)
    actual, _ = host.interpolate_backward(attr, False, rast, tri, grad_out)
    assert bool(expected.isinf().any()) and bool(expected.isnan().any())
    assert torch.equal(actual.isnan(), expected.isnan())
    finite = ~expected.isnan()
    assert torch.equal(actual[finite], expected[finite])


@pytest.mark.parametrize("op", ["rasterize", "interpolate"])
def test_kernels_refuse_bad_indices(host, op):
    """Indices that bypassed validation are skipped and reported, never followed."""
    pos = torch.tensor([[[-1, -1, 0, 1], [1, -1, 0, 1], [-1, 1, 0, 1.0]]])
    tri = torch.tensor([[0, 1, 2]], dtype=torch.int32)
    rast = CPU.rasterize(pos, tri, 8, 8, False)
    with pytest.raises(ValueError, match="tri holds a vertex index outside" if op == "rasterize" else "not a triangle id"):
        if op == "rasterize":
            host.rasterize(pos, torch.tensor([[0, 1, 10 ** 9]], dtype=torch.int32), 8, 8, False)
        else:
            bad = rast.clone()
            bad[..., 3] = 1e9
            host.interpolate(torch.rand(1, 3, 2), False, bad, tri)


def test_launch_limits_are_checked_like_a_device(drivers, tmp_path):
    """The shim refuses what a device refuses (a 2048-thread block, a 70,000-block grid.y) and
    runs every thread of a 3-D launch exactly once."""
    source = Path(cuda_host.CSRC / "cuda" / "host" / "shim_selftest.cpp")
    exe = tmp_path / "selftest"
    subprocess.run([cuda_host.COMPILER, "-std=c++20", "-O1", "-pthread", f"-I{cuda_host.CSRC}", str(source),
                    "-o", str(exe)], check=True, capture_output=True, text=True)
    done = subprocess.run([str(exe)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def small_chain(backend, seed, dtype=torch.float32):
    pos, tri, attr, _ = soup_case(dtype, False, seed)
    tex = torch.rand(2, 5, 7, 3, generator=torch.Generator().manual_seed(seed), dtype=dtype)
    return run_chain(backend, pos, tri, attr, False, tex, True, "zero", (17, 19), False, seed)


@pytest.mark.parametrize("variant", ["asan", "tsan"])
def test_sanitizers_find_nothing_in_the_real_source(drivers, seed, variant):
    backend = HostCudaBackend(drivers[variant], workers=4, chunk=1)
    out = small_chain(backend, seed)
    reference = small_chain(CPU, seed)
    assert torch.equal(out["rast"], reference["rast"])


def line_of(sources: dict[str, str], path: str, text: str) -> int:
    return sources[path][:sources[path].index(text)].count("\n") + 1


RACY_ACCUMULATE = ("cuda/fixed_point.h", "const unsigned long long before = atomicAdd(s.lo + i, lo);",
                   "const unsigned long long before = s.lo[i];\n    s.lo[i] += lo;")
RACY_ZTEST = ("cuda/render_cuda.cu",
              "if (key != kEmptyKey) atomicMin(image + (int64_t)r * W + c, (unsigned long long)key);",
              "if (key < image[(int64_t)r * W + c]) image[(int64_t)r * W + c] = key;")
NO_GUARD = ("cuda/render_cuda.cu", "    if (i >= B * F) return;\n", "")


@pytest.mark.parametrize("mutant, variant", [(RACY_ACCUMULATE, "tsan"), (RACY_ZTEST, "tsan"), (NO_GUARD, "asan")],
                         ids=["racy-accumulate", "racy-ztest", "no-bounds-guard"])
def test_sanitizers_report_mutants(seed, mutant, variant):
    """Negative controls: each sanitizer run can fail, at the mutated line."""
    path, old, new = mutant
    sources = cuda_host.mutate(path, old, new)
    backend = HostCudaBackend(cuda_host.build(variant, sources), workers=4, chunk=1)
    with pytest.raises(HarnessError) as info:
        small_chain(backend, seed)
    report = str(info.value)
    if variant == "tsan":
        assert "WARNING: ThreadSanitizer: data race" in report, report[-3000:]
        line = line_of(sources, path, new.split("\n")[-1].strip())
        assert re.search(rf"{re.escape(Path(path).name)}:{line}\b", report), (line, report[-3000:])
    else:
        assert "AddressSanitizer: heap-buffer-overflow" in report, report[-3000:]
        assert "raster_kernel" in report, report[-3000:]


def test_tsan_on_the_paper_mesh(drivers, shared_data, seed):
    pos, tri, uv, size = paper_case(shared_data, 64)
    backend = HostCudaBackend(drivers["tsan"], workers=4, chunk=1)
    tex = torch.rand(1, 48, 56, 3)
    args = (pos, tri, uv, False, tex, False, "clamp", (size, size), True, seed)
    assert torch.equal(run_chain(backend, *args)["rast"], run_chain(CPU, *args)["rast"])
