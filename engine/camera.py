"""Cameras: 300W-LP / AFLW2000-3D `Pose_Para` projection and image -> clip-space mapping.

Pose convention (verified on the 17 real samples in shared/data, see its README):
`X' = s * X @ R.T + t`, `R = Rx(pitch) @ Ry(yaw) @ Rz(roll)` as in 3DDFA's
`angle2matrix`, then image y = H - y' (the image's rows point down). Larger z' is nearer.
"""
from __future__ import annotations

import numpy as np
import torch


def pose_rotation(pitch: float, yaw: float, roll: float) -> np.ndarray:
    cx, sx, cy, sy, cz, sz = np.cos(pitch), np.sin(pitch), np.cos(yaw), np.sin(yaw), np.cos(roll), np.sin(roll)
    rx = np.array([[1, 0, 0], [0, cx, sx], [0, -sx, cx]])
    ry = np.array([[cy, 0, -sy], [0, 1, 0], [sy, 0, cy]])
    rz = np.array([[cz, sz, 0], [-sz, cz, 0], [0, 0, 1]])
    return rx @ ry @ rz


def project_pose_para(vertices: np.ndarray, pose_para: np.ndarray, image_height: int) -> np.ndarray:
    """(V, 3) model vertices -> (V, 3) image (x right, y down, pixels) and depth z' (larger
    is nearer), for a 7-number `Pose_Para` = pitch, yaw, roll (radians), tx, ty, tz, scale."""
    p = np.asarray(pose_para, dtype=np.float64).reshape(-1)
    if p.size != 7 or not np.isfinite(p).all():
        raise ValueError(f"Pose_Para must be 7 finite numbers, got {p}")
    rotated = p[6] * vertices.astype(np.float64) @ pose_rotation(*p[:3]).T + p[3:6]
    rotated[:, 1] = image_height - rotated[:, 1]
    return rotated


def image_to_clip(points: torch.Tensor, height: int, width: int,
                  depth_range: tuple[float, float] | None = None) -> torch.Tensor:
    """(B, V, 3) image-space points (x, y pixels with y down; z larger = nearer) -> (B, V, 4)
    clip space for `rasterize`, weak perspective (w = 1).

    Rows come out in image order (row 0 = top). Depth is mapped so that nearer is smaller and
    [lo, hi] (default: the batch's own z range, padded 1%) lands inside [-1, 1].
    """
    x, y, z = points.unbind(-1)
    if depth_range is None:
        lo = z.amin(dim=1, keepdim=True)
        hi = z.amax(dim=1, keepdim=True)
    else:
        lo, hi = (torch.as_tensor(v, dtype=points.dtype, device=points.device) for v in depth_range)
    mid, half = (hi + lo) / 2, ((hi - lo) / 2).clamp(min=1e-12) * 1.01
    return torch.stack([2 * x / width - 1, 2 * y / height - 1, -(z - mid) / half, torch.ones_like(x)], -1)
