"""Dense ground-truth shapes for L0's shape loss, built on the training device from each
sample's Shape_Para / Exp_Para and the user's converted BFM basis (`nl3dmm convert-bfm`).

Why on the device: a stored dense shape is 640 kB per sample (78 GB for 300W-LP with flips)
while its parameters are 1 kB, and the product with the (3V, 228) basis is one small matmul
per batch.

Flipped crops show the mirrored face (`camera.flip_m`: X -> -X, vertex i -> its mirror
partner), so their target is S'[i] = F S[mirror[i]] with F = diag(-1, 1, 1). The partner of a
vertex is the vertex nearest to its reflection on the mean shape: the BFM topology is only
approximately symmetric (on the paper mesh half the reflected vertices land within 0.65 mm of
a vertex, all within 1.9 mm), so a flipped target is the mirrored face up to that resampling.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .bfm import BFMBasis, load_basis
from .facemodel import FaceModel


def mirror_partners(mean_shape: np.ndarray) -> np.ndarray:
    """(V,) int64: for each vertex, the vertex nearest to its reflection X -> -X."""
    from scipy.spatial import cKDTree

    points = np.asarray(mean_shape, dtype=np.float64)
    reflected = points * np.array([-1.0, 1.0, 1.0])
    return cKDTree(points).query(reflected)[1].astype(np.int64)


class DenseShapes(nn.Module):
    """(B, Ks) Shape_Para, (B, Ke) Exp_Para, (B,) flipped -> (B, V, 3) float32 dense shapes.
    Labels may carry more parameters than the basis has components (a basis converted with
    --shape-components K): the leading ones are used, as `bfm.dense_shape` intends."""

    def __init__(self, basis: BFMBasis, mirror: np.ndarray):
        super().__init__()
        V = basis.num_vertices
        if np.shape(mirror) != (V,):
            raise ValueError(f"mirror must be ({V},) vertex ids, got {np.shape(mirror)}")
        self.num_shape, self.num_exp = basis.num_shape, basis.num_exp
        parts = [basis.shape_basis] + ([basis.exp_basis] if basis.exp_basis is not None else [])
        self.register_buffer("mean", torch.from_numpy(np.ascontiguousarray(basis.mean, dtype=np.float32)))
        self.register_buffer("basis", torch.from_numpy(np.ascontiguousarray(np.concatenate(parts, 1).T,
                                                                           dtype=np.float32)))  # (K, 3V)
        self.register_buffer("mirror", torch.from_numpy(np.asarray(mirror, dtype=np.int64)))
        self.register_buffer("reflect", torch.tensor([-1.0, 1.0, 1.0]))

    @classmethod
    def from_file(cls, path: str, face_model: FaceModel) -> "DenseShapes":
        """The builder for a converted basis file on `face_model`'s mesh (its vertex count is
        checked; its mean shape gives the mirror partners)."""
        return cls(load_basis(path, num_vertices=face_model.num_vertices), mirror_partners(face_model.mean_shape))

    def forward(self, shape_para: torch.Tensor, exp_para: torch.Tensor | None,
                flipped: torch.Tensor | None = None) -> torch.Tensor:
        if shape_para.ndim != 2 or shape_para.shape[1] < self.num_shape:
            raise ValueError(f"shape_para must be (B, >= {self.num_shape}), got {tuple(shape_para.shape)}")
        codes = [shape_para[:, :self.num_shape]]
        if self.num_exp:
            if exp_para is None or exp_para.ndim != 2 or exp_para.shape[1] < self.num_exp:
                got = None if exp_para is None else tuple(exp_para.shape)
                raise ValueError(f"exp_para must be (B, >= {self.num_exp}) for this basis, got {got}")
            codes.append(exp_para[:, :self.num_exp])
        code = torch.cat(codes, 1).float()
        shapes = torch.addmm(self.mean, code, self.basis).reshape(len(code), -1, 3)
        if flipped is not None and bool(flipped.any()):
            mirrored = shapes[:, self.mirror] * self.reflect
            shapes = torch.where(flipped.reshape(-1, 1, 1).bool(), mirrored, shapes)
        return shapes
