"""nl3dmm: the Nonlinear 3D Face Morphable Model with our own differentiable renderer."""
from .render import (antialias, available_backends, interpolate, interpolate_derivatives, mip_levels,
                     rasterize, render_textured, sample_texture)

__version__ = "0.1.0"
__all__ = ["rasterize", "interpolate", "interpolate_derivatives", "sample_texture", "mip_levels",
           "render_textured",
           "antialias", "available_backends", "__version__"]
