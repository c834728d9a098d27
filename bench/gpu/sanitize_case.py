"""A small CUDA workload for compute-sanitizer (memcheck, racecheck):

    NL3DMM_CUDA_UNVERIFIED=1 compute-sanitizer --tool memcheck python bench/gpu/sanitize_case.py
    NL3DMM_CUDA_UNVERIFIED=1 compute-sanitizer --tool racecheck python bench/gpu/sanitize_case.py

Runs rasterize -> interpolate -> sample_texture forward and backward on a few overlapping
triangles in both precisions, then synchronises so every kernel has run under the tool.
"""
import torch

import nl3dmm

for dtype in (torch.float32, torch.float64):
    gen = torch.Generator().manual_seed(0)
    pos = torch.rand(2, 12, 4, generator=gen, dtype=dtype) * 2 - 1
    pos[..., 3] = 1
    pos = pos.cuda().requires_grad_(True)
    tri = torch.randint(0, 12, (20, 3), generator=gen, dtype=torch.int32).cuda()
    tex = torch.rand(2, 8, 8, 3, dtype=dtype, device="cuda", requires_grad=True)
    rast = nl3dmm.rasterize(pos, tri, (16, 24), backend="cuda")
    uv = nl3dmm.interpolate(torch.rand(12, 2, dtype=dtype, device="cuda"), rast, tri, backend="cuda")
    nl3dmm.sample_texture(tex, uv, backend="cuda").sum().backward()
    torch.cuda.synchronize()
print("ok")
