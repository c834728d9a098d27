"""Differentiable rendering layer: rasterize -> interpolate -> sample_texture, and antialias."""
from .backends import available_backends
from .backends.cpu import num_threads, set_num_threads
from .ops import antialias, interpolate, rasterize, sample_texture
from .pending import check_pending
from .topology import edge_opposites

__all__ = ["rasterize", "interpolate", "sample_texture", "antialias", "edge_opposites", "available_backends",
           "num_threads", "set_num_threads", "check_pending"]
