"""The renderer's silent geometric limit, made loud: the guard band.

The kernels do not clip triangles. A vertex whose screen position lies 2^20 pixels
(GUARD_BAND_PIXELS) or more from the image origin makes its triangle undrawable, because the
fixed-point edge functions would overflow int64; such a triangle covers no pixel, however much
of the image it spans. `warn_outside_guard_band` says so once per process.
"""
from __future__ import annotations

import warnings

import torch

from ..constants import GUARD_BAND_PIXELS, MIN_W


class GuardBandWarning(UserWarning):
    """Some triangles were not drawn because a vertex lies outside the guard band."""


_warned = False


def vertices_outside_guard_band(pos: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Bool (B, V): vertices in front of the eye (w >= MIN_W) whose screen x or y is at least GUARD_BAND_PIXELS
    from the origin, computed as the kernels compute it (float64)."""
    p = pos.detach().double()
    w = p[..., 3]
    ahead = w >= MIN_W
    inv_w = 1.0 / torch.where(ahead, w, torch.ones_like(w))
    sx = (p[..., 0] * inv_w + 1.0) * 0.5 * width
    sy = (p[..., 1] * inv_w + 1.0) * 0.5 * height
    return ahead & ((sx.abs() >= GUARD_BAND_PIXELS) | (sy.abs() >= GUARD_BAND_PIXELS))


def may_leave_guard_band(pos: torch.Tensor, height: int, width: int) -> bool:
    """False when no vertex can be outside the guard band: a cheap screen in pos's own dtype
    (no float64 copy, no division) for the exact test. Outside needs |x / w + 1| >= 2G / W,
    hence |x| >= (2G / W - 1) w, with 2G / W - 1 >= 127; 1 % slack covers rounding."""
    p = pos.detach()
    w = p[..., 3:4]
    ratio = 0.99 * (2.0 * GUARD_BAND_PIXELS / max(height, width) - 1.0)
    return bool(((p[..., :2].abs() >= ratio * w) & (w >= MIN_W)).any())


def warn_outside_guard_band(pos: torch.Tensor, height: int, width: int) -> None:
    """Warn (once per process) when a vertex lies outside the guard band. After the warning
    the check is skipped; until then it costs a cheap screen of pos per call."""
    global _warned
    if _warned or not may_leave_guard_band(pos, height, width):
        return
    outside = vertices_outside_guard_band(pos, height, width)
    if bool(outside.any()):
        _warned = True
        count = int(outside.sum())
        warnings.warn(
            f"{count} vertices lie {GUARD_BAND_PIXELS} pixels or more outside the image in "
            f"screen space (first at (batch, vertex) {tuple(outside.nonzero()[0].tolist())}); "
            "their triangles are not drawn, since the rasterizer does not clip. Scale or clip "
            "the geometry first. (Warned once per process.)", GuardBandWarning, stacklevel=3)
