"""Open3D's ray casting (`open3d.t.geometry.RaycastingScene`, Embree), CPU build: rays along +z
from the pixel centres against the mesh in screen space; a new scene, so a new BVH, for every
image of every call, as in a fitting loop.

ids: `primitive_ids` (INVALID_ID where nothing is hit). Textured: Open3D has no texture
lookup, so the uv comes from the hit's `primitive_uvs` (the weights of the triangle's second
and third vertex) and the lookup is torch's grid_sample in our texel convention
(peer_scene.sample_bilinear); that part is timed too. No backward pass.
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import torch

from peer_scene import Peer, PeerScene, barycentric_uv, pixel_centres, sample_bilinear


class Open3D(Peer):
    name = "open3d"
    title = "Open3D / Embree"
    install = "pip install open3d-cpu (its library loads libusb: apt-get install -y libusb-1.0-0)"
    backward = False

    @classmethod
    def missing(cls) -> Optional[str]:
        try:
            import open3d  # noqa: F401
        except Exception as exc:  # ImportError, or a system library it links is absent
            return f"open3d unavailable ({type(exc).__name__}: {exc})"
        return None

    @classmethod
    def version(cls) -> str:
        import open3d
        return f"open3d {open3d.__version__}"

    def __init__(self, scene: PeerScene):
        super().__init__(scene)
        import open3d as o3d
        self.o3d = o3d
        centres = pixel_centres(scene.size)
        rays = np.zeros((scene.size, scene.size, 6), np.float32)
        rays[..., :2] = centres.reshape(scene.size, scene.size, 2)
        rays[..., 2] = -2.0  # depth is in [-1, 1]
        rays[..., 5] = 1.0
        self.rays = o3d.core.Tensor(rays)
        self.triangles = o3d.core.Tensor(scene.tri.numpy().astype(np.uint32))
        self.invalid = o3d.t.geometry.RaycastingScene.INVALID_ID

    def _cast(self, b: int) -> dict:
        world = self.o3d.t.geometry.RaycastingScene()
        world.add_triangles(self.o3d.core.Tensor(self.scene.screen_vertices(b)), self.triangles)
        return world.cast_rays(self.rays)

    def _ids(self, hits: dict) -> torch.Tensor:
        ids = torch.from_numpy(hits["primitive_ids"].numpy().astype(np.int64))
        return torch.where(ids == self.invalid, -1, ids)

    def rasterize(self) -> list[dict]:
        return [self._cast(b) for b in range(self.scene.batch)]

    def triangle_ids(self, out: list[dict]) -> torch.Tensor:
        return torch.stack([self._ids(hits) for hits in out])

    def textured(self) -> torch.Tensor:
        ids, uvs = [], []
        for b in range(self.scene.batch):
            hits = self._cast(b)
            weights = torch.from_numpy(hits["primitive_uvs"].numpy())
            ids.append(self._ids(hits))
            uvs.append(barycentric_uv(self.scene.uv, self.scene.tri, ids[-1],
                                      weights[..., 0], weights[..., 1]))
        image = sample_bilinear(self.scene.tex, torch.stack(uvs))
        return image * (torch.stack(ids) >= 0)[..., None]
