"""Training losses of the nonlinear 3DMM, each a small function whose default weight is the
authors' (shared/PAPER.md; their TensorFlow `norm_loss`: "l2" = sum(d^2) / 2 / numel,
"l1" = sum|d| / numel).

Layouts: images and UV maps are (B, H, W, C) as the renderer produces them; masks are
(B, H, W) or broadcastable to the image; shapes are (B, Q, 3); 2-D points are (B, N, 2).
The adversarial terms live in `adversarial.py`.
"""
from __future__ import annotations

import numpy as np
import torch


def l2_norm_loss(prediction: torch.Tensor, target: torch.Tensor | float = 0.0) -> torch.Tensor:
    """The authors' "l2": sum of squared differences / 2 / number of elements."""
    diff = prediction - target
    return diff.square().sum() / 2 / diff.numel()


def m_loss(m_normalized: torch.Tensor, target_normalized: torch.Tensor, weight: float = 5.0) -> torch.Tensor:
    """L0 camera term: weight * l2 on m normalised by the model's m statistics (`normalize_m`)."""
    return weight * l2_norm_loss(m_normalized, target_normalized)


def shape_loss(shape_normalized: torch.Tensor, target_normalized: torch.Tensor, weight: float = 10.0) -> torch.Tensor:
    """L0 shape term: weight * l2 on the shape normalised by the per-coordinate std/mean."""
    return weight * l2_norm_loss(shape_normalized, target_normalized)


def _expand_mask(mask: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    mask = mask.to(like.dtype)
    if mask.ndim == like.ndim - 1:
        mask = mask[..., None]
    return mask.expand_as(like)


def texture_loss(texture: torch.Tensor, target: torch.Tensor, visible: torch.Tensor,
                 weight: float = 1.0) -> torch.Tensor:
    """L0 texture term: L1 against the pseudo ground-truth UV texture on its visible texels,
    divided by the visible fraction (= mean absolute error over visible texel channels)."""
    mask = _expand_mask(visible, texture)
    count = mask.sum()
    if count == 0:
        return texture.sum() * 0  # nothing visible: no signal, but keep the graph
    return weight * ((texture - target).abs() * mask).sum() / count


def reconstruction_loss(composited: torch.Tensor, image: torch.Tensor, mask: torch.Tensor,
                        weight: float = 10.0) -> torch.Tensor:
    """End-to-end term, normalised as the authors' code: weight * mean|composited - input| over
    all B*H*W*C values, divided by sum(mask expanded to the C channels) / (B*H*W).

    `composited` is the render pasted over the input with `mask` (render mask x face mask), so
    only masked pixels differ. The code's mask has the image's channels, so its "fraction" is
    C times the masked pixel fraction: the term is weight / C x the mean error per masked pixel
    and channel (an earlier version of ours left out the 1 / C and was 3x stronger)."""
    pixels = mask.to(image.dtype)
    channels = image.shape[-1] if pixels.ndim == image.ndim - 1 or pixels.shape[-1] == 1 else 1
    fraction = pixels.sum() * channels / (image.numel() / image.shape[-1])
    if fraction == 0:
        return composited.sum() * 0
    return weight * (composited - image).abs().mean() / fraction


def landmark_loss(points: torch.Tensor, target: torch.Tensor, defined: torch.Tensor | None = None,
                  weight: float = 1.0) -> torch.Tensor:
    """68-landmark term: squared 2-D distance / 2 (TF `l2_loss`) / 68 / batch / 50, with
    points in pixels of the 224 crop. `defined` (N,) or (B, N) masks points a model lacks
    (the Surrey model has 50 of 68); the normaliser stays N, as in the code."""
    sq = (points - target).square().sum(-1)
    if defined is not None:
        sq = sq * defined.to(sq.dtype)
    return weight * sq.sum() / 2 / points.shape[-2] / points.shape[0] / 50


def uniform_laplacian(triangles: np.ndarray | torch.Tensor, num_vertices: int) -> torch.Tensor:
    """(V, V) sparse matrix L with (L x)_i = mean of x over i's mesh neighbours - x_i (the
    neighbours come from the triangle edges). Zero on constant or translated shapes."""
    tri = torch.as_tensor(np.asarray(triangles), dtype=torch.long)
    edges = torch.cat([tri[:, [0, 1]], tri[:, [1, 2]], tri[:, [2, 0]]])
    edges = torch.unique(torch.cat([edges, edges.flip(1)]), dim=0)
    degree = torch.bincount(edges[:, 0], minlength=num_vertices).clamp(min=1).double()
    index = torch.cat([edges.T, torch.arange(num_vertices).repeat(2, 1)], 1)
    values = torch.cat([1 / degree[edges[:, 0]], -torch.ones(num_vertices, dtype=torch.float64)])
    return torch.sparse_coo_tensor(index, values, (num_vertices, num_vertices), check_invariants=True).coalesce()


def smoothness_loss(shape_normalized: torch.Tensor, laplacian: torch.Tensor, weight: float = 1000.0) -> torch.Tensor:
    """Shape smoothness: weight * l2 of the uniform mesh Laplacian of the (normalised) shape,
    i.e. of each vertex's distance to the mean of its neighbours. For the MLP shape decoder,
    the mesh counterpart of the authors' UV-map Laplacian (`uv_smoothness_loss`)."""
    B, V, C = shape_normalized.shape
    flat = shape_normalized.permute(1, 0, 2).reshape(V, B * C)
    lap = torch.sparse.mm(laplacian.to(flat.dtype), flat)
    return weight * l2_norm_loss(lap)


def uv_smoothness_loss(shape_uv: torch.Tensor, weight: float = 1000.0) -> torch.Tensor:
    """The authors' smoothness on the (B, C, H, W) UV shape map: weight * l2 between the
    4-neighbour average and each interior texel."""
    neighbours = (shape_uv[:, :, :-2, 1:-1] + shape_uv[:, :, 2:, 1:-1]
                  + shape_uv[:, :, 1:-1, :-2] + shape_uv[:, :, 1:-1, 2:]) / 4
    return weight * l2_norm_loss(neighbours, shape_uv[:, :, 1:-1, 1:-1])


def flip_texture(texture: torch.Tensor, flip_index: torch.Tensor | None = None) -> torch.Tensor:
    """(B, H, W, C) texture of the mirrored face: a left-right flip of the map (the paper and
    Surrey UV layouts are symmetric about u = 0.5), or `flip_index` (H*W,) giving, for each
    texel, the flattened index of its mirror texel in other layouts."""
    if flip_index is None:
        return texture.flip(2)
    B, H, W, C = texture.shape
    return texture.reshape(B, H * W, C)[:, flip_index].reshape(B, H, W, C)


def symmetry_loss(albedo: torch.Tensor, flip_index: torch.Tensor | None = None, epsilon: float = 0.05,
                  weight: float = 1.0) -> torch.Tensor:
    """Albedo symmetry: weight * mean(max(|A - flip(A)| - epsilon, 0)). (The code takes the
    mean of max(|A - flip(A)|, epsilon), the same gradient plus the constant epsilon; this form
    has its minimum, 0, at any albedo symmetric to within epsilon.)"""
    return weight * ((albedo - flip_texture(albedo, flip_index)).abs() - epsilon).clamp(min=0).mean()


def constant_albedo_loss(albedo: torch.Tensor, pairs: torch.Tensor, epsilon: float = 0.05,
                         weight: float = 5.0) -> torch.Tensor:
    """Albedo constancy over texel pairs expected to share an albedo (the authors sample 20
    pairs per image from a region mask): weight * mean(max(|A[p] - A[q]| - epsilon, 0)).
    `pairs` is (B, P, 2, 2) integer (row, column) of the two texels of each pair."""
    B = albedo.shape[0]
    batch = torch.arange(B, device=albedo.device)[:, None]
    first = albedo[batch, pairs[:, :, 0, 0], pairs[:, :, 0, 1]]
    second = albedo[batch, pairs[:, :, 1, 0], pairs[:, :, 1, 1]]
    return weight * ((first - second).abs() - epsilon).clamp(min=0).mean()


def white_shading_loss(shade: torch.Tensor, uv_mask: torch.Tensor, target: float = 0.99,
                       weight: float = 10.0) -> torch.Tensor:
    """Batch-mean shading over the face's texels near `target` per colour channel (keeps
    lighting and albedo from trading a global scale): weight * l2(mean shade - target)."""
    mask = _expand_mask(uv_mask.expand(shade.shape[:-1]), shade)
    mean = (shade * mask).sum(dim=(0, 1, 2)) / mask.sum(dim=(0, 1, 2)).clamp(min=1)
    return weight * l2_norm_loss(mean, target)


def chromaticity(texture: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """rgb / (r + g + b) of a (..., 3) texture in [-1, 1] (mapped to [0, 1] first, as the code
    does): the colour without its intensity, so shading changes leave it unchanged."""
    rgb = (texture + 1) / 2
    return rgb / (rgb.sum(-1, keepdim=True) + eps)


def local_albedo_smoothness_loss(albedo: torch.Tensor, target: torch.Tensor, visible: torch.Tensor | None = None,
                                 alpha: float = 15.0, p: float = 0.8, weight: float = 10.0,
                                 eps: float = 1e-16) -> torch.Tensor:
    """TPAMI'19 local albedo constancy (Retinex: albedo is piecewise constant, and where the
    ground-truth colour does not change it should not either):

        weight * sum_direction  sum_(i,j) w_ij ||A_i - A_j||_2^p / sum_(i,j) w_ij,
        w_ij = exp(-alpha ||c_i - c_j||_2),  c = chromaticity of the pseudo ground-truth texture,

    over the pairs of vertically, then horizontally adjacent texels (B, H, W, 3), each pair
    counted where both texels are `visible` (B, H, W). The weights are constants (no gradient
    reaches `target`). Defaults are the authors' code: alpha 15, p 0.8, weight 10, and the
    per-pair norm sqrt(sum_c d^2 + 1e-16) (their "l2,1"); we subtract that norm's value at d = 0
    so the minimum, at any constant albedo, is exactly 0 (same gradient).

    One deliberate difference from the code: there `norm_loss(..., reduce_mean=False)` returns
    the already-summed norm, so multiplying by w and dividing by sum(w) cancels the weights
    (every pair ends up with weight 1 / #pairs). We weight each pair, as the paper's equation says.
    """
    with torch.no_grad():
        chroma = chromaticity(target)
        vis = torch.ones(target.shape[:-1], dtype=target.dtype, device=target.device) if visible is None \
            else visible.to(target.dtype).expand(target.shape[:-1])
    floor = eps ** (p / 2)
    total = albedo.new_zeros(())
    for dim in (1, 2):  # rows (the code's "u" pairs), then columns ("v")
        n = albedo.shape[dim]
        first, second = (lambda x: x.narrow(dim, 0, n - 1)), (lambda x: x.narrow(dim, 1, n - 1))
        with torch.no_grad():
            w = torch.exp(-alpha * (first(chroma) - second(chroma)).norm(dim=-1)) * first(vis) * second(vis)
        diff = first(albedo) - second(albedo)
        distance = (diff.square().sum(-1) + eps).sqrt().pow(p) - floor
        total = total + (w * distance).sum() / (w.sum() + 1e-6)
    return weight * total
