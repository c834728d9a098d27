"""Differentiable geometry for shading: batched vertex normals, the rotation inside a camera m,
and second-order spherical-harmonic (SH) Lambertian shading with 9 coefficients per colour
channel (27 numbers), as in the TPAMI'19 model."""
from __future__ import annotations

import math

import torch


def vertex_normals(vertices: torch.Tensor, triangles: torch.Tensor, outward: bool = True) -> torch.Tensor:
    """(B, V, 3) unit vertex normals: area-weighted sum of the adjacent triangles' normals.

    FaceModel triangles are wound so that `cross(b - a, c - a)` points into the head, so
    `outward=True` negates it."""
    tri = triangles.long()
    a, b, c = (vertices[:, tri[:, k]] for k in range(3))
    face = torch.linalg.cross(b - a, c - a, dim=-1)
    normals = torch.zeros_like(vertices)
    for k in range(3):
        normals = normals.index_add(1, tri[:, k], face)
    normals = normals / normals.norm(dim=-1, keepdim=True).clamp(min=1e-12)
    return -normals if outward else normals


def m_rotation(m: torch.Tensor) -> torch.Tensor:
    """(B, 3, 3) rotation whose rows are m's two (normalised) rows and their cross product:
    camera-frame (u right, v up, towards the viewer) coordinates of a model direction."""
    M = m.reshape(*m.shape[:-1], 4, 2)
    r1 = torch.nn.functional.normalize(M[..., :3, 0], dim=-1)
    r2 = torch.nn.functional.normalize(M[..., :3, 1], dim=-1)
    return torch.stack([r1, r2, torch.linalg.cross(r1, r2, dim=-1)], -2)


# Lambertian-convolved real SH basis up to order 2 (Ramamoorthi & Hanrahan 2001); the
# constants are those of the authors' `shading` function.
_SH_CONSTANTS = (
    1 / math.sqrt(4 * math.pi),
    (2 * math.pi / 3) * math.sqrt(3 / (4 * math.pi)),
    (math.pi / 4) * 0.5 * math.sqrt(5 / (4 * math.pi)),
    (math.pi / 4) * 3 * math.sqrt(5 / (12 * math.pi)),
    (math.pi / 4) * 1.5 * math.sqrt(5 / (12 * math.pi)),
)


def sh_basis(normals: torch.Tensor) -> torch.Tensor:
    """(..., 3) unit normals (camera frame) -> (..., 9) irradiance SH basis."""
    x, y, z = normals.unbind(-1)
    c0, c1, c2, c3, c4 = _SH_CONSTANTS
    return torch.stack([torch.full_like(x, c0), c1 * z, c1 * y, c1 * x,
                        c2 * (2 * z * z - x * x - y * y), c3 * y * z, c3 * x * z, c3 * x * y,
                        c4 * (x * x - y * y)], -1)


def sh_shading(normals: torch.Tensor, lighting: torch.Tensor) -> torch.Tensor:
    """(B, ..., 3) camera-frame unit normals and (B, 27) lighting (9 SH coefficients for R, then
    G, then B) -> (B, ..., 3) shading."""
    B = lighting.shape[0]
    coefficients = lighting.reshape(B, 3, 9)
    basis = sh_basis(normals)                                  # (B, ..., 9)
    flat = basis.reshape(B, -1, 9)
    return (flat @ coefficients.transpose(1, 2)).reshape(*basis.shape[:-1], 3)


def white_light(batch: int, level: float = 1.0, dtype=torch.float32) -> torch.Tensor:
    """(B, 27) ambient-only lighting that shades every normal with `level`."""
    light = torch.zeros(batch, 3, 9, dtype=dtype)
    light[:, :, 0] = level / _SH_CONSTANTS[0]
    return light.reshape(batch, 27)
