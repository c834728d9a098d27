"""Differentiable rendering layer: rasterize -> interpolate -> sample_texture (+ mip-mapping), and antialias;
render_textured runs the common chain fused."""
from .backends import available_backends
from .backends.cpu import num_threads, pool_counts, set_num_threads
from .mipmap import mip_levels
from .ops import antialias, interpolate, interpolate_derivatives, rasterize, render_textured, sample_texture
from .pending import check_pending
from .topology import edge_opposites

__all__ = ["rasterize", "interpolate", "interpolate_derivatives", "sample_texture", "mip_levels",
           "antialias", "render_textured", "edge_opposites", "available_backends",
           "num_threads", "set_num_threads", "pool_counts", "check_pending"]
