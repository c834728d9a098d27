"""The kernel-level interface every backend implements.

Methods take validated, contiguous tensors on the backend's device and return new tensors;
they never build autograd graphs (engine/render/ops.py wraps them in autograd Functions).
`out` arguments let tests hand in poisoned buffers to prove every element gets written.
"""
from __future__ import annotations

from typing import Optional

import torch

from ...constants import BOUNDARY_MODES as BOUNDARY_CODES  # noqa: F401  (re-exported to cpu, cuda)


class Backend:
    name: str = "?"

    def unavailable_reason(self) -> Optional[str]:
        """None when usable here, else a sentence saying why not."""
        raise NotImplementedError

    def rasterize(self, pos: torch.Tensor, tri: torch.Tensor, height: int, width: int,
                  cull_backfaces: bool, out: Optional[torch.Tensor] = None) -> torch.Tensor:
        raise NotImplementedError

    def rasterize_backward(self, pos: torch.Tensor, tri: torch.Tensor, rast: torch.Tensor,
                           grad_rast: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def interpolate(self, attr: torch.Tensor, attr_batched: bool, rast: torch.Tensor,
                    tri: torch.Tensor, out: Optional[torch.Tensor] = None) -> torch.Tensor:
        raise NotImplementedError

    def interpolate_backward(self, attr: torch.Tensor, attr_batched: bool, rast: torch.Tensor,
                             tri: torch.Tensor, grad_out: torch.Tensor
                             ) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def sample_texture(self, tex: torch.Tensor, tex_batched: bool, uv: torch.Tensor,
                       boundary: str, out: Optional[torch.Tensor] = None) -> torch.Tensor:
        raise NotImplementedError

    def sample_texture_backward(self, tex: torch.Tensor, tex_batched: bool, uv: torch.Tensor,
                                boundary: str, grad_out: torch.Tensor
                                ) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError


def empty_or(out: Optional[torch.Tensor], shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
    """A fresh output buffer, or the caller's after checking it fits."""
    if out is None:
        return torch.empty(shape, dtype=like.dtype, device=like.device)
    if tuple(out.shape) != tuple(shape) or out.dtype != like.dtype or not out.is_contiguous():
        raise ValueError(f"out must be a contiguous {like.dtype} tensor of shape {shape}, "
                         f"got {out.dtype} {tuple(out.shape)}")
    return out
