"""A small CUDA workload for compute-sanitizer (memcheck, racecheck, initcheck):

    NL3DMM_CUDA_UNVERIFIED=1 compute-sanitizer --tool memcheck python bench/gpu/sanitize_case.py
    NL3DMM_CUDA_UNVERIFIED=1 compute-sanitizer --tool racecheck python bench/gpu/sanitize_case.py

Runs every op forward and backward on the CUDA backend, in both precisions, on a few
overlapping triangles with one vertex behind the eye (so clipping runs): rasterize ->
interpolate -> sample_texture (bilinear and mip-mapped from interpolate_derivatives) ->
antialias, and render_textured's fused pass with a background and a mask; then synchronises
so every kernel has run under the tool.
"""
import torch

import nl3dmm

for dtype in (torch.float32, torch.float64):
    gen = torch.Generator().manual_seed(0)

    def rand(*shape):
        return torch.rand(*shape, generator=gen, dtype=dtype).cuda().requires_grad_(True)

    pos = torch.rand(2, 12, 4, generator=gen, dtype=dtype) * 2 - 1
    pos[..., 3] = 1
    pos[1, 0, 3] = -0.5  # behind the eye: its triangles are clipped
    pos = pos.cuda().requires_grad_(True)
    tri = torch.randint(0, 12, (20, 3), generator=gen, dtype=torch.int32).cuda()
    tex, uv_attr = rand(2, 8, 8, 3), rand(12, 2)
    rast = nl3dmm.rasterize(pos, tri, (16, 24), backend="cuda")
    uv = nl3dmm.interpolate(uv_attr, rast, tri, backend="cuda")
    uv_da = nl3dmm.interpolate_derivatives(uv_attr, rast, tri, pos.detach(), backend="cuda")
    colour = nl3dmm.sample_texture(tex, uv, backend="cuda")
    colour = colour + nl3dmm.sample_texture(tex, uv, backend="cuda", uv_da=uv_da * 4)
    loss = nl3dmm.antialias(colour, rast, pos, tri, backend="cuda").sum()
    image, _, _ = nl3dmm.render_textured(pos, tri, uv_attr, tex[:1], (16, 24), background=rand(2, 16, 24, 3),
                                         mask=rand(2, 16, 24), backend="cuda")
    (loss + image.sum()).backward()
    torch.cuda.synchronize()
print("ok")
