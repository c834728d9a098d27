"""The scene every peer draws, the interface an adapter implements, and the helpers adapters
share (pixel-centre rays, barycentric uv, bilinear lookup in our texel convention).

Scene: the paper mesh (105,840 triangles) posed like the suites (bench/paper_scene.py), at B
yaws in a size x size image, culling off, one 128 x 128 RGB texture shared by the batch, and a
fixed upstream gradient for forward+backward. Conventions are ours (engine/render/ops.py):
screen x = (x/w + 1) W / 2, row r covers screen y in [r, r + 1) (row 0 is clip y = -1),
pixels sampled at their centres, smaller depth nearer, texel (i, j) centred at
uv = ((j + 0.5)/Wt, (i + 0.5)/Ht) with row 0 of the texture at v = 0, clamped at the border.
An adapter converts its peer's conventions to these, so ids and images compare pixel for pixel.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import numpy as np
import torch

_BENCH = str(Path(__file__).resolve().parents[1])
if _BENCH not in sys.path:  # run as a script (compare.py), bench/ is not on the path
    sys.path.insert(0, _BENCH)
from paper_scene import Scene  # noqa: E402

TEXTURE_SIZE = 128


class PeerScene:
    """What every peer gets: clip-space positions (B, V, 4) float32 with w = 1, triangles
    (F, 3) int32, per-vertex uv (V, 2), texture (1, 128, 128, 3), upstream gradient of the
    textured image (B, size, size, 3)."""

    def __init__(self, batch: int, size: int):
        base = Scene(batch, size=size)
        self.batch, self.size = batch, size
        self.pos = base.pos.contiguous()
        self.tri = base.tri.contiguous()
        self.uv = base.uv.contiguous()
        gen = torch.Generator().manual_seed(0)
        self.tex = torch.rand(1, TEXTURE_SIZE, TEXTURE_SIZE, 3, generator=gen)
        self.grad_image = torch.randn(batch, size, size, 3, generator=gen)

    def screen_vertices(self, b: int) -> np.ndarray:
        """(V, 3) float32 screen x, screen y (our row direction) and depth of image b: what
        a ray caster traces with rays along +z from the pixel centres."""
        p = self.pos[b].numpy()
        half = self.size / 2
        return np.stack([(p[:, 0] + 1) * half, (p[:, 1] + 1) * half, p[:, 2]], 1).astype(np.float32)


class Peer:
    """One renderer in the comparison. Subclasses set the class attributes and implement the
    methods they support; `missing()` must not fail when the peer is not installed."""

    name: str = ""        # id in test names and result files
    title: str = ""       # column header of the results table
    install: str = ""     # how to get it, shown when it is missing
    backward: bool = False  # whether forward_backward is implemented

    @classmethod
    def missing(cls) -> Optional[str]:
        """None when this peer runs here, else why not."""
        return None

    @classmethod
    def version(cls) -> str:
        """What exactly runs, for the results (call only when missing() is None)."""
        return ""

    def __init__(self, scene: PeerScene):
        self.scene = scene

    def rasterize(self) -> object:
        """Visibility of every pixel of every image (timed); the result goes to triangle_ids."""
        raise NotImplementedError

    def triangle_ids(self, out: object) -> torch.Tensor:
        """(B, H, W) int64 triangle index per pixel of rasterize()'s result, -1 where empty."""
        raise NotImplementedError

    def textured(self) -> torch.Tensor:
        """(B, H, W, 3) float32 image: the texture looked up through the interpolated uv."""
        raise NotImplementedError

    def forward_backward(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Gradients of sum(textured() * scene.grad_image) to the clip-space positions
        (B, V, >= 3; x, y, z first) and to the texture (1, 128, 128, 3)."""
        raise NotImplementedError


class TorchPeer(Peer):
    """A peer whose textured image is a torch function of (positions, texture): the image
    without a graph, and the gradients from autograd."""

    backward = True

    def _image(self, pos: torch.Tensor, tex: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def textured(self) -> torch.Tensor:
        with torch.no_grad():
            return self._image(self.scene.pos, self.scene.tex)

    def forward_backward(self) -> tuple[torch.Tensor, torch.Tensor]:
        pos = self.scene.pos.clone().requires_grad_(True)
        tex = self.scene.tex.clone().requires_grad_(True)
        self._image(pos, tex).backward(self.scene.grad_image)
        return pos.grad, tex.grad


def pixel_centres(size: int) -> np.ndarray:
    """(size * size, 2) float32 screen (x, y) of the pixel centres, row-major."""
    r, c = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
    return np.stack([c.ravel() + 0.5, r.ravel() + 0.5], 1).astype(np.float32)


def barycentric_uv(uv: torch.Tensor, tri: torch.Tensor, ids: torch.Tensor,
                   w1: torch.Tensor, w2: torch.Tensor) -> torch.Tensor:
    """(..., 2) uv at pixels hitting triangle `ids` (-1: none, uv 0) with barycentric weights
    w1, w2 of its second and third vertex."""
    hit = ids >= 0
    corners = uv[tri[ids.clamp(min=0)].long()]  # (..., 3, 2)
    w0 = 1 - w1 - w2
    out = w0[..., None] * corners[..., 0, :] + w1[..., None] * corners[..., 1, :] \
        + w2[..., None] * corners[..., 2, :]
    return torch.where(hit[..., None], out, torch.zeros_like(out))


def sample_bilinear(tex: torch.Tensor, uv: torch.Tensor) -> torch.Tensor:
    """(B, H, W, C) bilinear lookup of tex (1, Ht, Wt, C) at uv (B, H, W, 2), clamped at the
    border, in our texel convention (grid_sample's align_corners=False puts texel centres at
    the same places; its y runs along texture rows like our v)."""
    grid = uv * 2 - 1
    image = torch.nn.functional.grid_sample(
        tex.permute(0, 3, 1, 2).expand(uv.shape[0], -1, -1, -1), grid, mode="bilinear",
        padding_mode="border", align_corners=False)
    return image.permute(0, 2, 3, 1)


def id_agreement(ours: torch.Tensor, peer: torch.Tensor) -> float:
    """Share of face pixels (covered in either id image) whose triangle ids are equal."""
    face = (ours >= 0) | (peer >= 0)
    return float(((ours == peer) & face).sum()) / max(int(face.sum()), 1)
