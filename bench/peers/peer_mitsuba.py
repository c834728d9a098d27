"""Mitsuba 3, LLVM variant (`llvm_ad_rgb`): rays along +z from the pixel centres against the
mesh in screen space, through its Embree BVH. As in a fitting loop, the vertex positions are
written and the BVH rebuilt for every image of every call (`params.update()`).

ids: the first hit's `prim_index`. Textured: the hit's `uv` (Mitsuba interpolates the
per-vertex texcoords without flipping them on a mesh built in memory) looked up in a Dr.Jit
`Texture2f` with linear filtering and clamping, whose texel centres sit where ours do.
Forward+backward: Dr.Jit's reverse mode from the image to the texture tensor and to the
clip-space positions (Mitsuba recomputes the hit's barycentrics differentiably when the
positions carry gradients; the clip -> screen map is part of the graph).
"""
from __future__ import annotations

import functools
from typing import Optional

import numpy as np
import torch

from peer_scene import Peer, PeerScene, pixel_centres

VARIANT = "llvm_ad_rgb"


class Mitsuba(Peer):
    name = "mitsuba"
    title = "Mitsuba 3 LLVM (BVH rebuilt per image)"
    install = "pip install mitsuba (its LLVM variant loads libLLVM: apt-get install -y libllvm15)"
    backward = True

    @classmethod
    def missing(cls) -> Optional[str]:
        return _probe()

    @classmethod
    def version(cls) -> str:
        import drjit as dr
        import mitsuba as mi
        return f"mitsuba {mi.__version__} {VARIANT}, drjit {dr.__version__}, {dr.thread_count()} threads"

    def __init__(self, scene: PeerScene):
        super().__init__(scene)
        import drjit as dr
        import mitsuba as mi
        mi.set_variant(VARIANT)
        self.dr, self.mi = dr, mi
        size, (_, V, _), F = scene.size, scene.pos.shape, scene.tri.shape[0]
        mesh = mi.Mesh("face", vertex_count=V, face_count=F, has_vertex_normals=False,
                       has_vertex_texcoords=True)
        mesh_params = mi.traverse(mesh)
        mesh_params["faces"] = mi.UInt32(scene.tri.numpy().astype(np.uint32).ravel())
        mesh_params["vertex_texcoords"] = mi.Float(scene.uv.numpy().ravel())
        mesh_params["vertex_positions"] = mi.Float(scene.screen_vertices(0).ravel())
        mesh_params.update()
        self.world = mi.load_dict({"type": "scene", "face": mesh})
        self.params = mi.traverse(self.world)
        centres = pixel_centres(size)
        self.ray = mi.Ray3f(o=mi.Point3f(mi.Float(centres[:, 0]), mi.Float(centres[:, 1]),
                                         mi.Float(np.full(len(centres), -2, np.float32))),
                            d=mi.Vector3f(0, 0, 1))  # depth is in [-1, 1]
        # clip (x, y, z) -> screen, on the flat xyz array Mitsuba stores
        half = size / 2
        self.scale = mi.Float(np.tile(np.float32([half, half, 1]), V))
        self.offset = mi.Float(np.tile(np.float32([half, half, 0]), V))
        self.tex = scene.tex[0].numpy()
        self.texture = self._texture(mi.TensorXf(self.tex))
        self.grad_image = [[mi.Float(scene.grad_image[b, ..., k].numpy().ravel()) for k in range(3)]
                           for b in range(scene.batch)]

    def _texture(self, tensor):
        dr = self.dr
        return self.mi.Texture2f(tensor, filter_mode=dr.FilterMode.Linear,
                                 wrap_mode=dr.WrapMode.Clamp)

    def _place(self, positions) -> None:
        """Write image b's clip positions (a flat xyz Float) and rebuild the BVH."""
        self.params["face.vertex_positions"] = positions * self.scale + self.offset
        self.params.update()

    def _clip_xyz(self, b: int):
        return self.mi.Float(self.scene.pos[b, :, :3].numpy().ravel())

    def _colour(self, texture):
        """Per channel Float of the textured image at the current positions (0 where empty)."""
        si = self.world.ray_intersect(self.ray, ray_flags=self.mi.RayFlags.UV, coherent=True)
        valid = si.is_valid()
        return [self.dr.select(valid, c, 0.0) for c in texture.eval(si.uv)]

    def rasterize(self) -> np.ndarray:
        dr, mi = self.dr, self.mi
        size = self.scene.size
        out = np.empty((self.scene.batch, size, size), np.int32)
        for b in range(self.scene.batch):
            self._place(self._clip_xyz(b))
            hit = self.world.ray_intersect_preliminary(self.ray, coherent=True)
            out[b] = np.array(dr.select(hit.is_valid(), mi.Int32(hit.prim_index), -1)).reshape(size, size)
        return out

    def triangle_ids(self, out: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(out).long()

    def textured(self) -> torch.Tensor:
        size = self.scene.size
        out = np.empty((self.scene.batch, size, size, 3), np.float32)
        for b in range(self.scene.batch):
            self._place(self._clip_xyz(b))
            colour = self._colour(self.texture)
            self.dr.eval(colour)
            for k in range(3):
                out[b, ..., k] = np.array(colour[k]).reshape(size, size)
        return torch.from_numpy(out)

    def forward_backward(self) -> tuple[torch.Tensor, torch.Tensor]:
        dr, mi = self.dr, self.mi
        tensor = mi.TensorXf(self.tex)
        dr.enable_grad(tensor)
        grad_pos = []
        for b in range(self.scene.batch):
            positions = self._clip_xyz(b)
            dr.enable_grad(positions)
            self._place(positions)
            # A texture per image: backward() clears the edges it followed, including the one
            # from the texture's copy to `tensor`. One backward per image, because the trace
            # runs lazily against whichever BVH the scene holds when it is evaluated.
            colour = self._colour(self._texture(tensor))
            dr.backward(sum(dr.sum(c * g) for c, g in zip(colour, self.grad_image[b])))
            grad_pos.append(np.array(dr.grad(positions)).reshape(-1, 3))
        self.params["face.vertex_positions"] = dr.detach(self.params["face.vertex_positions"])
        return (torch.from_numpy(np.stack(grad_pos)),
                torch.from_numpy(np.array(dr.grad(tensor)))[None])


@functools.cache
def _probe() -> Optional[str]:
    try:
        import drjit as dr
        import mitsuba as mi
        mi.set_variant(VARIANT)
        dr.eval(dr.arange(mi.Float, 4) + 1)  # the LLVM JIT starts here, or fails
    except Exception as exc:  # ImportError, or no usable libLLVM
        return f"mitsuba {VARIANT} unavailable ({type(exc).__name__}: {exc})"
    return None
