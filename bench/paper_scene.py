"""Benchmark scenes: the paper mesh (53,215 vertices, 105,840 triangles) posed at B different
yaws in a 224 x 224 image (or any size), a 192 x 224 RGB texture, and the authors' per-vertex
UVs. One module without pytest, so scripts (bench/gpu/gpu_bench.py, bench/bounds_check_cost.py,
bench/peers/) build the same scene as the suites."""
from __future__ import annotations

import numpy as np
import torch

import nl3dmm
from nl3dmm.face.camera import image_to_clip, project_pose_para
from nl3dmm.face.facemodel import load_paper_mesh

SIZE = 224


class Scene:
    def __init__(self, batch: int, dtype=torch.float32, size: int = SIZE):
        mesh = load_paper_mesh()
        points = []
        scale = 8.3e-4 * size / SIZE  # the face fills the same share of any image size
        for i in range(batch):
            yaw = np.deg2rad(-60 + 120 * i / max(batch - 1, 1))
            pose = [0.1 * np.sin(i), yaw, 0.05 * np.cos(i), size / 2, size / 2, 0.0, scale]
            points.append(project_pose_para(mesh.mean_shape, pose, size))
        self.size = size
        self.pos = image_to_clip(torch.from_numpy(np.stack(points)), size, size).to(dtype)
        self.tri = torch.from_numpy(mesh.triangles)
        self.uv = torch.from_numpy(mesh.uv).to(dtype)
        gen = torch.Generator().manual_seed(0)
        self.tex = torch.rand(batch, 192, 224, 3, generator=gen, dtype=dtype)
        self.batch = batch

    def forward(self, backend: str, requires_grad: bool = False):
        pos = self.pos.clone().requires_grad_(requires_grad)
        tex = self.tex.clone().requires_grad_(requires_grad)
        rast = nl3dmm.rasterize(pos, self.tri, (self.size, self.size), cull_backfaces=True,
                                backend=backend)
        uv = nl3dmm.interpolate(self.uv, rast, self.tri, backend=backend)
        image = nl3dmm.sample_texture(tex, uv, backend=backend)
        return pos, tex, rast, uv, image
