"""The mip pyramid of a texture, for trilinear lookups (sample_texture(..., uv_da=...)).

Level l of an (Ht, Wt) texture has max(1, Ht >> l) x max(1, Wt >> l) texels, down to 1 x 1 at
level floor(log2(max(Ht, Wt))), the deepest level there is (at most 14, since textures have
at most 16384 texels a side). Every level spans the whole of uv's [0, 1]^2 with texel centres
at ((j + 0.5) / w_l, (i + 0.5) / h_l), so a coarse texel is the average of the part of the
finer level it covers: a 2x2 box for even sizes; along an odd side n = 2m + 1, each of the m
coarse texels covers n / m = 2 + 1/m fine texels, averaged with those exact area weights
(three taps), so no row or column is dropped and no level is shifted against the others.
A side that has reached 1 stays 1.

Built from torch ops, so the gradient of anything sampled from the pyramid reaches the base
texture through autograd, on any device.
"""
from __future__ import annotations

from typing import Optional

import torch

from . import checks


def deepest_level(height: int, width: int) -> int:
    """The 1 x 1 level of an (height, width) texture: floor(log2(max(height, width)))."""
    return max(int(height), int(width)).bit_length() - 1


def level_shape(height: int, width: int, level: int) -> tuple[int, int]:
    """(rows, columns) of mip level `level` (render_math.h: mip_level_size)."""
    return max(1, int(height) >> level), max(1, int(width) >> level)


def _halve(x: torch.Tensor, dim: int) -> torch.Tensor:
    """x with dimension `dim` (n texels) reduced to max(1, n // 2) by area-weighted averaging."""
    n = x.shape[dim]
    if n == 1:
        return x
    m = n // 2
    if n % 2 == 0:
        return x.unflatten(dim, (m, 2)).mean(dim + 1)
    # Coarse texel i covers fine texels [i n/m, (i + 1) n/m); in units of 1/m of a fine texel
    # the overlap with fine texel j is exact integer arithmetic. Three taps always suffice.
    i = torch.arange(m, device=x.device)
    first = (i * n) // m
    shape = [1] * x.dim()
    shape[dim] = m
    out = None
    for t in range(3):
        j = first + t
        overlap = (torch.minimum((i + 1) * n, (j + 1) * m) - torch.maximum(i * n, j * m)).clamp(min=0)
        term = x.index_select(dim, j.clamp(max=n - 1)) * (overlap.to(x.dtype) / n).view(shape)
        out = term if out is None else out + term
    return out


def mip_levels(tex: torch.Tensor, max_mip_level: Optional[int] = None) -> list[torch.Tensor]:
    """Levels 1..L of the mip pyramid of tex (B, Ht, Wt, C); level 0 is tex itself.

    L is `max_mip_level`, or the deepest level (1 x 1) when it is None or larger. Pass the
    result as sample_texture(..., mip=...) to build the pyramid of a shared texture once per
    step instead of once per call; gradients reach tex through autograd either way.
    """
    if not isinstance(tex, torch.Tensor) or tex.dim() != 4 or min(tex.shape) == 0:
        raise ValueError(f"tex must be a non-empty (B, Ht, Wt, C) tensor, got "
                         f"{tuple(tex.shape) if isinstance(tex, torch.Tensor) else type(tex).__name__}")
    deepest = deepest_level(tex.shape[1], tex.shape[2])
    count = deepest if max_mip_level is None else min(checks.check_max_mip_level(max_mip_level), deepest)
    levels, level = [], tex
    for _ in range(count):
        level = _halve(_halve(level, 1), 2)
        levels.append(level)
    return levels


def check_levels(mip: object, tex: torch.Tensor, validate: str = "full") -> list[torch.Tensor]:
    """Levels 1..L of tex's pyramid as mip_levels(tex) builds them: level l is
    (Bt, max(1, Ht >> l), max(1, Wt >> l), C), tex's dtype and device, finite."""
    if not isinstance(mip, (list, tuple)) or not all(isinstance(m, torch.Tensor) for m in mip):
        raise TypeError(f"mip must be a list of tensors (levels 1..L, from mip_levels(tex)), got {type(mip).__name__}")
    Bt, Ht, Wt, C = tex.shape
    deepest = deepest_level(Ht, Wt)
    if len(mip) > deepest:
        raise ValueError(f"mip has {len(mip)} levels but a {Ht} x {Wt} texture has only {deepest} below level 0")
    for level, m in enumerate(mip, start=1):
        expected = (Bt, *level_shape(Ht, Wt, level), C)
        if tuple(m.shape) != expected:
            raise ValueError(f"mip[{level - 1}] (level {level}) must have shape {expected}, got {tuple(m.shape)}")
        if m.dtype != tex.dtype or m.device != tex.device:
            raise TypeError(f"mip[{level - 1}] is {m.dtype} on {m.device} but tex is {tex.dtype} on {tex.device}")
        checks.require_finite("mip", m.detach(), validate, "sample_texture")
    return list(mip)
