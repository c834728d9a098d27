"""nl3dmm: the Nonlinear 3D Face Morphable Model with our own differentiable renderer."""
from .render import antialias, available_backends, interpolate, rasterize, sample_texture

__version__ = "0.1.0"
__all__ = ["rasterize", "interpolate", "sample_texture", "antialias", "available_backends", "__version__"]
