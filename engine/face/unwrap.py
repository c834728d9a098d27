"""Pseudo ground-truth UV textures: unwrap a photo into the mesh's UV map.

The paper's texture loss in pretraining compares the decoder's texture with the input image
unwrapped into UV space by the ground-truth shape and camera, on visible texels only. This
is built from the same three rendering ops the model trains through:

1. rasterize the mesh in UV space (vertex uv as clip-space x, y) -> per texel, the triangle
   and barycentrics of the surface point it shows;
2. interpolate the vertices' image positions and depths at every texel;
3. rasterize the mesh in image space (back faces culled) -> the depth of the visible surface
   at every pixel; a texel is visible when its own depth matches that depth where it lands;
4. sample the photo (as a texture) at the texels' image positions.
"""
from __future__ import annotations

import torch

from .camera import image_to_clip
from ..render import interpolate, rasterize, sample_texture


def rasterize_uv_space(uv: torch.Tensor, triangles: torch.Tensor, size: tuple[int, int],
                       dtype: torch.dtype | None = None, backend: str | None = None) -> torch.Tensor:
    """(1, Ht, Wt, 4) raster of the mesh drawn in its own UV space (vertex uv as clip x, y; no
    culling, since the UV layout's winding says nothing about facing): per texel, the triangle
    and barycentrics of the surface point it shows, 0 where no triangle covers it."""
    pos = torch.cat([uv * 2 - 1, torch.zeros_like(uv[:, :1]), torch.ones_like(uv[:, :1])], -1)
    pos = pos if dtype is None else pos.to(dtype)
    return rasterize(pos[None], triangles, size, cull_backfaces=False, backend=backend)


def unwrap_texture(image: torch.Tensor, points: torch.Tensor, uv: torch.Tensor,
                   triangles: torch.Tensor, texture_size: tuple[int, int] = (192, 224),
                   depth_tolerance: float = 0.05, backend: str | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Unwrap `image` into UV space.

    Args:
        image: (B, H, W, C) float photos.
        points: (B, V, 3) the mesh in image space: x right, y down (pixels), z larger = nearer
            (as camera.project_pose_para returns, or m-projected vertices with depth).
        uv: (V, 2) per-vertex texture coordinates in [0, 1] (u = column, v = row).
        triangles: (F, 3) int32, front faces counter-clockwise in image space.
        texture_size: (rows, columns) of the UV map.
        depth_tolerance: how far (in clip depth, where the face spans about 2) a texel may lie
            behind the visible surface and still count as visible.

    Returns:
        texture (B, Ht, Wt, C) (0 where not visible) and visible (B, Ht, Wt) bool.
    """
    if image.dim() != 4 or points.dim() != 3 or points.shape[-1] != 3:
        raise ValueError(f"image must be (B, H, W, C) and points (B, V, 3), got "
                         f"{tuple(image.shape)} and {tuple(points.shape)}")
    if image.shape[0] != points.shape[0]:
        raise ValueError(f"image batch {image.shape[0]} != points batch {points.shape[0]}")
    B, H, W, _ = image.shape
    Ht, Wt = texture_size
    dtype = image.dtype
    clip = image_to_clip(points, H, W).to(dtype)

    seen = rasterize(clip, triangles, (H, W), cull_backfaces=True, backend=backend)

    uv_rast = rasterize_uv_space(uv, triangles, (Ht, Wt), dtype, backend).expand(B, -1, -1, -1).contiguous()
    # Per texel: where its surface point lands in the image, and how deep it is there.
    where = interpolate(clip[..., :3].contiguous(), uv_rast, triangles, backend=backend)
    on_mesh = uv_rast[..., 3] > 0
    image_uv = (where[..., :2] + 1) / 2  # image coordinates as texture coordinates in [0, 1]
    col = (image_uv[..., 0] * W).floor().long().clamp(0, W - 1)
    row = (image_uv[..., 1] * H).floor().long().clamp(0, H - 1)
    batch = torch.arange(B, device=image.device).view(B, 1, 1)
    surface = seen[batch, row, col]  # the image raster at the texel's pixel
    inside = (image_uv >= 0).all(-1) & (image_uv < 1).all(-1)
    visible = on_mesh & inside & (surface[..., 3] > 0) & (where[..., 2] <= surface[..., 2] + depth_tolerance)

    texture = sample_texture(image, image_uv.to(dtype).contiguous(), "clamp", backend=backend)
    texture = torch.where(visible.unsqueeze(-1), texture, torch.zeros_like(texture))
    return texture, visible
