"""The full render of the model's output: project the shape with m, rasterize with back-face
culling, interpolate the vertex UVs, sample the UV texture, composite over the input image.

This is the chain of the paper's rendering layer with our ops: visibility is exact and
batched, and gradients reach the texture, the vertices and m (through the barycentrics and
the projected positions), not the occlusion boundaries.

By default the chain after rasterize runs as render_textured's one fused kernel (no pixel uv or
colour tensors; bit-equal image on the kernel backends); `fused=False` runs the separate ops,
which is what the reference backend always runs.
"""
from __future__ import annotations

import numpy as np
import torch

from .camera import image_to_clip, project_m_with_depth
from ..render import render_textured


def render_face(vertices: torch.Tensor, m: torch.Tensor, texture: torch.Tensor, triangles: torch.Tensor | np.ndarray,
                uv: torch.Tensor | np.ndarray, image_size: int | tuple[int, int],
                background: torch.Tensor | None = None, face_mask: torch.Tensor | None = None,
                backend: str | None = None, fused: bool | None = None) -> dict[str, torch.Tensor]:
    """Render (B, Q, 3) `vertices` seen through (B, 8) cameras `m` with (B, Ht, Wt, C) UV
    `texture` (FaceModel conventions: triangles wound inward, uv with v down).

    Returns `image` (B, H, W, C) — the render where the mask is set, `background` (or 0)
    elsewhere — `mask` (B, H, W) float (render coverage x `face_mask`), and the raw `rast`.
    `fused`: as render_textured's (None fuses on every backend but "reference", False never).
    """
    height, width = (image_size, image_size) if isinstance(image_size, int) else image_size
    tri = torch.as_tensor(np.asarray(triangles) if not isinstance(triangles, torch.Tensor) else triangles)
    tri = tri.to(device=vertices.device, dtype=torch.int32)
    points = project_m_with_depth(vertices, m, height)
    clip = image_to_clip(points, height, width)
    attr = torch.as_tensor(np.asarray(uv) if not isinstance(uv, torch.Tensor) else uv)
    # render_textured takes background and face_mask at full size; callers may broadcast them.
    dtype, B, C = clip.dtype, clip.shape[0], texture.shape[-1]
    if background is not None:
        background = torch.broadcast_to(background.to(dtype), (B, height, width, C))
    if face_mask is not None:
        face_mask = torch.broadcast_to(face_mask.to(dtype), (B, height, width))
    image, mask, rast = render_textured(clip, tri, attr.to(device=clip.device, dtype=dtype), texture.to(dtype),
                                        (height, width), cull_backfaces=True, background=background,
                                        mask=face_mask, backend=backend, fused=fused)
    return {"image": image, "mask": mask, "rast": rast}
