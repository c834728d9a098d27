"""Our renderer as a peer: the CPU kernels ("ours", the side every peer is compared with) and
the pure-torch reference backend (autograd gradients)."""
from __future__ import annotations

import torch

import nl3dmm

from peer_scene import TorchPeer


class Ours(TorchPeer):
    name = "ours"
    title = "nl3dmm cpu"
    install = "pip install -e . (this repository)"
    backend = "cpu"

    def _raster(self, pos: torch.Tensor) -> torch.Tensor:
        s = self.scene
        return nl3dmm.rasterize(pos, s.tri, (s.size, s.size), cull_backfaces=False,
                                backend=self.backend)

    def _image(self, pos: torch.Tensor, tex: torch.Tensor) -> torch.Tensor:
        # The chain as a user writes it: render_textured, fused on the CPU (the reference backend
        # runs the separate ops). Empty pixels are 0 rather than texel (0, 0); the checks compare
        # only pixels with the same triangle, and leave texel (0, 0)'s gradient out.
        s = self.scene
        image, _, _ = nl3dmm.render_textured(pos, s.tri, s.uv, tex, (s.size, s.size),
                                             cull_backfaces=False, backend=self.backend)
        return image

    def rasterize(self) -> torch.Tensor:
        with torch.no_grad():
            return self._raster(self.scene.pos)

    def triangle_ids(self, out: torch.Tensor) -> torch.Tensor:
        return out[..., 3].long() - 1


class Reference(Ours):
    name = "reference"
    title = "our pure-torch reference"
    backend = "reference"
