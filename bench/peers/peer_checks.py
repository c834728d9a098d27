"""Ids first, then time: how far a peer's output agrees with ours on the same scene, and the
thresholds below which a peer's timing would compare different work.

Ours is the baseline of every peer; ours itself is checked against our pure-torch reference.
Pixels count as face pixels when either side covers them. The image and gradients are
compared where the two sides agree on the triangle; the texture gradient leaves out texel
(0, 0), where ours collects the gradient of the empty pixels (interpolate gives them uv = 0
and the caller masks them; the peers return 0 there).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import torch

from peer_scene import Peer, id_agreement

MIN_ID_AGREEMENT = 0.99      # share of face pixels with the same triangle id
IMAGE_TOLERANCE = 0.01       # per channel, texture values are in [0, 1]
MIN_IMAGE_AGREEMENT = 0.99   # share of same-id face pixels within IMAGE_TOLERANCE
MAX_GRADIENT_ERROR = 0.05    # relative L2 error of each gradient


@dataclass
class Outputs:
    """One renderer's results on a scene, computed on first use."""
    peer: Peer
    _cache: dict = field(default_factory=dict)

    def get(self, what: str) -> object:
        if what not in self._cache:
            if what == "ids":
                self._cache[what] = self.peer.triangle_ids(self.peer.rasterize())
            elif what == "image":
                self._cache[what] = self.peer.textured()
            else:
                self._cache[what] = self.peer.forward_backward()
        return self._cache[what]


@dataclass
class Agreement:
    ids: float
    image: Optional[float] = None
    grad_pos: Optional[float] = None
    grad_tex: Optional[float] = None

    def failures(self) -> list[str]:
        out = []
        if self.ids < MIN_ID_AGREEMENT:
            out.append(f"{self.ids:.2%} of face pixels have our triangle id (< {MIN_ID_AGREEMENT:.0%})")
        if self.image is not None and self.image < MIN_IMAGE_AGREEMENT:
            out.append(f"{self.image:.2%} of same-id pixels are within {IMAGE_TOLERANCE} of our image")
        for name in ("grad_pos", "grad_tex"):
            error = getattr(self, name)
            if error is not None and not error <= MAX_GRADIENT_ERROR:  # NaN fails
                out.append(f"{name} differs from ours by {error:.3g} (relative L2 > {MAX_GRADIENT_ERROR})")
        return out


def _relative_error(value: torch.Tensor, expected: torch.Tensor) -> float:
    return float((value.double() - expected.double()).norm() / expected.double().norm())


def agreement(peer: Outputs, base: Outputs, op: str) -> Agreement:
    """Compare `peer` with `base` for `op`: ids always, then the op's own output."""
    ids, base_ids = peer.get("ids"), base.get("ids")
    result = Agreement(ids=id_agreement(base_ids, ids))
    if op == "textured":
        same = (ids == base_ids) & (ids >= 0)
        error = (peer.get("image") - base.get("image")).abs().amax(-1)[same]
        result.image = float((error <= IMAGE_TOLERANCE).float().mean())
    elif op == "forward_backward":
        (grad_pos, grad_tex), (base_pos, base_tex) = peer.get("grads"), base.get("grads")
        keep = torch.ones_like(base_tex)
        keep[:, 0, 0] = 0
        result.grad_pos = _relative_error(grad_pos[..., :3], base_pos[..., :3])
        result.grad_tex = _relative_error(grad_tex * keep, base_tex * keep)
    return result

