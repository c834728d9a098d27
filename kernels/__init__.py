"""Triton kernels of the rendering layer (nl3dmm.kernels), used by backend="triton".

    render_math.py   the math of csrc/render_math.h as small @triton.jit helpers
    rasterize.py     coverage (packed-key atomic_min z-buffer), resolve, and backward
    interpolate.py   barycentric attribute interpolation and backward
    texture.py       bilinear texture lookup (clamp / zero / wrap) and backward
    antialias.py     analytic coverage blending at silhouette edges and backward
    derivatives.py   screen-space derivatives of interpolated attributes and backward
    texture_mip.py   trilinear lookup in a packed mip pyramid and backward
    textured.py      render_textured's fused interpolate -> texture -> composite and backward
    fixed_sum.py     deterministic scatter-add of the backward passes (64-bit fixed point)
    runtime.py       launching: compiled on CUDA tensors, Triton's interpreter on CPU tensors

Each op module exposes plain functions on validated, contiguous tensors (see
engine/render/backends/triton.py, which wraps them in the Backend interface).
"""
