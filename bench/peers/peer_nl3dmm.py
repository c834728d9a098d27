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
        rast = self._raster(pos)
        uv = nl3dmm.interpolate(self.scene.uv, rast, self.scene.tri, backend=self.backend)
        return nl3dmm.sample_texture(tex, uv, backend=self.backend)

    def rasterize(self) -> torch.Tensor:
        with torch.no_grad():
            return self._raster(self.scene.pos)

    def triangle_ids(self, out: torch.Tensor) -> torch.Tensor:
        return out[..., 3].long() - 1


class Reference(Ours):
    name = "reference"
    title = "our pure-torch reference"
    backend = "reference"
