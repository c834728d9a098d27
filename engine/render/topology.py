"""Edge topology of a triangle list, for `antialias`: the third vertex across each edge.

`antialias` blends colours only across silhouette edges, and whether an edge is one depends on
the triangle on its other side: an edge with no neighbour always may be, an edge shared by two
triangles is one when, on screen, the neighbour folds back onto this triangle's side (one of
them faces away). The kernels need, per triangle and edge, that neighbour's third vertex.

Edge k of triangle f runs from tri[f, (k + 1) % 3] to tri[f, (k + 2) % 3] (it is opposite
vertex k). `edge_opposites(tri)[f, k]` is the third vertex of the other triangle sharing that
edge (either winding), or -1 when there is none. An edge shared by three or more triangles (a
non-manifold mesh) also gets -1: it is treated as a boundary, a silhouette candidate wherever it
is seen. Degenerate triangles (a repeated vertex index) never draw and share no edges.

It depends on tri only, so it is computed once per mesh: pass it to `antialias(topology=...)`,
or let `antialias` compute it and keep it in a small cache keyed by the tri tensor (dropped when
tri is modified in place or freed), as the ops do with validated meshes.
"""
from __future__ import annotations

import torch

from .checks import _Validated

_CACHE = _Validated()


def edge_opposites(tri: torch.Tensor) -> torch.Tensor:
    """(F, 3) int32 on tri's device: the third vertex across edge k of each triangle, or -1.

    tri: (F, 3) int32/int64 vertex indices (not validated here; antialias validates first).
    Cost: one sort of the 3F edges.
    """
    t = tri.long()
    num_triangles = t.shape[0]
    first, second = t[:, [1, 2, 0]], t[:, [2, 0, 1]]  # edge k's endpoints
    lo, hi = torch.minimum(first, second), torch.maximum(first, second)
    proper = ((t[:, 0] != t[:, 1]) & (t[:, 1] != t[:, 2]) & (t[:, 2] != t[:, 0])).unsqueeze(1).expand(-1, 3)
    span = int(t.max()) + 2 if t.numel() else 1
    keys = lo * span + hi
    # Edges of degenerate triangles get keys of their own (negative, distinct): they pair with nothing.
    keys = torch.where(proper, keys, -1 - torch.arange(3 * num_triangles, device=t.device).view(-1, 3)).reshape(-1)
    order = torch.argsort(keys, stable=True)
    _, inverse, counts = torch.unique_consecutive(keys[order], return_inverse=True, return_counts=True)
    start = (torch.cumsum(counts, 0) - counts)[inverse]
    rank = torch.arange(keys.numel(), device=t.device) - start  # position within its group of equal keys
    shared_once = counts[inverse] == 2
    partner = torch.where(shared_once, start + 1 - rank, start)  # the other half-edge of a pair
    third = t.reshape(-1)  # half-edge (f, k) has third vertex t[f, k]
    opposite_sorted = torch.where(shared_once, third[order[partner]], torch.full_like(partner, -1))
    result = torch.empty_like(opposite_sorted)
    result[order] = opposite_sorted
    return result.view(num_triangles, 3).to(torch.int32)


def cached_edge_opposites(tri: torch.Tensor) -> torch.Tensor:
    """edge_opposites(tri), computed once per tri tensor (until it is modified or freed)."""
    key = ("edge_opposites", tri.shape[0], tri.device)
    cached = _CACHE.get(tri, key)
    if cached is None:
        cached = edge_opposites(tri)
        _CACHE.add(tri, key, cached)
    return cached
