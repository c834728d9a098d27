"""PyTorch3D's mesh rasterizer on the CPU (`rasterize_meshes`, one face per pixel, no blur,
no binning: PyTorch3D bins only on CUDA). There is no wheel for a CPU torch 2.x, so it must
be built from source (bench/peers/README.md says how); the suite skips it otherwise. This
adapter has not run on the project's machines, which have no such build.

Conventions: PyTorch3D's NDC has +x to the left, +y up and row 0 at the top, so our clip
(x, y) maps to (-x, -y), and column c / row r land on the same pixel centres as ours; it
draws only z > 0 and keeps the smallest, so depth is shifted by +2. pix_to_face holds packed
face indices (image b's faces start at b * F). Textured: `interpolate_face_attributes` of the
per-corner uv, then grid_sample in our texel convention (peer_scene.sample_bilinear); the
gradient flows through PyTorch3D's barycentric backward to the positions.
"""
from __future__ import annotations

from typing import Optional

import torch

from peer_scene import PeerScene, TorchPeer, sample_bilinear

DEPTH_SHIFT = 2.0  # our depth in [-1, 1] -> PyTorch3D's z in [1, 3]


class PyTorch3D(TorchPeer):
    name = "pytorch3d"
    title = "PyTorch3D CPU (built from source)"
    install = ("a source build (bench/peers/README.md): pip install iopath && pip install "
               "--no-build-isolation 'git+https://github.com/facebookresearch/pytorch3d.git@stable'")

    @classmethod
    def missing(cls) -> Optional[str]:
        try:
            from pytorch3d.renderer.mesh.rasterize_meshes import rasterize_meshes  # noqa: F401
        except Exception as exc:
            return f"pytorch3d unavailable ({type(exc).__name__}: {exc})"
        return None

    @classmethod
    def version(cls) -> str:
        import pytorch3d
        return f"pytorch3d {pytorch3d.__version__}"

    def __init__(self, scene: PeerScene):
        super().__init__(scene)
        from pytorch3d.ops import interpolate_face_attributes
        from pytorch3d.renderer.mesh.rasterize_meshes import rasterize_meshes
        from pytorch3d.structures import Meshes
        self._rasterize_meshes, self._interpolate = rasterize_meshes, interpolate_face_attributes
        self._meshes = Meshes
        tri = scene.tri.long()
        self.faces = tri.expand(scene.batch, -1, -1).contiguous()
        self.corner_uv = scene.uv[tri].repeat(scene.batch, 1, 1)  # (B * F, 3, 2), packed order
        self.face_offset = (torch.arange(scene.batch) * tri.shape[0]).view(-1, 1, 1)

    def _fragments(self, pos: torch.Tensor):
        verts = torch.stack([-pos[..., 0], -pos[..., 1], pos[..., 2] + DEPTH_SHIFT], -1)
        pix_to_face, _, bary, _ = self._rasterize_meshes(
            self._meshes(verts=verts, faces=self.faces), image_size=self.scene.size,
            blur_radius=0.0, faces_per_pixel=1)  # culling is off by default
        return pix_to_face, bary

    def _image(self, pos: torch.Tensor, tex: torch.Tensor) -> torch.Tensor:
        pix_to_face, bary = self._fragments(pos)
        uv = self._interpolate(pix_to_face, bary, self.corner_uv)[..., 0, :]
        return sample_bilinear(tex, uv) * (pix_to_face[..., :1] >= 0)

    def rasterize(self) -> torch.Tensor:
        with torch.no_grad():
            return self._fragments(self.scene.pos)[0]

    def triangle_ids(self, out: torch.Tensor) -> torch.Tensor:
        packed = out[..., 0]
        return torch.where(packed >= 0, packed - self.face_offset, -1)
