"""antialias: visibility gradients at silhouette edges (issue 15, "Beyond nvdiffrast" item 1).

Every backend against the float64 reference on fresh random scenes (forward and both
gradients); gradcheck of the reference and of the C++ backward; the image sum as a silhouette
moves (continuous with antialias, a staircase without it, and its finite differences equal to
the analytic vertex gradient); fitting a triangle to a target silhouette (converges with
antialias, stalls without); bad input; kernels that meet bad indices. Clipped front triangles
(a vertex behind the eye) are in every part: a soup of them on every backend, the sweeps and
finite differences along their whole edge and along the visible part of an edge to the vertex
behind the eye (which blends as the same edge to a vertex in front, on every backend, as does
an edge to a vertex beyond the guard band; finite differences in the vertex behind the eye
match its gradient), and a sliver between the whole edge and the near plane that is blended
across the edge and not across the cut.

Tolerances (max-abs error relative to the largest reference value): float64 1e-12; float32
1e-5 for the image and the colour gradient, 1e-4 for the vertex gradient (the project's). The
CUDA source, run on the CPU by the host harness, and the Triton kernels, run by Triton's
interpreter, are bit-equal to the CPU kernels in the image and the colour gradient (gathers)
and within 1e-6 (float32) / 1e-12 (float64) in the vertex gradient (fixed-point sums).

Running this file as a script writes docs/images/antialias_fit.png (target | start | fitted
without antialias | fitted with it).
"""
from __future__ import annotations

import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

import nl3dmm
from nl3dmm.render import reference
from nl3dmm.render.backends import get_backend
from nl3dmm.render.topology import edge_opposites

sys.path.insert(0, str(Path(__file__).resolve().parent))
from meshes import assert_rel_close, jittered_grid, random_soup  # noqa: E402

TOL = {torch.float32: 1e-5, torch.float64: 1e-12}
POS_TOL = {torch.float32: 1e-4, torch.float64: 1e-12}
HOST_GRAD_TOL = {torch.float32: 1e-6, torch.float64: 1e-12}
DTYPES = [torch.float32, torch.float64]
CPU = get_backend("cpu")


def soup_scene(dtype, batch=2, H=23, W=29, channels=3, clipped=False):
    """Random overlapping triangles. clipped: every triangle has one vertex behind the eye (at a
    random corner), so every front triangle is drawn clipped and blends at its whole edge and
    the visible parts of the other two."""
    pos, tri = random_soup(batch, 30, 40, dtype)  # overlapping, perspective, degenerate, w < 0
    if clipped:
        behind = 10
        pos[:, :behind, 3] = -pos[:, :behind, 3].abs()  # random_soup's vertex 0 is behind already
        tri = torch.stack([torch.randint(0, behind, (40,)), torch.randint(behind, 30, (40,)),
                           torch.randint(behind, 30, (40,))], 1)
        corner = (torch.arange(3).view(1, 3) + torch.randint(0, 3, (40, 1))) % 3
        tri = torch.gather(tri, 1, corner).int()
    rast = nl3dmm.rasterize(pos, tri, (H, W))
    color = torch.rand(batch, H, W, channels, dtype=dtype)
    return color, rast, pos, tri


def run(backend: str, color, rast, pos, tri, grad_out):
    """Forward and backward on one backend (the reference in float64): (out, grad_color, grad_pos)."""
    if backend == "reference":
        color, rast, pos, grad_out = color.double(), rast.double(), pos.double(), grad_out.double()
    c, p = color.clone().requires_grad_(True), pos.clone().requires_grad_(True)
    out = nl3dmm.antialias(c, rast, p, tri, backend=backend)
    out.backward(grad_out.to(out.dtype))
    return out.detach(), c.grad, p.grad


# ---- topology ------------------------------------------------------------------------------

def test_edge_opposites_by_hand():
    tri = torch.tensor([[0, 1, 2],   # shares 1-2 with the next, 0-1 with the third and fourth
                        [2, 1, 3],   # either winding pairs up
                        [1, 0, 4],
                        [0, 1, 5],   # edge 0-1 now has three triangles: non-manifold, -1
                        [6, 6, 2]])  # degenerate: shares nothing
    expected = torch.tensor([[3, -1, -1],   # edge 0 (1-2) -> 3; edge 1 (2-0) none; edge 2 (0-1) non-manifold
                             [-1, -1, 0],   # edge 2 (2-1) -> 0
                             [-1, -1, -1],
                             [-1, -1, -1],
                             [-1, -1, -1]], dtype=torch.int32)
    assert torch.equal(edge_opposites(tri), expected)


def test_edge_opposites_of_a_closed_grid_interior(seed):
    _, tri = jittered_grid(1, 4, 3)
    opp = edge_opposites(tri)
    # Each interior edge of the grid is shared by two triangles, boundary edges by one: a grid
    # of nx x ny quads has 2 nx ny triangles and 2 (nx + ny) boundary edges.
    assert int((opp == -1).sum()) == 2 * (4 + 3)
    for f, k in (opp >= 0).nonzero().tolist():
        edge = {int(tri[f, (k + 1) % 3]), int(tri[f, (k + 2) % 3])}
        other = int(opp[f, k])
        assert any(set(t.tolist()) == edge | {other} for t in tri), (f, k)


# ---- against the reference -------------------------------------------------------------------

SOUPS = {"soup": False, "clipped-soup": True}
# Fewest blended pixels for a soup to prove anything: a clipped soup blends at least 61 pixels at
# 23 x 29 and 32 at 13 x 17 in 150 seeds (24 and 13 when only whole edges were blended).
MIN_BLENDED = {"soup": 20, "clipped-soup": 20}


@pytest.mark.parametrize("soup", sorted(SOUPS))
@pytest.mark.parametrize("dtype", DTYPES)
def test_cpu_matches_reference(seed, dtype, soup):
    color, rast, pos, tri = soup_scene(dtype, clipped=SOUPS[soup])
    grad_out = torch.randn(color.shape, dtype=torch.float64)
    out, g_color, g_pos = run("cpu", color, rast, pos, tri, grad_out)
    ref, r_color, r_pos = run("reference", color, rast, pos, tri, grad_out)
    assert out.dtype == dtype and g_pos.dtype == dtype
    blended = int((ref != color.double()).any(-1).sum())
    assert blended > MIN_BLENDED[soup], "too few pixels blended: the case proves little"
    assert_rel_close(out, ref, TOL[dtype], "antialias")
    assert_rel_close(g_color, r_color, TOL[dtype], "d out / d color")
    assert_rel_close(g_pos, r_pos, POS_TOL[dtype], "d out / d pos")
    assert bool((g_pos[..., 2] == 0).all()), "depth gets no gradient"


def test_every_pixel_written_and_outputs_poisoned(seed):
    color, rast, pos, tri = soup_scene(torch.float32)
    out = torch.full(color.shape, float("nan"))
    CPU.antialias(color, rast, pos, tri.int(), edge_opposites(tri), out=out)
    assert not bool(out.isnan().any())


def test_interior_edges_of_a_surface_are_not_blended(seed):
    """A grid mesh has no silhouette inside: only pixels next to the background change."""
    pos, tri = jittered_grid(1, 6, 5, jitter=0.2)
    rast = nl3dmm.rasterize(pos, tri, (40, 44))
    color = torch.rand(1, 40, 44, 2, dtype=torch.float64)  # distinct colours per pixel
    out = nl3dmm.antialias(color, rast, pos, tri)
    changed = (out != color).any(-1)[0]
    empty = rast[0, ..., 3] == 0
    near_background = empty.clone()
    near_background[:, 1:] |= empty[:, :-1]
    near_background[:, :-1] |= empty[:, 1:]
    near_background[1:] |= empty[:-1]
    near_background[:-1] |= empty[1:]
    assert int(changed.sum()) > 20, "the outline should be blended"
    assert not bool((changed & ~near_background).any()), "an interior edge was blended"


def test_threads_do_not_change_bits(seed):
    color, rast, pos, tri = soup_scene(torch.float32, batch=3)
    grad_out = torch.randn(color.shape)
    runs = []
    before = nl3dmm.render.num_threads()
    try:
        for threads in (1, 2, 3):
            nl3dmm.render.set_num_threads(threads)
            runs.append(run("cpu", color, rast, pos, tri, grad_out))
    finally:
        nl3dmm.render.set_num_threads(before)
    for other in runs[1:]:
        for a, b in zip(runs[0], other):
            assert torch.equal(a, b)


# ---- gradients -------------------------------------------------------------------------------

def triangle_over_background(dtype=torch.float64):
    """One perspective triangle on an empty 14 x 15 image."""
    pos = torch.tensor([[[-0.62, -0.55, 0.1, 1.0], [0.71, -0.38, 0.2, 1.25], [-0.05, 0.64, -0.1, 0.9]]],
                       dtype=dtype)
    return pos * torch.tensor([1.0, 1.0, 1.0, 1.0], dtype=dtype), torch.tensor([[0, 1, 2]], dtype=torch.int32)


def two_overlapping_triangles(dtype=torch.float64):
    """A near triangle (z = -0.5) partly covering a far one (z = 0.5), weak perspective."""
    pos = torch.tensor([[[-0.8, -0.7, 0.5, 1.0], [0.75, -0.6, 0.5, 1.0], [0.1, 0.8, 0.5, 1.0],
                         [-0.3, -0.9, -0.5, 1.0], [0.9, 0.2, -0.5, 1.0], [-0.45, 0.55, -0.5, 1.0]]],
                       dtype=dtype)
    return pos, torch.tensor([[0, 1, 2], [3, 4, 5]], dtype=torch.int32)


def clipped_triangle_over_background(dtype=torch.float64):
    """A perspective triangle whose third vertex is behind the eye (w < 0): drawn clipped, its
    edge 0-1 crosses the image whole, the visible parts of its other edges reach the border."""
    pos = torch.tensor([[[-0.95, -0.9, 0.1, 1.0], [0.9, 0.3, 0.2, 1.1], [-0.2, 1.5, 0.5, -0.5]]], dtype=dtype)
    return pos, torch.tensor([[0, 1, 2]], dtype=torch.int32)


def clipped_triangle_over_a_far_one(dtype=torch.float64):
    """A near triangle (depth -0.5) with its third vertex behind the eye, partly over a far one
    (depth 0.5): its whole edge 0-1 runs over both the far triangle and the background."""
    pos = torch.tensor([[[-0.3, -0.9, -0.5, 1.0], [0.9, 0.2, -0.5, 1.0], [-0.5, 1.6, 0.25, -0.5],
                         [-0.8, -0.7, 0.5, 1.0], [0.75, -0.6, 0.5, 1.0], [0.1, 0.8, 0.5, 1.0]]], dtype=dtype)
    return pos, torch.tensor([[0, 1, 2], [3, 4, 5]], dtype=torch.int32)


# A corner behind the eye where a perspective camera puts one (w = -1, z = -1.2: z < -w, so the
# near plane cuts its edges), projecting through 1/w to (0.6, 4.6). The visible part of the edge
# from it to corner 0 at (0.1, 1.6) is the ray from corner 0 away from that point: down through
# the image to (-0.33, -1), where the near plane's cut is still far below (at y = -4.8).
BEHIND_THE_EYE = [-0.6, -4.6, -1.2, -1.0]


def edge_to_a_vertex_behind_the_eye(dtype=torch.float64):
    """A triangle whose corner 2 is behind the eye: the visible parts of its edges 2 -> 0 (the
    ray above) and 0 -> 1 (whole) cross the image as silhouettes; the ray from corner 1 and the
    near plane's cut stay outside it. Corners 0 and 1 are off screen."""
    pos = torch.tensor([[[0.1, 1.6, 0.5, 1.0], [1.9, -0.2, 0.5, 1.0], BEHIND_THE_EYE]], dtype=dtype)
    return pos, torch.tensor([[0, 1, 2]], dtype=torch.int32)


SCENES = {"triangle-over-background": triangle_over_background, "two-overlapping": two_overlapping_triangles,
          "clipped-over-background": clipped_triangle_over_background,
          "clipped-over-triangle": clipped_triangle_over_a_far_one,
          "edge-to-behind-the-eye": edge_to_a_vertex_behind_the_eye}

# For the sweeps: every corner off screen, so that each silhouette pixel sees one edge. Where two
# silhouette edges meet inside a pixel (a visible corner), the blend is not exact and the image
# can still jump as a pixel centre changes hands there (as nvdiffrast's): see ops.antialias.
BIG_TRIANGLE = [[-1.6, -1.3], [1.7, -0.2], [-0.4, 1.8]]  # its edges cross the image, none near 45 degrees


def big_triangle_over_background(dtype=torch.float64):
    xy = torch.tensor(BIG_TRIANGLE, dtype=dtype)
    pos = torch.cat([xy, torch.zeros(3, 1, dtype=dtype), torch.ones(3, 1, dtype=dtype)], 1)
    return pos.unsqueeze(0), torch.tensor([[0, 1, 2]], dtype=torch.int32)


def big_triangle_over_a_far_one(dtype=torch.float64):
    """The big triangle at z = -0.5 in front of one covering the whole image at z = 0.5."""
    near, _ = big_triangle_over_background(dtype)
    near[..., 2] = -0.5
    far = torch.tensor([[[-4.0, -4.0, 0.5, 1.0], [4.0, -4.0, 0.5, 1.0], [0.0, 4.0, 0.5, 1.0]]], dtype=dtype)
    return torch.cat([far, near], 1), torch.tensor([[0, 1, 2], [3, 4, 5]], dtype=torch.int32)


def behind_the_eye(scene):
    """The scene with the near triangle's third vertex moved behind the eye (w = -1), on the
    plane of its depth: the triangle is drawn clipped, its edge 0-1 (the one the sweep moves)
    stays whole and crosses the image, and the cut edges stay outside it."""
    def make(dtype=torch.float64):
        pos, tri = scene(dtype)
        v = int(tri[-1, 2])
        depth = float(pos[0, v, 2] / pos[0, v, 3])
        pos[0, v] = torch.tensor([0.3, 5.0, -depth, -1.0], dtype=dtype)
        return pos, tri
    return make


SWEEP_SCENES = {"triangle-over-background": big_triangle_over_background,
                "triangle-over-triangle": big_triangle_over_a_far_one,
                "clipped-over-background": behind_the_eye(big_triangle_over_background),
                "clipped-over-triangle": behind_the_eye(big_triangle_over_a_far_one),
                "edge-to-behind-the-eye": edge_to_a_vertex_behind_the_eye}


@pytest.mark.parametrize("backend", ["reference", "cpu"])
@pytest.mark.parametrize("scene", sorted(SCENES))
def test_gradcheck(seed, backend, scene):
    pos, tri = SCENES[scene]()
    pos = pos + torch.randn_like(pos) * 0.02 * torch.tensor([1.0, 1.0, 0.0, 0.0], dtype=pos.dtype)
    rast = nl3dmm.rasterize(pos, tri, (14, 15))
    color = torch.rand(1, 14, 15, 2, dtype=torch.float64, requires_grad=True)
    p = pos.clone().requires_grad_(True)

    def f(c, q):
        return nl3dmm.antialias(c, rast, q, tri, backend=backend)

    blended = (f(color, p) != color).any(-1).sum()
    assert int(blended) > 10, "the case must blend along its silhouettes"
    # fast_mode: random projections of the Jacobian, a few evaluations instead of one per input.
    assert torch.autograd.gradcheck(f, (color, p), eps=1e-7, atol=1e-6, rtol=1e-5, fast_mode=True)
    assert torch.autograd.gradcheck(lambda q: f(color.detach(), q), (p,), eps=1e-7, atol=1e-6, rtol=1e-5)


def image_sum(pos, tri, colour_of_triangle, resolution, antialiased: bool, interior: bool = False):
    """Sum of the image of flat-coloured triangles (background 0), re-rasterized at pos; of the
    pixels off the image's border only, with `interior` (no pairs reach outside the image, so an
    edge between a border pixel's centre and the border is not blended: see ops.antialias)."""
    rast = nl3dmm.rasterize(pos, tri, resolution)
    ids = rast[..., 3].long()
    palette = torch.cat([torch.zeros(1, dtype=pos.dtype), colour_of_triangle])
    color = palette[ids].unsqueeze(-1)  # no gradient path but antialias's
    image = nl3dmm.antialias(color, rast, pos, tri) if antialiased else color
    if interior:
        image = image[:, 1:-1, 1:-1]
    return image.sum(), rast


@pytest.mark.parametrize("scene", sorted(SWEEP_SCENES))
def test_moving_silhouette_is_continuous_with_antialias_and_a_staircase_without(seed, scene):
    """The first vertex of the near triangle slides 2 pixels to the right in 1/100 pixel steps:
    without antialias the image sum (off the border) is piecewise constant (jumps of a pixel's colour
    difference, zero difference quotient between them); with it, every step changes the sum by
    no more than the analytic slope allows, including the steps where pixel centres change hands."""
    pos, tri = SWEEP_SCENES[scene]()
    H, W = 16, 18
    vertex = 0 if len(tri) == 1 else 3
    colours = torch.tensor([1.0] if len(tri) == 1 else [0.3, 1.0], dtype=torch.float64)
    dx = 0.01 * 2.0 / W  # 1/100 pixel in clip x (w = 1 for these vertices)
    start = float(pos[0, vertex, 0])
    xs = [start + i * dx for i in range(201)]
    plain, smooth, slopes = [], [], []
    for x in xs:
        p = pos.clone()
        p[0, vertex, 0] = x
        plain.append(float(image_sum(p, tri, colours, (H, W), False, interior=True)[0]))
        q = p.clone().requires_grad_(True)
        total, _ = image_sum(q, tri, colours, (H, W), True, interior=True)
        total.backward()
        smooth.append(float(total.detach()))
        slopes.append(abs(float(q.grad[0, vertex, 0])))
    plain_steps = torch.tensor(plain).diff().abs()
    smooth_steps = torch.tensor(smooth).diff().abs()
    assert int((plain_steps > 0.25).sum()) >= 2, "the silhouette should cross pixel centres"
    assert bool(((plain_steps == 0) | (plain_steps > 0.25)).all()), "without antialias: a staircase"
    bound = 1.5 * max(slopes) * dx + 1e-12
    assert float(smooth_steps.max()) <= bound, (float(smooth_steps.max()), bound)
    assert float(smooth[-1] - smooth[0]) != 0.0


@pytest.mark.parametrize("scene", sorted(SCENES))
def test_finite_differences_of_the_image_sum_match_the_vertex_gradient(seed, scene):
    """Central differences of the re-rasterized image sum in every coordinate of a silhouette
    vertex (the one behind the eye where there is one), at points where no pixel changes hands
    within +-h, equal the analytic gradient."""
    pos, tri = SCENES[scene]()
    H, W = 16, 18
    vertex = 2 if scene == "edge-to-behind-the-eye" else 1
    colours = torch.tensor([1.0] if len(tri) == 1 else [0.3, 1.0], dtype=torch.float64)
    h = 1e-6
    gen = torch.Generator().manual_seed(seed)
    checked = 0
    for _ in range(40):
        p = pos.clone()
        p[0, :, :2] += (torch.rand(p.shape[1], 2, generator=gen, dtype=torch.float64) - 0.5) * 0.1
        q = p.clone().requires_grad_(True)
        total, rast = image_sum(q, tri, colours, (H, W), True)
        total.backward()
        for coord in range(4):
            plus, minus = p.clone(), p.clone()
            plus[0, vertex, coord] += h
            minus[0, vertex, coord] -= h
            s_plus, r_plus = image_sum(plus, tri, colours, (H, W), True)
            s_minus, r_minus = image_sum(minus, tri, colours, (H, W), True)
            if not (torch.equal(r_plus[..., 3], rast[..., 3]) and torch.equal(r_minus[..., 3], rast[..., 3])):
                continue  # a pixel changed hands inside the step: a kink, not a derivative
            fd = float(s_plus - s_minus) / (2 * h)
            analytic = float(q.grad[0, vertex, coord])
            assert abs(fd - analytic) <= 1e-6 * max(1.0, abs(analytic)), (coord, fd, analytic)
            checked += 1
        if checked >= 6:
            break
    assert checked >= 6, "too few points without a coverage change"
    assert float(q.grad[0, vertex, :2].abs().max()) > 0, "the silhouette vertex must get a gradient"


def sliver(e: float, side: int, axis: str, size: int, dtype=torch.float64):
    """A triangle whose third vertex is behind the eye, clipped by the near plane to a sliver
    0.4 px wide: its whole edge (vertices 0, 1) is the screen line x = e (axis "x") or y = e,
    the near plane's cut the parallel line 0.4 px to the `side` (+1 or -1) of it, and both run
    past the image. With vertices 0, 1 at w = 1, depth 0 and the third at (x2, 0, -2, -1), the
    near plane cuts a quarter of the way to it, at w = 1/2, so the cut is at 1.5 x_e + x2 / 2."""
    edge_ndc = 2.0 * e / size - 1.0
    cut_ndc = 2.0 * (e + 0.4 * side) / size - 1.0
    pos = torch.tensor([[edge_ndc, -3.0, 0.0, 1.0], [edge_ndc, 3.0, 0.0, 1.0],
                        [2.0 * cut_ndc - 3.0 * edge_ndc, 0.0, -2.0, -1.0]], dtype=dtype)
    if axis == "y":
        pos = pos[:, [1, 0, 2, 3]]
    return pos.unsqueeze(0), torch.tensor([[0, 1, 2]], dtype=torch.int32)


def every_forward(drivers) -> dict:
    """name -> antialias(color, rast, pos, tri) of every backend this machine runs: the CPU
    kernels, the reference, the CUDA source through the host harness, Triton's interpreter."""
    backends = {name: (lambda c, r, p, t, name=name: nl3dmm.antialias(c, r, p, t, backend=name))
                for name in ("cpu", "reference")}
    host = host_backend(drivers)
    backends["cuda-source"] = lambda c, r, p, t: backend_pass(host, c, r, p, t, torch.zeros_like(c))[0]
    try:
        import triton  # noqa: F401
        backends["triton"] = lambda c, r, p, t: nl3dmm.antialias(c, r, p, t, backend="triton")
    except ImportError:
        pass
    return backends


@pytest.mark.parametrize("corner", ["behind-the-eye", "beyond-the-band"])
def test_an_edge_to_a_clipped_corner_blends_as_the_same_edge_to_one_in_front(drivers, seed, corner):
    """The visible part of an edge to a vertex without a screen position is blended along its
    line: the triangle with corner 2 behind the eye (or in front, but a million times farther
    along the edge than the 2^20 px guard band) and the one with corner 2 moved in front of the
    eye onto that line (the ray from corner 0 away from corner 2's projection, past the image)
    draw the same pixels and, on every backend, the same antialiased image; corner 1, whose
    edges are whole in both, gets the same gradient. Random jitter of every corner, each run."""
    H, W = 16, 18
    backends = every_forward(drivers)
    compared = 0
    for _ in range(10):
        behind, tri = edge_to_a_vertex_behind_the_eye()
        behind = behind + (torch.rand_like(behind) - 0.5) * 0.1 * torch.tensor([1.0, 1.0, 0.0, 0.0])
        corner0, seen = behind[0, 0, :2], behind[0, 2, :2] / behind[0, 2, 3]
        if corner == "beyond-the-band":  # the band is |x / w| <= 2^20 / W, about 6e4 here
            behind[0, 2] = torch.cat([corner0 + 1e6 * (corner0 - seen), behind[0, 0, 2:]])
        in_front = behind.clone()
        in_front[0, 2] = torch.cat([corner0 + 1.5 * (corner0 - seen), behind[0, 0, 2:]])
        rasts = [nl3dmm.rasterize(p, tri, (H, W)) for p in (behind, in_front)]
        if not torch.equal(rasts[0][..., 3], rasts[1][..., 3]):
            continue  # a pixel centre within rounding of the line: covered by one of them only
        color = torch.rand(1, H, W, 2, dtype=torch.float64)
        for name, antialias in backends.items():
            out = [antialias(color, r, p, tri) for r, p in zip(rasts, (behind, in_front))]
            assert int((out[0] != color).any(-1).sum()) >= H, f"{name}: the silhouettes should blend"
            assert_rel_close(out[0], out[1], 1e-12, f"{name}: {corner} vs in front")
        grads = []
        for rast, p in zip(rasts, (behind, in_front)):
            q = p.clone().requires_grad_(True)
            (nl3dmm.antialias(color, rast, q, tri) * color).sum().backward()
            grads.append(q.grad[0, 1])
        assert float(grads[0].abs().max()) > 0, "corner 1's edge 0-1 crosses the image"
        assert_rel_close(grads[0], grads[1], 1e-9, "corner 1's gradient")
        compared += 1
    assert compared >= 5, "the two triangles should draw the same pixels for most jitters"


@pytest.mark.parametrize("axis", ["x", "y"])
@pytest.mark.parametrize("side", [1, -1])
def test_clipped_sliver_blends_where_the_segment_leaves_through_the_whole_edge(drivers, axis, side):
    """Pixel column (row) 3 of an 8 x 8 image, at distance t inside the sliver's whole edge, is
    covered; white on black, it moves towards the background by 1/2 - t across that edge, to
    1/2 + t, and not at all across the near plane's cut (not blended). On the pair whose
    segment leaves through the cut, the whole edge's crossing lies behind the centre, at -t:
    within the 1/16 px slack for small t, and blending there (the segment enters the triangle
    across that edge) would take the pixel to t. Every backend, exactly (up to rounding)."""
    H = W = 8
    backends = every_forward(drivers)
    for t in (0.01, 0.03, 0.05, 0.2, 0.35):
        pos, tri = sliver(3.5 - side * t, side, axis, W)
        rast = nl3dmm.rasterize(pos, tri, (H, W))
        color = (rast[..., 3:] > 0).double()
        expected = torch.zeros(1, H, W, 1, dtype=torch.float64)
        if axis == "x":
            expected[:, :, 3] = 0.5 + t
        else:
            expected[:, 3, :] = 0.5 + t
        assert torch.equal(color > 0, expected > 0), f"t = {t}: the sliver should cover line 3 only"
        for name, antialias in backends.items():
            out = antialias(color, rast, pos, tri)
            assert float((out - expected).abs().max()) <= 1e-12, (name, t, out[0, ..., 0])


# ---- the fitting demonstration -----------------------------------------------------------------

TARGET = [[-0.55, -0.45], [0.6, -0.3], [0.05, 0.65]]
START = [[-0.3, -0.25], [0.3, -0.4], [-0.15, 0.3]]
FIT_RESOLUTION = (48, 48)


def silhouette(xy: torch.Tensor, antialiased: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(image, raster) of a white 2-D triangle on black: interpolate of a constant attribute
    (differentiable in the vertices through the barycentrics, but constant inside), then
    antialias or not."""
    pos = torch.cat([xy, torch.zeros_like(xy[:, :1]), torch.ones_like(xy[:, :1])], 1).unsqueeze(0)
    tri = torch.tensor([[0, 1, 2]], dtype=torch.int32)
    rast = nl3dmm.rasterize(pos, tri, FIT_RESOLUTION)
    image = nl3dmm.interpolate(torch.ones(3, 1, dtype=xy.dtype), rast, tri)
    if antialiased:
        image = nl3dmm.antialias(image, rast, pos, tri)
    return image, rast


def iou(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a[..., 3] > 0, b[..., 3] > 0
    return float((a & b).sum()) / float((a | b).sum())


def fit_silhouette(antialiased: bool, steps: int = 150) -> tuple[torch.Tensor, list[float]]:
    """Adam on the three vertices so that the (antialiased) image matches the target's."""
    target, _ = silhouette(torch.tensor(TARGET, dtype=torch.float64), True)
    xy = torch.tensor(START, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.Adam([xy], lr=0.02)
    losses = []
    for _ in range(steps):
        optimizer.zero_grad()
        image, _ = silhouette(xy, antialiased)
        loss = ((image - target) ** 2).mean()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    return xy.detach(), losses


def test_fitting_a_silhouette_converges_with_antialias_and_stalls_without():
    _, target_rast = silhouette(torch.tensor(TARGET, dtype=torch.float64), False)
    _, start_rast = silhouette(torch.tensor(START, dtype=torch.float64), False)
    start_iou = iou(start_rast, target_rast)
    assert start_iou < 0.6
    fitted, losses = fit_silhouette(True)
    stalled, flat_losses = fit_silhouette(False)
    fitted_iou = iou(silhouette(fitted, False)[1], target_rast)
    stalled_iou = iou(silhouette(stalled, False)[1], target_rast)
    print(f"IoU start {start_iou:.3f}, with antialias {fitted_iou:.3f}, without {stalled_iou:.3f}; "
          f"loss {losses[0]:.4f} -> {losses[-1]:.5f}")
    assert fitted_iou > 0.95
    assert losses[-1] < 0.05 * losses[0]
    assert torch.equal(stalled, torch.tensor(START, dtype=torch.float64)), "no gradient: Adam never moves"
    assert stalled_iou == start_iou and flat_losses[-1] == flat_losses[0]


# ---- bad input ---------------------------------------------------------------------------------

def small_case():
    pos, tri = triangle_over_background(torch.float32)
    rast = nl3dmm.rasterize(pos, tri, (8, 9))
    return torch.rand(1, 8, 9, 3), rast, pos, tri


@pytest.mark.parametrize("change, error, message", [
    (lambda c, r, p, t: (c[..., :0], r, p, t), ValueError, "C >= 1"),
    (lambda c, r, p, t: (c[:, :7], r, p, t), ValueError, "B, H, W must match"),
    (lambda c, r, p, t: (c.double(), r, p, t), TypeError, "color is torch.float64"),
    (lambda c, r, p, t: (c.int(), r, p, t), TypeError, "color must be float32 or float64"),
    (lambda c, r, p, t: (c.masked_fill(c > 0.5, float("nan")), r, p, t), ValueError, "color contains NaN"),
    (lambda c, r, p, t: (c, r, p.expand(2, -1, -1), t), ValueError, "pos has batch 2"),
    (lambda c, r, p, t: (c, r, p.double(), t), TypeError, "pos is torch.float64"),
    (lambda c, r, p, t: (c, r, p[..., :3], t), ValueError, r"pos must have shape \(B, V, 4\)"),
    (lambda c, r, p, t: (c, r, p, t + 5), ValueError, "tri references vertex"),
    (lambda c, r, p, t: (c, r.masked_fill(r[..., 3:] > 0, 7.0), p, t), ValueError, r"rast\[..., 3\] must hold"),
    (lambda c, r, p, t: ("image", r, p, t), TypeError, "color must be a torch.Tensor"),
])
def test_bad_inputs_raise(change, error, message):
    args = change(*small_case())
    with pytest.raises(error, match=message):
        nl3dmm.antialias(*args)


@pytest.mark.parametrize("topology, error, message", [
    (torch.zeros(2, 3, dtype=torch.int32), ValueError, r"shape \(F, 3\) = \(1, 3\)"),
    (torch.full((1, 3), 3, dtype=torch.int32), ValueError, "outside -1..2"),
    (torch.full((1, 3), -2, dtype=torch.int64), ValueError, "outside -1..2"),
    (torch.zeros(1, 3), TypeError, "topology must be int32"),
])
def test_bad_topology_raises(topology, error, message):
    color, rast, pos, tri = small_case()
    with pytest.raises(error, match=message):
        nl3dmm.antialias(color, rast, pos, tri, topology=topology)


def test_deferred_validation_reports_at_check_pending():
    color, rast, pos, tri = small_case()
    nl3dmm.render.check_pending()
    color[0, 0, 0, 0] = float("nan")
    nl3dmm.antialias(color, rast, pos, tri, validate="deferred")  # no host check, no error yet
    with pytest.raises(ValueError, match="antialias: color contains NaN or Inf"):
        nl3dmm.render.check_pending()
    # A bad topology is also met by the kernel, which skips it and (on the CPU) says so at once.
    with pytest.raises(ValueError, match="antialias_forward: topology holds a vertex index outside"):
        nl3dmm.antialias(color.nan_to_num(), rast, pos, tri, topology=torch.full((1, 3), 9), validate="deferred")
    with pytest.raises(ValueError, match="antialias: topology holds an index outside -1..V-1"):
        nl3dmm.render.check_pending()


# ---- kernels meeting bad indices (validation bypassed) --------------------------------------------

BAD_INDEX_CASES = {
    "topology": ("topology holds a vertex index outside -1..V-1",
                 lambda rast, tri, topo: (rast, tri, torch.full_like(topo, 10 ** 9))),
    "raster id": ("not a triangle id", lambda rast, tri, topo: (rast.masked_fill(rast[..., 3:] > 0, 1e9), tri, topo)),
    "tri": ("tri holds a vertex index outside", lambda rast, tri, topo: (rast, torch.tensor([[0, 1, 10 ** 9]],
                                                                                              dtype=torch.int32), topo)),
}


def check_bad_indices(backend, case: str) -> None:
    message, corrupt = BAD_INDEX_CASES[case]
    color, rast, pos, tri = small_case()
    rast, tri, topo = corrupt(rast, tri.int(), edge_opposites(tri))
    with pytest.raises(ValueError, match=message):
        backend.antialias(color, rast, pos, tri, topo)
    with pytest.raises(ValueError, match=message):
        backend.antialias_backward(color, rast, pos, tri, topo, torch.ones_like(color))


@pytest.mark.parametrize("case", sorted(BAD_INDEX_CASES))
def test_cpu_kernels_refuse_bad_indices(case):
    check_bad_indices(CPU, case)


# ---- the CUDA source on the host harness -----------------------------------------------------------

@pytest.fixture(scope="module")
def drivers():
    import cuda_host
    with ThreadPoolExecutor(3) as pool:
        return dict(zip(cuda_host.VARIANTS, pool.map(cuda_host.build, cuda_host.VARIANTS)))


def host_backend(drivers, variant="plain", workers=3, chunk=5):
    from cuda_host import HostCudaBackend
    return HostCudaBackend(drivers[variant], workers=workers, chunk=chunk)


def backend_pass(backend, color, rast, pos, tri, grad_out):
    topo = edge_opposites(tri)
    out = backend.antialias(color, rast, pos, tri.int(), topo, out=torch.full(color.shape, float("nan"),
                                                                               dtype=color.dtype))
    grad_color, grad_pos = backend.antialias_backward(color, rast, pos, tri.int(), topo, grad_out)
    return out, grad_color, grad_pos


@pytest.mark.parametrize("soup", sorted(SOUPS))
@pytest.mark.parametrize("dtype", DTYPES)
def test_cuda_source_matches_cpu(drivers, seed, dtype, soup):
    color, rast, pos, tri = soup_scene(dtype, clipped=SOUPS[soup])
    grad_out = torch.randn(color.shape, dtype=dtype)
    expected = backend_pass(CPU, color, rast, pos, tri, grad_out)
    assert int((expected[0] != color).any(-1).sum()) > MIN_BLENDED[soup], "too few pixels blended"
    actual = backend_pass(host_backend(drivers), color, rast, pos, tri, grad_out)
    assert torch.equal(actual[0], expected[0]), "forward is not bit-equal"
    assert torch.equal(actual[1], expected[1]), "the colour gradient (a gather) is not bit-equal"
    scale = float(expected[2].abs().max())
    assert scale > 0
    err = float((actual[2].double() - expected[2].double()).abs().max())
    assert err <= HOST_GRAD_TOL[dtype] * scale, err / scale


def test_cuda_source_is_bit_identical_for_any_schedule(drivers, seed):
    color, rast, pos, tri = soup_scene(torch.float32)
    grad_out = torch.randn(color.shape)
    runs = [backend_pass(host_backend(drivers, workers=w, chunk=c), color, rast, pos, tri, grad_out)
            for w, c in ((1, 1 << 20), (4, 1), (3, 7))]
    for other in runs[1:]:
        for a, b in zip(runs[0], other):
            assert torch.equal(a.view(torch.int32), b.view(torch.int32))


@pytest.mark.parametrize("case", sorted(BAD_INDEX_CASES))
def test_cuda_source_refuses_bad_indices_under_asan(drivers, case):
    check_bad_indices(host_backend(drivers, "asan", workers=2, chunk=3), case)


@pytest.mark.parametrize("variant", ["asan", "tsan"])
def test_sanitizers_find_nothing(drivers, seed, variant):
    color, rast, pos, tri = soup_scene(torch.float32, batch=1, H=13, W=17)
    grad_out = torch.randn(color.shape)
    expected = backend_pass(CPU, color, rast, pos, tri, grad_out)
    actual = backend_pass(host_backend(drivers, variant, workers=4, chunk=1), color, rast, pos, tri, grad_out)
    assert torch.equal(actual[0], expected[0])


# ---- Triton: the interpreter on CPU tensors, and the compiled path ahead of time -------------------

def require_triton():
    try:
        import triton  # noqa: F401
    except ImportError:
        pytest.skip("triton is not installed: pip install -e '.[test]'")


@pytest.mark.parametrize("soup", sorted(SOUPS))
@pytest.mark.parametrize("dtype", DTYPES)
def test_triton_matches_cpu(seed, dtype, soup):
    """Interpreted (milliseconds per program op, so a small case): forward and colour gradient
    bit-equal to the CPU kernels, the vertex gradient within the fixed-point sums' rounding."""
    require_triton()
    color, rast, pos, tri = soup_scene(dtype, batch=2, H=13, W=17, clipped=SOUPS[soup])
    grad_out = torch.randn(color.shape, dtype=torch.float64)
    expected = run("cpu", color, rast, pos, tri, grad_out)
    assert int((expected[0] != color).any(-1).sum()) > MIN_BLENDED[soup] // 2, "too few pixels blended"
    actual = run("triton", color, rast, pos, tri, grad_out)
    assert torch.equal(actual[0], expected[0]), "forward is not bit-equal"
    assert torch.equal(actual[1], expected[1]), "the colour gradient is not bit-equal"
    scale = float(expected[2].abs().max())
    assert scale > 0
    err = float((actual[2].double() - expected[2].double()).abs().max())
    assert err <= HOST_GRAD_TOL[dtype] * scale, err / scale


def write_picture(path: Path) -> None:
    """target | start | fitted without antialias | fitted with it, as a PNG."""
    from PIL import Image
    target, _ = silhouette(torch.tensor(TARGET, dtype=torch.float64), True)
    start, _ = silhouette(torch.tensor(START, dtype=torch.float64), True)
    panels = [target, start] + [silhouette(fit_silhouette(aa)[0], True)[0] for aa in (False, True)]
    row = torch.cat([torch.nn.functional.pad(p[0, ..., 0], (2, 2, 2, 2), value=0.5) for p in panels], 1)
    pixels = (row.flip(0).clamp(0, 1) * 255).round().byte().numpy()  # row 0 is clip y = -1: flip for display
    Image.fromarray(pixels).resize((pixels.shape[1] * 4, pixels.shape[0] * 4), Image.NEAREST).save(path)


if __name__ == "__main__":
    write_picture(Path(__file__).resolve().parents[1] / "docs" / "images" / "antialias_fit.png")
