"""The full render of the model's output: project the shape with m, rasterize with back-face
culling, interpolate the vertex UVs, sample the UV texture, composite over the input image.

This is the chain of the paper's rendering layer with our ops: visibility is exact and
batched, and gradients reach the texture, the vertices and m (through the barycentrics and
the projected positions), not the occlusion boundaries.
"""
from __future__ import annotations

import numpy as np
import torch

from .camera import image_to_clip, project_m_with_depth
from ..render import interpolate, rasterize, sample_texture


def render_face(vertices: torch.Tensor, m: torch.Tensor, texture: torch.Tensor, triangles: torch.Tensor | np.ndarray,
                uv: torch.Tensor | np.ndarray, image_size: int | tuple[int, int],
                background: torch.Tensor | None = None, face_mask: torch.Tensor | None = None,
                backend: str | None = None) -> dict[str, torch.Tensor]:
    """Render (B, Q, 3) `vertices` seen through (B, 8) cameras `m` with (B, Ht, Wt, C) UV
    `texture` (FaceModel conventions: triangles wound inward, uv with v down).

    Returns `image` (B, H, W, C) — the render where the mask is set, `background` (or 0)
    elsewhere — `mask` (B, H, W) float (render coverage x `face_mask`), and the raw `rast`.
    """
    height, width = (image_size, image_size) if isinstance(image_size, int) else image_size
    tri = torch.as_tensor(np.asarray(triangles) if not isinstance(triangles, torch.Tensor) else triangles)
    tri = tri.to(device=vertices.device, dtype=torch.int32)
    points = project_m_with_depth(vertices, m, height)
    clip = image_to_clip(points, height, width)
    rast = rasterize(clip, tri, (height, width), cull_backfaces=True, backend=backend)
    attr = torch.as_tensor(np.asarray(uv) if not isinstance(uv, torch.Tensor) else uv)
    pixel_uv = interpolate(attr.to(device=rast.device, dtype=rast.dtype), rast, tri, backend=backend)
    colour = sample_texture(texture.to(rast.dtype), pixel_uv, backend=backend)
    mask = (rast[..., 3] > 0).to(rast.dtype)
    if face_mask is not None:
        mask = mask * face_mask.to(rast.dtype)
    if background is None:
        background = torch.zeros_like(colour)
    image = colour * mask[..., None] + background.to(rast.dtype) * (1 - mask[..., None])
    return {"image": image, "mask": mask, "rast": rast}
