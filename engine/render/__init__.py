"""Differentiable rendering layer: rasterize -> interpolate -> sample_texture."""
from .backends import available_backends
from .backends.cpu import num_threads, set_num_threads
from .ops import interpolate, rasterize, sample_texture
from .pending import check_pending

__all__ = ["rasterize", "interpolate", "sample_texture", "available_backends",
           "num_threads", "set_num_threads", "check_pending"]
