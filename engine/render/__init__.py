"""Differentiable rendering layer: rasterize -> interpolate -> sample_texture (+ mip-mapping)."""
from .backends import available_backends
from .backends.cpu import num_threads, set_num_threads
from .mipmap import mip_levels
from .ops import interpolate, interpolate_derivatives, rasterize, sample_texture
from .pending import check_pending

__all__ = ["rasterize", "interpolate", "interpolate_derivatives", "sample_texture", "mip_levels",
           "available_backends",
           "num_threads", "set_num_threads", "check_pending"]
