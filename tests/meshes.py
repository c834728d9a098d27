"""Random meshes and comparison helpers for the rendering tests."""
from __future__ import annotations

import torch


def assert_rel_close(actual: torch.Tensor, expected: torch.Tensor, tol: float, what: str) -> None:
    """max |actual - expected| / max |expected| <= tol; NaN or Inf anywhere fails."""
    assert actual.shape == expected.shape, f"{what}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    assert bool(torch.isfinite(actual).all()), f"{what}: result has NaN/Inf"
    assert bool(torch.isfinite(expected).all()), f"{what}: reference has NaN/Inf"
    a, e = actual.double(), expected.double()
    scale = e.abs().max().item()
    err = (a - e).abs().max().item()
    assert scale > 0, f"{what}: reference is all zeros, the comparison would prove nothing"
    assert err <= tol * scale, f"{what}: relative error {err / scale:.3e} > {tol:.1e}"


def random_soup(batch: int, num_vertices: int, num_triangles: int, dtype=torch.float32,
                perspective: bool = True, extras: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Overlapping random triangles in clip space, partly off screen, with random w.

    With extras, it also holds degenerate triangles (repeated indices) and a vertex behind
    the camera (w < 0), which must be skipped rather than produce NaN.
    """
    screen = torch.rand(batch, num_vertices, 2, dtype=torch.float64) * 2.4 - 1.2
    depth = torch.rand(batch, num_vertices, 1, dtype=torch.float64) * 1.8 - 0.9
    w = (torch.rand(batch, num_vertices, 1, dtype=torch.float64) * 1.5 + 0.5 if perspective
         else torch.ones(batch, num_vertices, 1, dtype=torch.float64))
    pos = torch.cat([screen * w, depth * w, w], -1)
    tri = torch.randint(0, num_vertices, (num_triangles, 3), dtype=torch.int32)
    if extras:
        tri[0] = torch.tensor([1, 1, 2])
        tri[1] = torch.tensor([3, 4, 3])
        pos[:, 0, 3] = -0.5
    return pos.to(dtype), tri


def jittered_grid(batch: int, nx: int, ny: int, dtype=torch.float64, jitter: float = 0.25,
                  perspective: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """A non-overlapping grid mesh covering most of the screen: no visibility changes under
    small perturbations, so its raster is smooth in pos (for gradcheck)."""
    xs = torch.linspace(-0.9, 0.9, nx + 1, dtype=torch.float64)
    ys = torch.linspace(-0.9, 0.9, ny + 1, dtype=torch.float64)
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    grid = torch.stack([gx, gy], -1).reshape(-1, 2)
    step = torch.tensor([1.8 / nx, 1.8 / ny], dtype=torch.float64)
    grid = grid.unsqueeze(0) + (torch.rand(batch, grid.shape[0], 2, dtype=torch.float64) - 0.5) * jitter * step
    n = grid.shape[1]
    depth = torch.rand(batch, n, 1, dtype=torch.float64) * 1.0 - 0.5
    w = (torch.rand(batch, n, 1, dtype=torch.float64) * 0.8 + 0.8 if perspective
         else torch.ones(batch, n, 1, dtype=torch.float64))
    pos = torch.cat([grid * w, depth * w, w], -1)
    faces = []
    for j in range(ny):
        for i in range(nx):
            a = j * (nx + 1) + i
            b, c, d = a + 1, a + nx + 1, a + nx + 2
            faces += [[a, b, d], [a, d, c]]
    return pos.to(dtype), torch.tensor(faces, dtype=torch.int32)


def min_edge_distance(pos: torch.Tensor, tri: torch.Tensor, rast: torch.Tensor) -> float:
    """Smallest distance, in pixels, from a covered pixel centre to an edge of its triangle."""
    B, H, W, _ = rast.shape
    ids = rast[..., 3].round().long() - 1
    hit = ids >= 0
    corners = tri.long()[ids.clamp(min=0)]
    batch = torch.arange(B).view(B, 1, 1, 1)
    v = pos.double()[batch, corners]
    sx = (v[..., 0] / v[..., 3] + 1) * 0.5 * W
    sy = (v[..., 1] / v[..., 3] + 1) * 0.5 * H
    px = torch.arange(W, dtype=torch.float64).view(1, 1, W) + 0.5
    py = torch.arange(H, dtype=torch.float64).view(1, H, 1) + 0.5
    dists = []
    for i, j in ((1, 2), (2, 0), (0, 1)):
        dx, dy = sx[..., j] - sx[..., i], sy[..., j] - sy[..., i]
        cross = dx * (py - sy[..., i]) - dy * (px - sx[..., i])
        dists.append(cross.abs() / torch.sqrt(dx * dx + dy * dy))
    return float(torch.stack(dists, -1).min(-1).values[hit].min())
