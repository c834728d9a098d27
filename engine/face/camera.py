"""Cameras: the weak-perspective projection m, 300W-LP / AFLW2000-3D `Pose_Para`, crops,
resizes and flips, and the image -> clip-space mapping of the renderer.

Image frame. All image points in this package are in the renderer's *corner frame*: x right,
y down, in pixels, with pixel (row r, column c) covering [c, c+1) x [r, r+1), so its centre is
at (c + 0.5, r + 0.5). Labels written by MATLAB (`pt2d`, `pt3d_68`, iBUG .pts files) are
1-based (pixel k has its centre at k): `matlab_to_image` subtracts 0.5.

The camera m (8 numbers, the authors' convention, read as a 4x2 matrix M = m.reshape(4, 2)):
`[u v] = [X Y Z 1] @ M`, where (u, v) are MATLAB-style coordinates with v pointing *up*:
`x = u - 0.5`, `y = H + 0.5 - v` for an image of height H (`uv_to_image`). The authors'
code reads them the same way (`u - 1`, `H - v` for 0-based pixel indices), and their m
statistics (`mean_m.npy`, `std_m.npy`) are in this convention.

Pose_Para -> m. 3DDFA's `Pose_Para = [pitch, yaw, roll, tx, ty, tz, s]` projects a model point
as `X' = s * R @ X + t` with `R = Rx(pitch) @ Ry(yaw) @ Rz(roll)` (face3d's
`angle2matrix_3ddfa`), and then (x', y') are exactly (u, v): M = [s R[0], s R[1]]^T over
[tx, ty]. Measured on the 16 AFLW2000-3D samples with the real 40 + 10 component landmark
basis of 3DDFA (shared/data/3ddfa/weights), the `pt3d_68` labels sit at (x', H + 1 - y') to
within 1-2 px, with a mean offset of (+0.04, +1.07) px from (x', H - y'): the +1 is MATLAB's
1-based rows, which the corner frame above accounts for.
"""
from __future__ import annotations

import numpy as np
import torch

# iBUG-68 point i of a face is point IBUG68_FLIP[i] of its mirror image (0-based).
IBUG68_FLIP = np.array(
    list(range(16, -1, -1))                            # jaw 0-16
    + list(range(26, 16, -1))                          # eyebrows 17-26
    + [27, 28, 29, 30]                                 # nose bridge
    + [35, 34, 33, 32, 31]                             # nose bottom
    + [45, 44, 43, 42, 47, 46, 39, 38, 37, 36, 41, 40]  # eyes 36-47
    + [54, 53, 52, 51, 50, 49, 48, 59, 58, 57, 56, 55]  # outer lips 48-59
    + [64, 63, 62, 61, 60, 67, 66, 65],                # inner lips 60-67
    dtype=np.int64)


def pose_rotation(pitch: float, yaw: float, roll: float) -> np.ndarray:
    """3x3 rotation `Rx(pitch) @ Ry(yaw) @ Rz(roll)` of 3DDFA's `Pose_Para`."""
    cx, sx, cy, sy, cz, sz = np.cos(pitch), np.sin(pitch), np.cos(yaw), np.sin(yaw), np.cos(roll), np.sin(roll)
    rx = np.array([[1, 0, 0], [0, cx, sx], [0, -sx, cx]])
    ry = np.array([[cy, 0, -sy], [0, 1, 0], [sy, 0, cy]])
    rz = np.array([[cz, sz, 0], [-sz, cz, 0], [0, 0, 1]])
    return rx @ ry @ rz


def _check_pose_para(pose_para) -> np.ndarray:
    p = np.asarray(pose_para, dtype=np.float64).reshape(-1)
    if p.size != 7 or not np.isfinite(p).all():
        raise ValueError(f"Pose_Para must be 7 finite numbers, got {p}")
    return p


def pose_para_to_m(pose_para) -> np.ndarray:
    """(8,) float64 camera m of a 7-number `Pose_Para` (pitch, yaw, roll, tx, ty, tz, scale).
    It does not depend on the image size: v is measured up from the bottom edge."""
    p = _check_pose_para(pose_para)
    sr = p[6] * pose_rotation(*p[:3])
    return np.concatenate([sr[:2].T, p[None, 3:5]]).reshape(-1)


def _matrix(m):
    if m.shape[-1] != 8:
        raise ValueError(f"m must have 8 numbers in its last dimension, got shape {tuple(m.shape)}")
    return m.reshape(*m.shape[:-1], 4, 2)


def m_to_uv(vertices, m):
    """(..., V, 3) model points -> (..., V, 2) (u, v) = [X Y Z 1] @ m.reshape(4, 2).
    Works on numpy arrays and (batched, differentiable) torch tensors alike."""
    M = _matrix(m)
    return vertices @ M[..., :3, :] + M[..., 3:, :]


def uv_to_image(uv, image_height: float):
    """(u, v) of m -> corner-frame image points (x right, y down)."""
    x, y = uv[..., 0] - 0.5, image_height + 0.5 - uv[..., 1]
    return torch.stack([x, y], -1) if isinstance(uv, torch.Tensor) else np.stack([x, y], -1)


def image_to_uv(points, image_height: float):
    """Inverse of `uv_to_image`."""
    u, v = points[..., 0] + 0.5, image_height + 0.5 - points[..., 1]
    return torch.stack([u, v], -1) if isinstance(points, torch.Tensor) else np.stack([u, v], -1)


def matlab_to_image(points):
    """1-based MATLAB pixel coordinates (labels of 300W-LP, AFLW2000-3D, iBUG .pts) -> corner frame."""
    return points - 0.5


def project_m(vertices, m, image_height: float):
    """(..., V, 3) model points -> (..., V, 2) corner-frame image points through camera m."""
    return uv_to_image(m_to_uv(vertices, m), image_height)


def m_depth(vertices, m):
    """(..., V) depth along the camera axis, larger = nearer, in pixels (the mean scale of m's
    two rows). The axis is the cross product of m's normalised rows, as in the authors' renderer;
    it equals Pose_Para's z' - tz when m comes from a Pose_Para."""
    M = _matrix(m)
    r1, r2 = M[..., :3, 0], M[..., :3, 1]
    n1 = (r1 * r1).sum(-1, keepdims=True) ** 0.5
    n2 = (r2 * r2).sum(-1, keepdims=True) ** 0.5
    a, b = r1 / n1, r2 / n2
    axis = [a[..., 1] * b[..., 2] - a[..., 2] * b[..., 1],
            a[..., 2] * b[..., 0] - a[..., 0] * b[..., 2],
            a[..., 0] * b[..., 1] - a[..., 1] * b[..., 0]]
    axis = torch.stack(axis, -1) if isinstance(m, torch.Tensor) else np.stack(axis, -1)
    scale = (n1 + n2) / 2
    return (vertices @ (axis * scale)[..., :, None])[..., 0]


def project_m_with_depth(vertices, m, image_height: float):
    """(..., V, 3): corner-frame x, y and `m_depth` (larger = nearer), ready for `image_to_clip`."""
    xy = project_m(vertices, m, image_height)
    z = m_depth(vertices, m)[..., None]
    return torch.cat([xy, z], -1) if isinstance(xy, torch.Tensor) else np.concatenate([xy, z], -1)


def project_pose_para(vertices: np.ndarray, pose_para: np.ndarray, image_height: int) -> np.ndarray:
    """(V, 3) model vertices -> (V, 3) corner-frame image x, y (pixels, y down) and depth z'
    (larger is nearer), for a 7-number `Pose_Para` = pitch, yaw, roll (radians), tx, ty, tz, scale.
    Same x, y as `project_m(vertices, pose_para_to_m(pose_para), image_height)`."""
    p = _check_pose_para(pose_para)
    rotated = p[6] * vertices.astype(np.float64) @ pose_rotation(*p[:3]).T + p[3:6]
    return np.stack([rotated[:, 0] - 0.5, image_height + 0.5 - rotated[:, 1], rotated[:, 2]], 1)


def _copy(m):
    m = torch.as_tensor(m) if not isinstance(m, (np.ndarray, torch.Tensor)) else m
    return m.clone() if isinstance(m, torch.Tensor) else np.array(m, dtype=np.float64)


def crop_m(m, top: float, left: float, height_before: int, height_after: int):
    """m for the crop of an image starting at row `top`, column `left` (any size: only the
    heights matter, since v is measured from the bottom edge). Batched (..., 8) works;
    `top`/`left` may be arrays broadcasting against m's batch shape."""
    out = _copy(m)
    out[..., 6] = out[..., 6] - left
    out[..., 7] = out[..., 7] - (height_before - height_after) + top
    return out


def resize_m(m, size_before: tuple[int, int], size_after: tuple[int, int]):
    """m for an image resized from (H, W) `size_before` to `size_after` (corner frame scales
    exactly: x' = x * W'/W, y' = y * H'/H)."""
    (h0, w0), (h1, w1) = size_before, size_after
    kx, ky = w1 / w0, h1 / h0
    out = _copy(m)
    out[..., 0:6:2] = out[..., 0:6:2] * kx
    out[..., 1:6:2] = out[..., 1:6:2] * ky
    out[..., 6] = kx * out[..., 6] + 0.5 * (1 - kx)            # x' + 0.5 = kx (u - 0.5) + 0.5
    out[..., 7] = ky * out[..., 7] + h1 + 0.5 - ky * (h0 + 0.5)  # from y = H + 0.5 - v
    return out


def flip_m(m, width: int):
    """m for the horizontally flipped image of the *mirrored* face (X -> -X, vertex i -> its
    mirror partner), so the result is again a scaled rotation: M' = F M F with translation
    u' = W + 1 - u. For a left-right symmetric shape (e.g. a mean face) projecting the same
    shape with the flipped m gives the flipped image; landmark i then corresponds to landmark
    IBUG68_FLIP[i] of the original (use `flip_landmarks`)."""
    out = _copy(m)
    out[..., 2] = -out[..., 2]      # u's Y and Z coefficients change sign
    out[..., 4] = -out[..., 4]
    out[..., 1] = -out[..., 1]      # v's X coefficient changes sign
    out[..., 6] = width + 1 - out[..., 6]
    return out


def flip_landmarks(points, width: int):
    """(..., 68, D) corner-frame landmarks of an image -> those of its horizontal flip, x -> W - x,
    re-ordered so that each index keeps its iBUG meaning (left eye stays point 36-41, ...)."""
    if points.shape[-2] != 68:
        raise ValueError(f"flip_landmarks needs 68 iBUG points, got shape {tuple(points.shape)}")
    flipped = points.clone() if isinstance(points, torch.Tensor) else np.array(points, dtype=np.float64)
    flipped[..., 0] = width - flipped[..., 0]
    return flipped[..., torch.as_tensor(IBUG68_FLIP) if isinstance(points, torch.Tensor) else IBUG68_FLIP, :]


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
