"""Input validation for the rendering ops.

Every op validates before dispatching, so every backend (and the reference) sees the same
well-formed tensors and users get an error that names the offending argument instead of a
crash or a silently wrong image. Shape, dtype and device problems raise TypeError/ValueError
at once; value checks (finite values, index ranges) cost one pass over the data and run in
the op's `validate` mode: "full" (on the host, at once) or "deferred" (counted on the device
and reported by check_pending(), see pending.py).
"""
from __future__ import annotations

import weakref
from typing import Optional

import torch

from ..constants import BOUNDARY_MODES, MAX_RESOLUTION, MAX_TRIANGLES
from . import pending
from .backends.cpu import _C  # None in a source checkout never built: torch does the checks

FLOAT_DTYPES = (torch.float32, torch.float64)
VALIDATE_MODES = ("full", "deferred")


def resolve_validate(validate: Optional[str], device: torch.device) -> str:
    """The op's value-check mode: as given, else "full" on the CPU and "deferred" elsewhere."""
    if validate is None:
        return "full" if device.type == "cpu" else "deferred"
    if not isinstance(validate, str) or validate not in VALIDATE_MODES:
        raise ValueError(f"validate must be one of {VALIDATE_MODES} or None, got {validate!r}")
    return validate


def nonfinite_on_device(x: torch.Tensor) -> torch.Tensor:
    """0-d bool on x's device: any NaN/Inf. aminmax propagates NaN and sees +-Inf, in one
    read and without a mask the size of x (and, unlike a sum, cannot overflow)."""
    lo, hi = torch.aminmax(x.detach())
    return ~(torch.isfinite(lo) & torch.isfinite(hi))


def _all_finite(x: torch.Tensor) -> bool:
    """True when x has no NaN/Inf. A contiguous CPU tensor is scanned by the CPU kernels' pool:
    torch's own threads, asleep after a pause, took ~5 ms to wake for this 1 ms check
    (bench/results/pool-2026-12-02.md). Otherwise torch sums it, and False may also mean the
    sum overflowed (the caller then looks element by element)."""
    if x.device.type == "cpu" and x.is_contiguous() and x.dtype in FLOAT_DTYPES and _C is not None:
        return _C.all_finite(x.data_ptr(), x.numel(), x.dtype == torch.float64)
    # A sum is NaN/Inf whenever an element is, and costs one read with no mask allocation.
    return bool(torch.isfinite(x.sum()))


def require_tensor(name: str, x: object) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    return x


def require_float(name: str, x: torch.Tensor) -> None:
    if x.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} must be float32 or float64, got {x.dtype}")


def require_finite(name: str, x: torch.Tensor, validate: str = "full", op: str = "") -> None:
    if validate == "deferred":
        pending.record(op, name, nonfinite_on_device(x))
        return
    if x.numel() == 0 or _all_finite(x):
        return
    bad = (~torch.isfinite(x)).nonzero()
    if len(bad):
        raise ValueError(f"{name} contains NaN or Inf (first at index {tuple(bad[0].tolist())})")


def check_resolution(resolution: object) -> tuple[int, int]:
    try:
        if isinstance(resolution, (str, bytes)) or any(isinstance(r, bool) for r in resolution):  # type: ignore[union-attr]
            raise TypeError  # '12' would read as (1, 2) and (True, True) as (1, 1)
        height, width = (int(r) for r in resolution)  # type: ignore[union-attr]
        if any(float(r) != int(r) for r in resolution):  # type: ignore[union-attr]
            raise ValueError
    except (TypeError, ValueError):
        raise TypeError(f"resolution must be a pair of ints (height, width), got {resolution!r}") from None
    if not (1 <= height <= MAX_RESOLUTION and 1 <= width <= MAX_RESOLUTION):
        raise ValueError(f"resolution must be within 1..{MAX_RESOLUTION} on each side, got ({height}, {width})")
    return height, width


def check_pos(pos: object, validate: str = "full", op: str = "rasterize") -> torch.Tensor:
    pos = require_tensor("pos", pos)
    require_float("pos", pos)
    if pos.dim() != 3 or pos.shape[-1] != 4:
        raise ValueError(f"pos must have shape (B, V, 4) (clip-space x, y, z, w), got {tuple(pos.shape)}")
    if pos.shape[0] == 0:
        raise ValueError("pos has an empty batch (B = 0)")
    if pos.shape[1] == 0:
        raise ValueError("pos has no vertices (V = 0): the mesh is empty")
    require_finite("pos", pos.detach(), validate, op)
    return pos


class _Validated:
    """Remembers tensors whose values passed a full check, until they are modified in place
    (torch bumps `_version`) or freed. Meshes are validated once, not on every call, and a
    raster coming straight from `rasterize` is not re-scanned by `interpolate`.

    Only weak references to the tensors are kept: an entry disappears when its tensor is
    freed (a weakref callback), and at most MAX_ENTRIES are kept (oldest dropped first), so
    the cache never keeps a tensor, or the int32 copy made of an int64 one, alive for long.
    Writes that bypass `_version` (through `.numpy()` or `.data`) are not noticed: the
    kernels bounds-check indices themselves, so such a write can give a wrong image but
    never an out-of-bounds read.
    """

    MAX_ENTRIES = 32

    def __init__(self) -> None:
        # id(tensor) -> (weak reference, _version, key, converted copy or None for "itself")
        self._seen: dict[int, tuple[weakref.ref, int, object, torch.Tensor | None]] = {}

    def __len__(self) -> int:
        return len(self._seen)

    def get(self, t: torch.Tensor, key: object) -> torch.Tensor | None:
        """The validated form of t (t itself or its converted copy), or None if unknown."""
        entry = self._seen.get(id(t))
        if entry is None or entry[0]() is not t or entry[1] != t._version or entry[2] != key:
            return None
        return t if entry[3] is None else entry[3]

    def add(self, t: torch.Tensor, key: object, result: torch.Tensor | None = None) -> None:
        seen, tid = self._seen, id(t)

        def forget(ref: weakref.ref) -> None:  # t was freed: drop its entry (if still ours)
            if tid in seen and seen[tid][0] is ref:
                del seen[tid]

        seen.pop(tid, None)  # re-inserted last: the dict's order is the age order
        seen[tid] = (weakref.ref(t, forget), t._version, key,
                     None if result is None or result is t else result)
        while len(seen) > self.MAX_ENTRIES:
            del seen[next(iter(seen))]


VALIDATED = _Validated()


def check_tri(tri: object, num_vertices: int, device: torch.device, validate: str = "full",
              op: str = "rasterize") -> torch.Tensor:
    """Returns tri as contiguous int32 after checking shape and index range."""
    tri = require_tensor("tri", tri)
    key = ("tri", num_vertices, device)
    cached = VALIDATED.get(tri, key)
    if cached is not None:
        return cached
    if tri.dtype not in (torch.int32, torch.int64):
        raise TypeError(f"tri must be int32 (int64 is accepted), got {tri.dtype}")
    if tri.dim() != 2 or tri.shape[1] != 3:
        raise ValueError(f"tri must have shape (F, 3), got {tuple(tri.shape)}")
    if tri.shape[0] == 0:
        raise ValueError("tri has no triangles (F = 0): the mesh is empty")
    if tri.shape[0] > MAX_TRIANGLES:
        raise ValueError(f"tri has {tri.shape[0]} triangles; at most {MAX_TRIANGLES} are supported")
    if tri.device != device:
        raise ValueError(f"tri is on {tri.device} but the other inputs are on {device}")
    if validate == "deferred":  # not cached: a bad tri must be counted on every call
        lo, hi = torch.aminmax(tri)
        pending.record(op, "tri", (lo < 0) | (hi >= num_vertices))
        return tri.to(torch.int32).contiguous()
    lo, hi = int(tri.min()), int(tri.max())
    if lo < 0:
        raise ValueError(f"tri contains a negative vertex index ({lo}); indices are 0-based")
    if hi >= num_vertices:
        raise ValueError(f"tri references vertex {hi} but there are only {num_vertices} vertices "
                         "(indices are 0-based; 1-based files need `tri - 1`)")
    result = tri.to(torch.int32).contiguous()
    VALIDATED.add(tri, key, result)
    return result


def check_rast(rast: object) -> torch.Tensor:
    """Shape and dtype of a raster; its values are checked by check_rast_values."""
    rast = require_tensor("rast", rast)
    require_float("rast", rast)
    if rast.dim() != 4 or rast.shape[-1] != 4:
        raise ValueError(f"rast must have shape (B, H, W, 4) as returned by rasterize, got {tuple(rast.shape)}")
    if min(rast.shape[:3]) == 0:
        raise ValueError(f"rast is empty, got shape {tuple(rast.shape)}")
    return rast


def check_rast_values(rast: torch.Tensor, num_triangles: int, validate: str = "full",
                      op: str = "interpolate") -> None:
    if VALIDATED.get(rast, ("rast", num_triangles)) is not None:
        return
    if validate == "deferred":
        ids = rast[..., 3].detach()
        lo, hi = torch.aminmax(ids)
        bad = nonfinite_on_device(rast) | (lo < 0) | (hi > num_triangles) | (ids != ids.round()).any()
        pending.record(op, "rast", bad)
        return
    require_finite("rast", rast.detach())
    ids = rast[..., 3].detach()
    if bool((ids != ids.round()).any()) or int(ids.min()) < 0 or int(ids.max()) > num_triangles:
        raise ValueError(f"rast[..., 3] must hold triangle ids 0..{num_triangles} (0 = empty); "
                         "was rast produced by rasterize with this tri?")
    VALIDATED.add(rast, ("rast", num_triangles))


def check_attr(attr: object, batch: int, dtype: torch.dtype, device: torch.device,
               validate: str = "full", op: str = "interpolate") -> tuple[torch.Tensor, bool]:
    """Returns (attr, batched): attr is (B, V, C) per image or (V, C) / (1, V, C) shared."""
    attr = require_tensor("attr", attr)
    if attr.device != device:
        raise ValueError(f"attr is on {attr.device} but rast is on {device}")
    require_float("attr", attr)
    if attr.dim() == 2:
        attr = attr.unsqueeze(0)
    if attr.dim() != 3:
        raise ValueError(f"attr must have shape (B, V, C) or (V, C), got {tuple(attr.shape)}")
    if attr.shape[0] not in (1, batch):
        raise ValueError(f"attr has batch {attr.shape[0]} but rast has batch {batch} (use 1 to share)")
    if attr.shape[1] == 0 or attr.shape[2] == 0:
        raise ValueError(f"attr is empty, got shape {tuple(attr.shape)}")
    if attr.dtype != dtype:
        raise TypeError(f"attr is {attr.dtype} but rast is {dtype}; use one dtype")
    require_finite("attr", attr.detach(), validate, op)
    return attr, attr.shape[0] == batch and batch > 1


def check_texture(tex: object, batch: int, dtype: torch.dtype, device: torch.device,
                  validate: str = "full") -> tuple[torch.Tensor, bool]:
    tex = require_tensor("tex", tex)
    if tex.device != device:
        raise ValueError(f"tex is on {tex.device} but uv is on {device}")
    require_float("tex", tex)
    if tex.dim() != 4:
        raise ValueError(f"tex must have shape (B, Ht, Wt, C), got {tuple(tex.shape)}")
    if tex.shape[0] not in (1, batch):
        raise ValueError(f"tex has batch {tex.shape[0]} but uv has batch {batch} (use 1 to share)")
    if min(tex.shape[1:]) == 0:
        raise ValueError(f"tex is empty, got shape {tuple(tex.shape)}")
    if max(tex.shape[1], tex.shape[2]) > MAX_RESOLUTION:
        raise ValueError(f"tex is larger than {MAX_RESOLUTION} texels on a side: {tuple(tex.shape)}")
    if tex.dtype != dtype:
        raise TypeError(f"tex is {tex.dtype} but uv is {dtype}; use one dtype")
    require_finite("tex", tex.detach(), validate, "sample_texture")
    return tex, tex.shape[0] == batch and batch > 1


def check_uv(uv: object, validate: str = "full") -> torch.Tensor:
    uv = require_tensor("uv", uv)
    require_float("uv", uv)
    if uv.dim() != 4 or uv.shape[-1] != 2:
        raise ValueError(f"uv must have shape (B, H, W, 2), got {tuple(uv.shape)}")
    if min(uv.shape[:3]) == 0:
        raise ValueError(f"uv is empty, got shape {tuple(uv.shape)}")
    require_finite("uv", uv.detach(), validate, "sample_texture")
    return uv


def check_boundary(boundary: object) -> str:
    if not isinstance(boundary, str) or boundary not in BOUNDARY_MODES:
        raise ValueError(f"boundary must be one of {tuple(BOUNDARY_MODES)}, got {boundary!r}")
    return boundary  # type: ignore[return-value]


def check_color(color: object, rast: torch.Tensor, validate: str = "full") -> torch.Tensor:
    """antialias's image: (B, H, W, C) like rast's first three sizes, rast's dtype and device."""
    color = require_tensor("color", color)
    require_float("color", color)
    if color.dim() != 4 or color.shape[-1] == 0:
        raise ValueError(f"color must have shape (B, H, W, C) with C >= 1, got {tuple(color.shape)}")
    if tuple(color.shape[:3]) != tuple(rast.shape[:3]):
        raise ValueError(f"color has shape {tuple(color.shape)} but rast is {tuple(rast.shape)}: "
                         "B, H, W must match")
    if color.device != rast.device:
        raise ValueError(f"color is on {color.device} but rast is on {rast.device}")
    if color.dtype != rast.dtype:
        raise TypeError(f"color is {color.dtype} but rast is {rast.dtype}; use one dtype")
    require_finite("color", color.detach(), validate, "antialias")
    return color


def check_pos_matches(pos: torch.Tensor, rast: torch.Tensor) -> None:
    """antialias's vertices must be the batch, dtype and device the raster was drawn from."""
    if pos.shape[0] != rast.shape[0]:
        raise ValueError(f"pos has batch {pos.shape[0]} but rast has batch {rast.shape[0]}")
    if pos.device != rast.device:
        raise ValueError(f"pos is on {pos.device} but rast is on {rast.device}")
    if pos.dtype != rast.dtype:
        raise TypeError(f"pos is {pos.dtype} but rast is {rast.dtype}; use one dtype")


def check_topology(topology: object, num_triangles: int, num_vertices: int, device: torch.device,
                   validate: str = "full") -> torch.Tensor:
    """antialias's edge topology (render/topology.py): (F, 3) int, values -1..V-1; int32 copy."""
    topology = require_tensor("topology", topology)
    key = ("topology", num_triangles, num_vertices, device)
    cached = VALIDATED.get(topology, key)
    if cached is not None:
        return cached
    if topology.dtype not in (torch.int32, torch.int64):
        raise TypeError(f"topology must be int32 (int64 is accepted), got {topology.dtype}")
    if tuple(topology.shape) != (num_triangles, 3):
        raise ValueError(f"topology must have shape (F, 3) = ({num_triangles}, 3) like tri, "
                         f"got {tuple(topology.shape)} (make it with edge_opposites(tri))")
    if topology.device != device:
        raise ValueError(f"topology is on {topology.device} but the other inputs are on {device}")
    if validate == "deferred":
        lo, hi = torch.aminmax(topology)
        pending.record("antialias", "topology", (lo < -1) | (hi >= num_vertices))
        return topology.to(torch.int32).contiguous()
    lo, hi = int(topology.min()), int(topology.max())
    if lo < -1 or hi >= num_vertices:
        raise ValueError(f"topology holds {lo if lo < -1 else hi}, outside -1..{num_vertices - 1} "
                         "(-1: no triangle across the edge; otherwise a vertex index)")
    result = topology.to(torch.int32).contiguous()
    VALIDATED.add(topology, key, result)
    return result


def check_derivative_pos(pos: object, rast: torch.Tensor, num_vertices: int,
                         validate: str = "full") -> torch.Tensor:
    """The clip positions interpolate_derivatives recomputes the barycentrics' derivatives
    from: the (B, V, 4) pos given to rasterize, in rast's dtype and on its device."""
    pos = require_tensor("pos", pos)
    if pos.device != rast.device:
        raise ValueError(f"pos is on {pos.device} but rast is on {rast.device}")
    require_float("pos", pos)
    if pos.dim() != 3 or pos.shape[-1] != 4:
        raise ValueError(f"pos must have shape (B, V, 4) (clip-space x, y, z, w), got {tuple(pos.shape)}")
    if pos.shape[0] != rast.shape[0]:
        raise ValueError(f"pos has batch {pos.shape[0]} but rast has batch {rast.shape[0]}")
    if pos.shape[1] != num_vertices:
        raise ValueError(f"pos has {pos.shape[1]} vertices but attr has {num_vertices}")
    if pos.dtype != rast.dtype:
        raise TypeError(f"pos is {pos.dtype} but rast is {rast.dtype}; use one dtype")
    require_finite("pos", pos.detach(), validate, "interpolate_derivatives")
    return pos


def require_per_pixel(name: str, x: object, shape: tuple, layout: str, like_name: str, like: torch.Tensor,
                      validate: str, op: str) -> torch.Tensor:
    """A float input of exactly `shape` (described by `layout` in the error), on `like`'s device
    and in its dtype, finite."""
    x = require_tensor(name, x)
    require_float(name, x)
    if tuple(x.shape) != tuple(shape):
        raise ValueError(f"{name} must have shape {layout}, got {tuple(x.shape)}")
    if x.device != like.device:
        raise ValueError(f"{name} is on {x.device} but {like_name} is on {like.device}")
    if x.dtype != like.dtype:
        raise TypeError(f"{name} is {x.dtype} but {like_name} is {like.dtype}; use one dtype")
    require_finite(name, x.detach(), validate, op)
    return x


def check_uv_da(uv_da: object, uv: torch.Tensor, validate: str = "full") -> torch.Tensor:
    """uv's screen derivatives (B, H, W, 4) = (du/dx, du/dy, dv/dx, dv/dy), as returned by
    interpolate_derivatives for a 2-channel uv attribute."""
    shape = (*uv.shape[:3], 4)
    return require_per_pixel("uv_da", uv_da, shape, f"{shape} (du/dx, du/dy, dv/dx, dv/dy per pixel of uv)",
                             "uv", uv, validate, "sample_texture")


def check_max_mip_level(max_mip_level: object) -> int:
    if isinstance(max_mip_level, bool) or not isinstance(max_mip_level, int) or max_mip_level < 0:
        raise ValueError(f"max_mip_level must be an int >= 0 or None, got {max_mip_level!r}")
    return max_mip_level


def check_textured_uv(uv: object, pos: torch.Tensor, rast: torch.Tensor,
                      validate: str = "full") -> tuple[torch.Tensor, bool]:
    """render_textured's per-vertex uv: (B, V, 2) or (V, 2) / (1, V, 2), one row per vertex of pos."""
    attr, batched = check_attr(uv, rast.shape[0], rast.dtype, rast.device, validate, "render_textured")
    if attr.shape[2] != 2:
        raise ValueError(f"uv must have 2 channels (u, v), got shape {tuple(attr.shape)}")
    if attr.shape[1] != pos.shape[1]:
        raise ValueError(f"uv has {attr.shape[1]} vertices but pos has {pos.shape[1]}: one uv per vertex")
    return attr, batched


def check_background(background: object, rast: torch.Tensor, channels: int,
                     validate: str = "full") -> torch.Tensor:
    """render_textured's background: (B, H, W, C) like the image, rast's dtype and device."""
    shape = (*rast.shape[:3], channels)
    return require_per_pixel("background", background, shape,
                             f"(B, H, W, C) = {shape} (the texture has C = {channels})", "pos", rast, validate,
                             "render_textured")


def check_mask_multiplier(mask: object, rast: torch.Tensor, validate: str = "full") -> torch.Tensor:
    """render_textured's mask multiplier: (B, H, W), rast's dtype and device, finite (the
    coverage 0 times an infinite multiplier would be NaN)."""
    shape = tuple(rast.shape[:3])
    return require_per_pixel("mask", mask, shape, f"(B, H, W) = {shape}", "pos", rast, validate, "render_textured")
