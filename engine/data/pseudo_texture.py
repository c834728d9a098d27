"""Pseudo ground-truth UV textures of face crops: `unwrap_texture` on a mesh posed by each
crop's camera m.

The dense ground-truth shape of a 300W-LP sample needs the BFM bases, which users obtain
themselves; without them the mesh is the face model's mean shape posed by m (a stand-in: the
texture then lines up with the photo only as well as the mean face does, a few pixels on
the inner face, worse on the jaw line). Pass `shapes` when dense shapes exist.
"""
from __future__ import annotations

import numpy as np
import torch

from ..face.camera import project_m_with_depth
from ..face.facemodel import UV_MAP_SIZE, FaceModel, load_paper_mesh
from ..face.unwrap import unwrap_texture

# Visibility slack in clip depth (the face spans about 2). unwrap_texture's 0.02 rejects many
# truly visible texels on oblique cheeks (the texel's depth and the depth at the centre of
# the pixel it lands in differ by the slope over half a pixel), which leaves moire stripes;
# 0.05 removes most of them on the real samples while the nose still hides the far cheek
# (0.2 lets texels behind the nose through).
DEPTH_TOLERANCE = 0.05


class PseudoTexture:
    """Callable: (B, S, S, 3) uint8 crops and (B, 8) cameras -> (B, 192, 224, 3) uint8 texture
    (0 where not visible) and (B, 192, 224) bool visibility."""

    def __init__(self, face_model: FaceModel | None = None, texture_size: tuple[int, int] = UV_MAP_SIZE,
                 depth_tolerance: float = DEPTH_TOLERANCE, backend: str | None = None):
        model = face_model if face_model is not None else load_paper_mesh()
        self.mean_shape = model.mean_shape.astype(np.float64)
        self.uv = torch.from_numpy(model.uv.astype(np.float32))
        self.triangles = torch.from_numpy(model.triangles)
        self.texture_size = texture_size
        self.depth_tolerance = depth_tolerance
        self.backend = backend
        self.model_name = model.name

    def __call__(self, images: np.ndarray, m: np.ndarray, shapes: np.ndarray | None = None
                 ) -> tuple[np.ndarray, np.ndarray]:
        if images.ndim != 4 or images.dtype != np.uint8 or m.shape != (len(images), 8):
            raise ValueError(f"need (B, S, S, 3) uint8 images and (B, 8) m, got {images.shape} "
                             f"{images.dtype} and {m.shape}")
        vertices = self.mean_shape if shapes is None else np.asarray(shapes, dtype=np.float64).reshape(len(m), -1, 3)
        points = project_m_with_depth(vertices, np.asarray(m, dtype=np.float64), images.shape[1])
        points = np.broadcast_to(points, (len(m),) + points.shape[-2:])
        photo = torch.from_numpy(images).float().div_(255.0)
        texture, visible = unwrap_texture(photo, torch.from_numpy(np.ascontiguousarray(points, dtype=np.float32)),
                                          self.uv, self.triangles, self.texture_size, self.depth_tolerance,
                                          backend=self.backend)
        texture = texture.mul_(255.0).round_().clamp_(0, 255).to(torch.uint8)
        return texture.numpy(), visible.numpy()
