"""The numbers and codes every rendering backend must agree on, stated once for Python.

The C++ and CUDA kernels read the same values from csrc/render_math.h (a header cannot import
Python); tests/test_constants.py parses that header's `constexpr`s and its BoundaryMode enum
and fails when the two disagree. Everything else in Python (input checks, the Triton kernels,
the pure-torch reference, the backends) imports from here.

This module imports nothing, so the lowest floors (nl3dmm.kernels, nl3dmm.render) can use it.
"""

# Vertex positions are snapped to 1/2^SUBPIXEL_BITS pixel before the integer edge functions.
SUBPIXEL_BITS = 8
SUBPIXEL_SCALE = 1 << SUBPIXEL_BITS  # render_math.h kSubpixelScale

# Snapped vertices stay within this many pixels of the image origin, which keeps the fixed-point
# edge functions ((2^20 * 2^8)^2 = 2^56) inside int64: a triangle reaching past the clip planes
# |x| <= (GUARD_BAND_PIXELS / W) w, |y| <= (GUARD_BAND_PIXELS / H) w is clipped to them.
GUARD_BAND_PIXELS = 1 << 20  # kGuardBandPixels

# Clipping: near, far and the four guard band planes; a clipped triangle is a convex polygon of
# at most 3 + CLIP_PLANES vertices.
CLIP_PLANES = 6  # kClipPlanes
MAX_CLIP_VERTICES = 3 + CLIP_PLANES  # kMaxClipVertices

# A vertex needs w >= the smallest normal float32 (2^-126), whatever the dtype; below it 1/w
# overflows float32 and its float32 gradient would be inf. Smaller w counts as behind the eye.
MIN_W = 2.0 ** -126  # kMinW

# Triangle ids travel as float32 (id + 1) in the raster; beyond 2^24 they would round.
MAX_TRIANGLES = (1 << 24) - 1  # kMaxTriangles

# Largest image (and texture) side the ops accept; keeps pixel indices of one image in int32.
MAX_RESOLUTION = 16384

# antialias blends a pixel pair whose silhouette crossing lies up to this many pixels outside the
# segment between the two centres (clamped to it): coverage was decided on snapped vertices.
ANTIALIAS_SLACK = 1.0 / 16.0  # kAntialiasSlack

# sample_texture's boundary rules and the integer code each kernel receives (enum BoundaryMode).
BOUNDARY_MODES = {"clamp": 0, "zero": 1, "wrap": 2}
