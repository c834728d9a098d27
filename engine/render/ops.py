"""The differentiable rendering ops: rasterize -> interpolate -> sample_texture, and antialias.

For textures much larger than their screen footprint, interpolate_derivatives gives uv's
screen derivatives and sample_texture(..., uv_da=...) samples a mip pyramid trilinearly.

Like nvdiffrast, three small orthogonal ops with their own backward passes, composed by the
caller. Each validates its inputs, picks a backend (engine/render/backends) and wraps the
backend's kernels in a torch.autograd.Function. `backend="reference"` runs the pure-torch
reference (engine/render/reference.py) with autograd instead.

Conventions
-----------
* Clip space, as nvdiffrast: ``pos`` is (B, V, 4) homogeneous (x, y, z, w). Screen position
  is ``((x/w + 1) / 2 * W, (y/w + 1) / 2 * H)``; output row ``r`` covers screen y in
  ``[r, r + 1)``, so row 0 is clip y = -1 (for image coordinates with y down, use
  ``y_clip = 2 * y_pixel / H - 1``). Each pixel is sampled at its centre ``(c + 0.5, r + 0.5)``.
  Weak perspective is w = 1; perspective (w != 1) gives perspective-correct barycentrics.
* Depth is z/w; fragments with depth outside [-1, 1] are not drawn. Smaller depth is nearer.
* Clipping, as in OpenGL/nvdiffrast: a triangle reaching outside the clip volume (behind the
  near plane z = -w, beyond the far plane z = w, or past the guard band planes
  |x| <= (2^20 / W) w, |y| <= (2^20 / H) w) is clipped in clip space and the visible polygon
  is drawn, under the original triangle's id and with the original triangle's barycentrics
  and depth at each pixel (a 2D-homogeneous formula, valid for any sign of w). So a triangle
  with a vertex behind the eye (w <= 0) or far outside the image draws its visible part, and
  gradients reach every vertex, the one behind the eye included. Clipping is decided with the
  same arithmetic as it is done, so a mesh crossing the near plane stays watertight.
* Visibility is race-free and deterministic: the nearest fragment wins and equal depths go to
  the smaller triangle index (a packed float32-depth | triangle-id minimum). Coverage uses
  vertex positions snapped to 1/256 pixel and exact integer edge functions, so an edge
  shared by two triangles is drawn by exactly one of them.
* Front faces are counter-clockwise in clip space (x right, y up). ``cull_backfaces=True``
  drops clockwise triangles. Degenerate (zero-area) triangles are skipped, never NaN.
* The raster is (B, H, W, 4): (b0, b1, depth, triangle_id + 1), 0 everywhere on empty pixels.
  b0, b1 are the perspective-correct barycentric weights of the triangle's first two
  vertices (the third is 1 - b0 - b1). Gradients flow to ``pos`` through b0, b1 and depth;
  visibility itself (which triangle wins, coverage at silhouettes) is not differentiated by
  rasterize: ``antialias`` adds those gradients (visibility gradients at silhouette edges).

Limits
------
* At most 2^24 - 1 triangles (ids travel as float32) and 16384 pixels on a side.
* Clipping and resolving run in float64 (float32 positions are converted exactly first), so
  float32 inputs lose only the final rounding of the outputs, near the clip plane too.
  Float64 coordinates beyond about 1e150 overflow the products of the homogeneous formula.
* A vertex (or clipped polygon vertex) inside the clip volume with w below the smallest
  normal float32 (1.18e-38) drops its triangle in every dtype: its 1/w would overflow.
* ``antialias`` blends a clipped front triangle (a vertex behind the eye or beyond 2^20 px,
  which has no screen position) at the visible part of each of its edges: clipping keeps an
  edge's line, so that part is blended like a whole edge, and its crossings come from the
  line through the two homogeneous vertices (valid for any sign of w), so gradients reach the
  vertex behind the eye. The polygon's new edges on the clip planes are not blended: they
  are not edges of the mesh (nvdiffrast has no such case: it projects a vertex behind the eye
  through 1/w like any other). Interior edges next to a clipped triangle are recognised as such.

Validation
----------
Every op checks shapes, dtypes and devices at once, and values (no NaN/Inf in pos, attr, tex,
uv; vertex indices and raster ids in range) in the mode `validate` selects:
``"full"`` checks on the host before the kernels run (on CUDA: a device-to-host sync per
checked tensor, about four per forward); ``"deferred"`` counts failures on the device without
any sync and reports them at ``nl3dmm.render.check_pending()`` (one sync; call it once per
training step) or, on CUDA, at a later op once the counts have reached the host. None picks
"full" for CPU tensors and "deferred" for CUDA tensors. Cost of "deferred": one reduction per
checked tensor plus a few tiny kernels per op. Either way the kernels bounds-check indices, so
no input makes them read out of bounds. Details: engine/render/pending.py.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch.autograd.function import once_differentiable

from . import checks, mipmap, pending, reference, topology as edge_topology
from .backends import Backend, get_backend, resolve_backend_name


def _prepare(name: str, first: object, backend: Optional[str], validate: Optional[str]
             ) -> tuple[str, str]:
    """(backend name, validate mode) of an op whose leading tensor argument is `first`. In
    deferred mode, first report what an earlier op's completed checks found."""
    device = checks.require_tensor(name, first).device
    mode = checks.resolve_validate(validate, device)
    if mode == "deferred":
        pending.begin(device)
    return resolve_backend_name(backend, device), mode


class _Rasterize(torch.autograd.Function):
    @staticmethod
    def forward(ctx, pos, tri, height, width, cull_backfaces, backend: Backend):
        rast = backend.rasterize(pos, tri, height, width, cull_backfaces)
        ctx.backend = backend
        ctx.save_for_backward(pos, tri, rast)
        return rast

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_rast):
        pos, tri, rast = ctx.saved_tensors
        grad_pos = None
        if ctx.needs_input_grad[0]:
            grad_pos = ctx.backend.rasterize_backward(pos, tri, rast, grad_rast.contiguous())
        return grad_pos, None, None, None, None, None


class _Interpolate(torch.autograd.Function):
    @staticmethod
    def forward(ctx, attr, attr_batched, rast, tri, backend: Backend):
        out = backend.interpolate(attr, attr_batched, rast, tri)
        ctx.backend, ctx.attr_batched = backend, attr_batched
        ctx.save_for_backward(attr, rast, tri)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        attr, rast, tri = ctx.saved_tensors
        if not (ctx.needs_input_grad[0] or ctx.needs_input_grad[2]):
            return None, None, None, None, None
        grad_attr, grad_rast = ctx.backend.interpolate_backward(
            attr, ctx.attr_batched, rast, tri, grad_out.contiguous())
        return (grad_attr if ctx.needs_input_grad[0] else None, None,
                grad_rast if ctx.needs_input_grad[2] else None, None, None)


class _SampleTexture(torch.autograd.Function):
    @staticmethod
    def forward(ctx, tex, tex_batched, uv, boundary, backend: Backend):
        out = backend.sample_texture(tex, tex_batched, uv, boundary)
        ctx.backend, ctx.tex_batched, ctx.boundary = backend, tex_batched, boundary
        ctx.save_for_backward(tex, uv)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        tex, uv = ctx.saved_tensors
        if not (ctx.needs_input_grad[0] or ctx.needs_input_grad[2]):
            return None, None, None, None, None
        grad_tex, grad_uv = ctx.backend.sample_texture_backward(
            tex, ctx.tex_batched, uv, ctx.boundary, grad_out.contiguous())
        return (grad_tex if ctx.needs_input_grad[0] else None, None,
                grad_uv if ctx.needs_input_grad[2] else None, None, None)


class _Antialias(torch.autograd.Function):
    @staticmethod
    def forward(ctx, color, rast, pos, tri, topology, backend: Backend):
        out = backend.antialias(color, rast, pos, tri, topology)
        ctx.backend = backend
        ctx.save_for_backward(color, rast, pos, tri, topology)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        color, rast, pos, tri, topology = ctx.saved_tensors
        if not (ctx.needs_input_grad[0] or ctx.needs_input_grad[2]):
            return None, None, None, None, None, None
        grad_color, grad_pos = ctx.backend.antialias_backward(color, rast, pos, tri, topology,
                                                              grad_out.contiguous())
        return (grad_color if ctx.needs_input_grad[0] else None, None,
                grad_pos if ctx.needs_input_grad[2] else None, None, None, None)


class _InterpolateDerivatives(torch.autograd.Function):
    """Gradient to attr only: the derivatives depend on pos too, which gets none (documented)."""

    @staticmethod
    def forward(ctx, attr, attr_batched, rast, tri, pos, backend: Backend):
        out = backend.interpolate_derivatives(attr, attr_batched, rast, tri, pos)
        ctx.backend, ctx.attr_batched = backend, attr_batched
        ctx.save_for_backward(attr, rast, tri, pos)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        attr, rast, tri, pos = ctx.saved_tensors
        grad_attr = None
        if ctx.needs_input_grad[0]:
            grad_attr = ctx.backend.interpolate_derivatives_backward(
                attr, ctx.attr_batched, rast, tri, pos, grad_out.contiguous())
        return grad_attr, None, None, None, None, None


class _SampleTextureMip(torch.autograd.Function):
    """Trilinear lookup in the packed pyramid (all levels of an image back to back, level 0
    first); autograd carries the packed gradient back to the levels and to the texture."""

    @staticmethod
    def forward(ctx, packed, tex_batched, uv, uv_da, boundary, tex_h, tex_w, max_level, backend: Backend):
        shape = (tex_h, tex_w, max_level)
        out = backend.sample_texture_mip(packed, tex_batched, uv, uv_da, boundary, shape)
        ctx.backend, ctx.tex_batched, ctx.boundary, ctx.shape = backend, tex_batched, boundary, shape
        ctx.save_for_backward(packed, uv, uv_da)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        packed, uv, uv_da = ctx.saved_tensors
        if not any(ctx.needs_input_grad[i] for i in (0, 2, 3)):
            return (None,) * 9
        grad_packed, grad_uv, grad_uv_da = ctx.backend.sample_texture_mip_backward(
            packed, ctx.tex_batched, uv, uv_da, ctx.boundary, ctx.shape, grad_out.contiguous())
        return (grad_packed if ctx.needs_input_grad[0] else None, None,
                grad_uv if ctx.needs_input_grad[2] else None,
                grad_uv_da if ctx.needs_input_grad[3] else None, None, None, None, None, None)


def rasterize(pos: torch.Tensor, tri: torch.Tensor, resolution: tuple[int, int],
              cull_backfaces: bool = False, backend: Optional[str] = None,
              validate: Optional[str] = None) -> torch.Tensor:
    """Z-buffer rasterization of a batch of meshes sharing one triangle list.

    Args:
        pos: (B, V, 4) float32/float64 clip-space vertex positions.
        tri: (F, 3) int32 (or int64) 0-based vertex indices, shared by the batch.
        resolution: (H, W) of the output image, any size from 1 to 16384.
        cull_backfaces: drop clockwise (back-facing) triangles.
        backend: "cpu", "cuda", "triton", "reference" or None (chosen from the device).
        validate: "full", "deferred" or None (see the module docstring).

    Returns:
        (B, H, W, 4) raster (b0, b1, depth, triangle_id + 1) in pos's dtype; see the module
        docstring for the exact conventions.
    """
    name, mode = _prepare("pos", pos, backend, validate)
    pos = checks.check_pos(pos, mode)
    height, width = checks.check_resolution(resolution)
    tri = checks.check_tri(tri, pos.shape[1], pos.device, mode, "rasterize")
    if mode == "deferred":
        pending.end(pos.device)
    if name == "reference":
        rast = reference.rasterize(pos, tri, (height, width), bool(cull_backfaces))
    else:
        rast = _Rasterize.apply(pos.contiguous(), tri, height, width, bool(cull_backfaces),
                                get_backend(name))
    checks.VALIDATED.add(rast, ("rast", tri.shape[0]))  # interpolate need not re-scan it
    return rast


def interpolate(attr: torch.Tensor, rast: torch.Tensor, tri: torch.Tensor,
                backend: Optional[str] = None, validate: Optional[str] = None) -> torch.Tensor:
    """Per-pixel barycentric mix of per-vertex attributes (UVs, normals, colours).

    Args:
        attr: (B, V, C) per-image or (V, C) / (1, V, C) shared attributes, rast's dtype.
        rast: (B, H, W, 4) output of `rasterize` with the same `tri`.
        tri: (F, 3) triangle list given to `rasterize`.
        backend, validate: as for `rasterize`.

    Returns:
        (B, H, W, C); zero on empty pixels. Differentiable in attr and in rast's b0, b1.
    """
    name, mode = _prepare("rast", rast, backend, validate)
    rast = checks.check_rast(rast)
    attr, batched = checks.check_attr(attr, rast.shape[0], rast.dtype, rast.device, mode)
    tri = checks.check_tri(tri, attr.shape[1], rast.device, mode, "interpolate")
    checks.check_rast_values(rast, tri.shape[0], mode)
    if mode == "deferred":
        pending.end(rast.device)
    if name == "reference":
        return reference.interpolate(attr, rast, tri)
    return _Interpolate.apply(attr.contiguous(), batched, rast.contiguous(), tri, get_backend(name))


def interpolate_derivatives(attr: torch.Tensor, rast: torch.Tensor, tri: torch.Tensor,
                            pos: torch.Tensor, backend: Optional[str] = None,
                            validate: Optional[str] = None) -> torch.Tensor:
    """Screen-space derivatives of interpolated attributes (nvdiffrast's `diff_attrs`).

    The perspective-correct barycentrics' derivatives at each pixel centre are recomputed
    from the clip positions (nvdiffrast's rast_db) with the homogeneous formula rasterize
    resolves with, so pixels of clipped triangles get them too, then mixed like the attributes.

    Args:
        attr, rast, tri, backend, validate: as for `interpolate`.
        pos: (B, V, 4) the clip positions given to `rasterize` for this rast.

    Returns:
        (B, H, W, 2C): (d attr_0/dx, d attr_0/dy, d attr_1/dx, d attr_1/dy, ...) per pixel step
        (x: one column right, y: one row down); for uv (C = 2) that is the uv_da
        `sample_texture` takes. Zero on empty pixels. Differentiable in attr only: pos gets no
        gradient from this op (its gradient through the pixel footprint is not implemented
        in any backend, the reference included).
    """
    name, mode = _prepare("rast", rast, backend, validate)
    op = "interpolate_derivatives"
    rast = checks.check_rast(rast)
    attr, batched = checks.check_attr(attr, rast.shape[0], rast.dtype, rast.device, mode, op)
    pos = checks.check_derivative_pos(pos, rast, attr.shape[1], mode)
    tri = checks.check_tri(tri, attr.shape[1], rast.device, mode, op)
    checks.check_rast_values(rast, tri.shape[0], mode, op)
    if mode == "deferred":
        pending.end(rast.device)
    if name == "reference":
        return reference.interpolate_derivatives(attr, rast, tri, pos)
    return _InterpolateDerivatives.apply(attr.contiguous(), batched, rast.contiguous(), tri,
                                         pos.detach().contiguous(), get_backend(name))


def sample_texture(tex: torch.Tensor, uv: torch.Tensor, boundary: str = "clamp",
                   backend: Optional[str] = None, validate: Optional[str] = None, *,
                   uv_da: Optional[torch.Tensor] = None, mip: Optional[list[torch.Tensor]] = None,
                   max_mip_level: Optional[int] = None) -> torch.Tensor:
    """Bilinear texture lookup.

    Args:
        tex: (B, Ht, Wt, C) per-image textures or (1, Ht, Wt, C) shared, uv's dtype.
        uv: (B, H, W, 2) texture coordinates: u along columns, v along rows, texel (i, j)
            centred at ((j + 0.5) / Wt, (i + 0.5) / Ht); row 0 of tex is at v = 0.
        boundary: outside [0, 1]: "clamp" repeats the edge texels, "zero" fades to 0 over
            the last half texel, "wrap" tiles the texture (at every mip level alike).
        backend, validate: as for `rasterize`.
        uv_da: (B, H, W, 4) uv's screen derivatives (du/dx, du/dy, dv/dx, dv/dy), from
            `interpolate_derivatives`. Given, the lookup is trilinear in tex's mip pyramid
            (engine/render/mipmap.py): lod = log2 of the longer pixel footprint in level-0
            texels, clamped to [0, L]; the bilinear samples of levels floor(lod) and the next
            are blended by its fraction. A footprint of at most one texel is plain bilinear.
        mip: levels 1..L from `mip_levels(tex)`, built once and reused; None builds them here.
        max_mip_level: the coarsest level L used when building (default: down to 1 x 1).

    Returns:
        (B, H, W, C). Differentiable in tex and uv (uv's gradient is that of the bilinear
        surface, which has kinks on texel centre lines); with uv_da also in uv_da (through the
        blend weight; zero where the lod is clamped) and, through the pyramid, in tex or mip.
    """
    name, mode = _prepare("uv", uv, backend, validate)
    uv = checks.check_uv(uv, mode)
    tex, batched = checks.check_texture(tex, uv.shape[0], uv.dtype, uv.device, mode)
    boundary = checks.check_boundary(boundary)
    if uv_da is None:
        if mip is not None or max_mip_level is not None:
            raise ValueError("mip and max_mip_level need uv_da (the level of detail comes from "
                             "uv's screen derivatives, see interpolate_derivatives)")
    else:
        uv_da = checks.check_uv_da(uv_da, uv, mode)
        if mip is not None and max_mip_level is not None:
            raise ValueError("give mip or max_mip_level, not both (mip already fixes the levels)")
        if mip is None:
            mip = mipmap.mip_levels(tex, max_mip_level)
        else:
            mip = mipmap.check_levels(mip, tex, mode)
    if mode == "deferred":
        pending.end(uv.device)
    if uv_da is not None:
        return _sample_texture_mip(tex, mip, batched, uv, uv_da, boundary, name)
    if name == "reference":
        return reference.sample_texture(tex, uv, boundary)
    return _SampleTexture.apply(tex.contiguous(), batched, uv.contiguous(), boundary,
                                get_backend(name))


def antialias(color: torch.Tensor, rast: torch.Tensor, pos: torch.Tensor, tri: torch.Tensor,
              topology: Optional[torch.Tensor] = None, backend: Optional[str] = None,
              validate: Optional[str] = None) -> torch.Tensor:
    """Analytic antialiasing at silhouette edges, with gradients to the vertex positions.

    Without it a rendered image is piecewise constant in the vertex positions wherever
    visibility decides a pixel (at silhouettes and occlusion boundaries), so those positions get
    no gradient from it. This op (after nvdiffrast's, Laine et al. 2020, sec. 3.3) blends the
    colours of neighbouring pixels across each silhouette edge by how far the edge lies from
    their centres, which makes the image continuous in `pos` and differentiable through the
    place where the edge crosses.

    Conventions (exactly, csrc/antialias_pair.h):
    * Pairs are horizontally and vertically adjacent pixels whose raster ids differ. The front
      triangle is the one of the smaller raster depth (the left/upper pixel's on a tie), or the
      only one when a pixel is empty (background).
    * Along the segment from the front pixel's centre to the other pixel's centre, the
      front triangle is left through one of its edges at distance t (pixels, computed in float64
      from the unsnapped screen positions of `pos`). The pair blends only when that edge is a
      silhouette (no triangle across it, or the triangle across folds back onto this one's side
      on screen: `topology`), is at least as steep across the segment as along it (flatter edges
      are handled by the pairs of the other direction), and t lies within 1/16 pixel
      (ANTIALIAS_SLACK) of the segment; t is then clamped to [0, 1]. Of a clipped front
      triangle the visible part of each edge is looked at (not the cuts on the clip planes),
      only where the segment leaves the triangle across it (see Limits at the top).
    * t < 1/2: the front pixel's colour moves towards the other's by 1/2 - t; t > 1/2: the
      other pixel's colour moves towards the front colour by t - 1/2 (a pixel is a unit box:
      the edge covers that fraction of it). Every pixel sums the blends of its up to four pairs.
    * Gradients: to `color` (the identity plus the blend weights) and to the x, y, w of `pos`
      through t (none where t was clamped, none to z). Not to `rast`: which pairs blend is
      decided on it, as on the raster of any image.
    * Deterministic: equal inputs give bit-equal outputs and gradients on every backend (a
      gather per pixel; the vertex gradient is summed in a fixed order on the CPU and in fixed
      point on CUDA).

    Limits (nvdiffrast's approximation has them too): a pair sees one edge, and pairs stay
    inside the image. So the image is continuous in pos where one silhouette edge passes
    between two pixel centres; where two silhouette edges meet inside a pixel (a visible
    corner), or where an edge runs between a border pixel's centre and the image border, the
    image can still jump by up to half a colour difference as a pixel centre changes hands. No
    blending across interior (non-silhouette) edges and occlusion boundaries that are not
    silhouettes of the front surface (intersecting surfaces).

    Args:
        color: (B, H, W, C) shaded image, rast's dtype (for example the output of
            `sample_texture` or `interpolate`; background pixels hold the background colour).
        rast: (B, H, W, 4) output of `rasterize(pos, tri, ...)`.
        pos: (B, V, 4) the clip-space positions `rast` was drawn from.
        tri: (F, 3) the triangle list given to `rasterize`.
        topology: (F, 3) int from `nl3dmm.render.topology.edge_opposites(tri)`: the third vertex
            of the triangle across each edge, -1 for none. It depends on tri only; computed
            here and cached per tri tensor when None.
        backend, validate: as for `rasterize`.

    Returns:
        (B, H, W, C) in color's dtype.
    """
    name, mode = _prepare("rast", rast, backend, validate)
    rast = checks.check_rast(rast)
    color = checks.check_color(color, rast, mode)
    pos = checks.check_pos(pos, mode, "antialias")
    checks.check_pos_matches(pos, rast)
    tri_input = tri
    tri = checks.check_tri(tri, pos.shape[1], rast.device, mode, "antialias")
    checks.check_rast_values(rast, tri.shape[0], mode, "antialias")
    if topology is None:
        topology = edge_topology.cached_edge_opposites(checks.require_tensor("tri", tri_input))
    topology = checks.check_topology(topology, tri.shape[0], pos.shape[1], rast.device, mode)
    if mode == "deferred":
        pending.end(rast.device)
    if name == "reference":
        return reference.antialias(color, rast, pos, tri, topology)
    return _Antialias.apply(color.contiguous(), rast.contiguous(), pos.contiguous(), tri, topology,
                            get_backend(name))


def _sample_texture_mip(tex: torch.Tensor, mip: list[torch.Tensor], batched: bool, uv: torch.Tensor,
                        uv_da: torch.Tensor, boundary: str, name: str) -> torch.Tensor:
    if name == "reference":
        return reference.sample_texture_mip([tex, *mip], uv, uv_da, boundary)
    Bt, Ht, Wt, C = tex.shape
    packed = torch.cat([level.reshape(Bt, -1, C) for level in (tex, *mip)], 1)
    return _SampleTextureMip.apply(packed, batched, uv.contiguous(), uv_da.contiguous(), boundary,
                                   Ht, Wt, len(mip), get_backend(name))


class _RenderTextured(torch.autograd.Function):
    """render_textured's shading pass (rast -> image) in one kernel each way; grad_rast then
    reaches pos through rasterize's own backward (autograd chains the two)."""

    @staticmethod
    def forward(ctx, rast, attr, tex, background, mask, tri, attr_batched, tex_batched, boundary,
                backend: Backend):
        image = backend.render_textured(rast, tri, attr, attr_batched, tex, tex_batched, background,
                                        mask, boundary)
        ctx.backend, ctx.attr_batched, ctx.tex_batched, ctx.boundary = (backend, attr_batched,
                                                                       tex_batched, boundary)
        ctx.save_for_backward(rast, attr, tex, background, mask, tri)
        return image

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_image):
        rast, attr, tex, background, mask, tri = ctx.saved_tensors
        need = ctx.needs_input_grad
        if not any(need[:5]):
            return (None,) * 10
        grad_tex, grad_background, grad_mask, grad_rast, grad_uv = ctx.backend.render_textured_backward(
            rast, tri, attr, ctx.attr_batched, tex, ctx.tex_batched, background, mask, ctx.boundary,
            grad_image.contiguous(), need[3], need[4], need[1])
        grad_attr = None
        if need[1]:  # uv attributes that learn: interpolate's scatter of the pixels' uv gradient
            grad_attr, _ = ctx.backend.interpolate_backward(attr, ctx.attr_batched, rast, tri, grad_uv)
        return (grad_rast if need[0] else None, grad_attr, grad_tex if need[2] else None,
                grad_background, grad_mask, None, None, None, None, None)


def render_textured(pos: torch.Tensor, tri: torch.Tensor, uv: torch.Tensor, texture: torch.Tensor,
                    resolution: tuple[int, int], cull_backfaces: bool = False, boundary: str = "clamp",
                    background: Optional[torch.Tensor] = None, mask: Optional[torch.Tensor] = None,
                    backend: Optional[str] = None, validate: Optional[str] = None,
                    fused: Optional[bool] = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The common chain in one call: rasterize -> interpolate(uv) -> sample_texture -> composite.

    Fused (the default on the kernel backends), the rasterize kernel is followed by ONE
    per-pixel kernel that interpolates uv, samples the texture bilinearly and composites,
    writing only the image: the (B, H, W, 2) uv and (B, H, W, C) colour tensors of the unfused
    chain are never made, forward or backward. The result is the unfused chain's, bit for bit
    on the CPU, the CUDA kernels and the interpreted Triton kernels (tests/test_fused.py); the
    gradients match it to rounding. `fused=False` runs the chain of the separate ops (what the
    reference backend always runs).

    Args:
        pos, tri, resolution, cull_backfaces: as for `rasterize`.
        uv: (B, V, 2) per image or (V, 2) / (1, V, 2) shared per-vertex texture coordinates.
        texture: (B, Ht, Wt, C) per image or (1, Ht, Wt, C) shared, pos's dtype.
        boundary: as for `sample_texture`.
        background: (B, H, W, C) shown where the mask is 0; None: zero.
        mask: (B, H, W) multiplier of the coverage (e.g. a face region); None: coverage alone.
        backend, validate: as for `rasterize`.
        fused: None picks fused on every backend but "reference"; True on "reference" is an error.

    Returns:
        (image, mask, rast): image = colour * m + background * (1 - m) with m = the returned
        (B, H, W) mask = coverage (raster id > 0) x `mask`, and the raster. Differentiable in
        pos (through the barycentrics, as the unfused chain), uv, texture, background and mask.
    """
    rast = rasterize(pos, tri, resolution, cull_backfaces, backend, validate)
    name, mode = _prepare("rast", rast, backend, validate)
    attr, attr_batched = checks.check_textured_uv(uv, pos, rast, mode)
    tex, tex_batched = checks.check_texture(texture, rast.shape[0], rast.dtype, rast.device, mode)
    boundary = checks.check_boundary(boundary)
    if background is not None:
        background = checks.check_background(background, rast, tex.shape[3], mode)
    if mask is not None:
        mask = checks.check_mask_multiplier(mask, rast, mode)
    tri = checks.check_tri(tri, pos.shape[1], rast.device, mode, "render_textured")
    if mode == "deferred":
        pending.end(rast.device)
    if fused is None:
        fused = name != "reference"
    if fused and name == "reference":
        raise ValueError("the reference backend has no fused kernel: it runs the chain of the "
                         "separate ops (fused=False or None)")
    coverage = (reference.coverage(rast) if name == "reference"
                else get_backend(name).coverage(rast.contiguous()))
    weight = coverage if mask is None else coverage * mask
    if not fused:
        pixel_uv = interpolate(attr, rast, tri, backend=name, validate=mode)
        colour = sample_texture(tex, pixel_uv, boundary, backend=name, validate=mode)
        behind = torch.zeros_like(colour) if background is None else background
        return colour * weight[..., None] + behind * (1 - weight[..., None]), weight, rast
    image = _RenderTextured.apply(rast.contiguous(), attr.contiguous(), tex.contiguous(),
                                  None if background is None else background.contiguous(),
                                  None if mask is None else mask.contiguous(), tri, attr_batched,
                                  tex_batched, boundary, get_backend(name))
    return image, weight, rast
