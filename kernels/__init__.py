"""Triton kernels of the rendering layer (nl3dmm.kernels). Issue 4 fills this package."""
