"""Face profiling of one labelled crop: new views of its face at another yaw, pitch and roll
(and another crop window), rendered with the crop's own pseudo texture over its own background,
with labels exact by construction. `profile.py` turns a whole store into views with this.

This is 3DDFA's "face profiling" (the way 300W-LP was made from 300-W) with our renderer:

1. Camera. The crop's m is a scaled rotation s R plus a translation (camera.py). A view keeps
   s, replaces R by `pose_rotation(pitch, yaw, roll)` of the view, and turns the face about its
   centre (the mean of its 68 landmark vertices), which stays where it was in the crop.
2. Window. The view is then cropped like the source was: the window follows the projected
   landmark vertices' box (its centre moves with the box centre, its side with the box's larger
   side), times a scale jitter, shifted by a jitter in output pixels. A view with the source's
   own angles and no jitter has exactly the source's window and m.
3. Face. The mesh (the paper mesh's mean shape: the geometry the store's pseudo textures were
   unwrapped with) is rendered with the crop's pseudo texture through m of the view
   (rasterize -> interpolate -> sample_texture, back faces culled).
4. Background: the crop warped by a grid mesh. The crop is padded by half its size on every
   side by reflection (a view's window may reach past the crop) and a lattice of 7 px cells
   covers it; each lattice point that the face covers in the crop is attached to the surface
   point it shows and moves with it in 3-D (so the old face lands under the new face); every
   other point moves by the face's motion interpolated from the attached points (inverse
   distance^4), faded to 0 at the padded border, so the border stays put and hair, ears and
   neck follow the head. The lattice, its triangles textured by the padded crop, is drawn with
   the same rasterizer (nearest wins where it folds) and the face is drawn over it.
5. Labels. m of the view; the 68 landmarks projected from the landmark vertices through it;
   their visibility (the vertex is the surface seen at its pixel); Pose_Para of the view in its
   own frame (`pose_para_to_m(pose_para) == m`: the view is its own photo); the texture target.

Regions the photo never showed. The pseudo texture is known only where the crop showed the
face (`texture_mask`), squarely enough (texels seen more obliquely than GRAZING_DEGREES are
smeared and, with the mean shape standing in for the face, often background). To draw the view, an unknown texel takes the colour of its mirror texel
(the authors' UV map is left-right symmetric about u = 0.5: mirror vertex pairs sit within
1.6 texels in 99 % of cases) when that was seen, else of the nearest seen texel. Those texels
are *not* in the view's `texture_mask` (so the texture loss never trains on invented colours)
unless `mirror=True`, which counts mirrored texels as known. The view's mask is further limited
to texels visible in the view, as a preprocessed crop's is. `filled` reports, per view, the share
of the face's pixels drawn from never-seen texels.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy import ndimage

from ..face.camera import (crop_m, image_to_clip, m_depth, pose_rotation, project_m, project_m_with_depth,
                           resize_m)
from ..face.facemodel import FaceModel, load_paper_mesh, vertex_normals
from ..face.rendering import render_face
from ..face.unwrap import unwrap_texture
from ..render import interpolate, rasterize, sample_texture
from .pseudo_texture import DEPTH_TOLERANCE

BACKGROUND_GRID = 32       # lattice cells per crop side of the background warp (7 px cells at 224)
WARP_POWER = 4             # inverse-distance power of the background's motion interpolation
KNOWN = 0.999              # a pixel uses only known texels when the bilinear mask reaches this
SAME_SIDE_DEGREES = 10.0   # sources nearer frontal than this are turned to either side
GRAZING_DEGREES = 75.0     # texels seen more obliquely than this are smeared (and, with the mean shape
                           # standing in for the face, often background): treated as never seen


@dataclass(frozen=True)
class ViewPose:
    """A view: absolute angles (radians, Pose_Para's pitch/yaw/roll) and the crop jitter."""
    pitch: float
    yaw: float
    roll: float
    scale: float = 1.0                         # window side / the crop rule's side (> 1 zooms out)
    shift: tuple[float, float] = (0.0, 0.0)    # (dy, dx) of the window centre, output pixels


def camera_pose(m: np.ndarray) -> tuple[float, np.ndarray]:
    """(s, R) of a camera m whose 3 x 2 part is s times two rows of a rotation R (3 x 3, the
    nearest rotation when m is a little off, e.g. after float32 storage)."""
    M = np.asarray(m, dtype=np.float64).reshape(4, 2)
    r1, r2 = M[:3, 0], M[:3, 1]
    n1, n2 = np.linalg.norm(r1), np.linalg.norm(r2)
    if not (np.isfinite(M).all() and n1 > 0 and n2 > 0):
        raise ValueError(f"m is not a finite camera with a non-zero scale: {np.ravel(m)}")
    rows = np.stack([r1 / n1, r2 / n2, np.cross(r1 / n1, r2 / n2)])
    u, _, vt = np.linalg.svd(rows)
    return (n1 + n2) / 2, u @ vt


def rotation_angles(rotation: np.ndarray) -> tuple[float, float, float]:
    """(pitch, yaw, roll) with `pose_rotation(pitch, yaw, roll) == rotation`: its first row is
    (cos yaw cos roll, cos yaw sin roll, -sin yaw), its last column (-sin yaw, sin pitch cos yaw,
    cos pitch cos yaw)."""
    R = np.asarray(rotation, dtype=np.float64)
    yaw = float(np.arcsin(np.clip(-R[0, 2], -1.0, 1.0)))
    return float(np.arctan2(R[1, 2], R[2, 2])), yaw, float(np.arctan2(R[0, 1], R[0, 0]))


def source_pose(m: np.ndarray) -> ViewPose:
    """The view that reproduces the crop of camera m: its own angles, no jitter."""
    return ViewPose(*rotation_angles(camera_pose(m)[1]))


def sample_poses(m: np.ndarray, count: int, rng: np.random.Generator, max_yaw: float, max_pitch: float,
                 max_roll: float, scale_jitter: float, shift_jitter: float) -> list[ViewPose]:
    """`count` views of the crop of camera m. |yaw| is stratified over [0, max_yaw] degrees (view
    i in the i-th of `count` equal strata, so few views still span the range), on the side the
    photo shows (as 3DDFA turned 300-W faces further the way they already looked: the far side
    stays mostly hidden); a face within SAME_SIDE_DEGREES of frontal picks a side per view.
    Pitch and roll are the source's plus uniform changes of up to max_pitch / max_roll degrees;
    the window side is scaled by U(1 - scale_jitter, 1 + scale_jitter) and shifted by up to
    shift_jitter output pixels each way."""
    pitch, yaw0, roll = rotation_angles(camera_pose(m)[1])
    poses = []
    for i in range(count):
        side = np.sign(yaw0) if abs(yaw0) > np.deg2rad(SAME_SIDE_DEGREES) else rng.choice([-1.0, 1.0])
        yaw = side * np.deg2rad(max_yaw * (i + rng.uniform()) / count)
        d_pitch, d_roll = np.deg2rad(rng.uniform(-1, 1, 2) * [max_pitch, max_roll])
        scale = rng.uniform(1 - scale_jitter, 1 + scale_jitter)
        shift = tuple(float(v) for v in rng.uniform(-shift_jitter, shift_jitter, 2))
        poses.append(ViewPose(float(pitch + d_pitch), float(yaw), float(roll + d_roll), float(scale), shift))
    return poses


def mirror_texels(texture: np.ndarray, known: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Texels unknown but with a known mirror texel (column flip of the UV map) take its colour.
    Returns the texture and the mask of texels now known (seen or mirrored)."""
    take = ~known & known[:, ::-1]
    out = texture.copy()
    out[take] = texture[:, ::-1][take]
    return out, known | take


def fill_texture(texture: np.ndarray, known: np.ndarray) -> np.ndarray:
    """The texture with every unknown texel coloured, for drawing only: mirror first, then the
    nearest known texel."""
    if not known.any():
        raise ValueError("the sample's texture_mask is empty: nothing of the face was seen")
    mirrored, have = mirror_texels(texture, known)
    rows, cols = ndimage.distance_transform_edt(~have, return_distances=False, return_indices=True)
    return mirrored[rows, cols]


def _landmark_box(points: np.ndarray) -> tuple[np.ndarray, float]:
    """Centre and larger side of the box of (68, 2) points: what the crop rule (crop.py) uses."""
    lo, hi = points.min(0), points.max(0)
    return (lo + hi) / 2, float((hi - lo).max())


@dataclass
class ProfiledViews:
    """Views of one crop, first axis = view. Arrays as the store keeps them except m (float64)."""
    image: np.ndarray             # (n, S, S, 3) uint8
    m: np.ndarray                 # (n, 8) float64
    landmarks: np.ndarray         # (n, 68, 2) float64, corner frame
    landmark_visible: np.ndarray  # (n, 68) bool
    pose_para: np.ndarray         # (n, 7) float64, the view's own Pose_Para
    texture: np.ndarray           # (n, Ht, Wt, 3) uint8, 0 outside texture_mask
    texture_mask: np.ndarray      # (n, Ht, Wt) bool
    filled: np.ndarray            # (n,) share of face pixels drawn from never-seen texels
    windows: np.ndarray           # (n, 3) (top, left, side) of each view's window in the crop's frame


class FaceProfiler:
    """Callable: one crop (its image, m and pseudo texture) and a list of `ViewPose` ->
    `ProfiledViews`. See the module docstring for the scheme."""

    def __init__(self, face_model: FaceModel | None = None, mirror: bool = False, grid: int = BACKGROUND_GRID,
                 depth_tolerance: float = DEPTH_TOLERANCE, backend: str | None = None):
        model = face_model if face_model is not None else load_paper_mesh()
        self.vertices = model.mean_shape.astype(np.float64)
        self.landmark_ids = model.keypoints
        self.centre = self.vertices[self.landmark_ids].mean(0)
        self.triangles = torch.from_numpy(model.triangles)
        self.uv = torch.from_numpy(model.uv.astype(np.float32))
        self.mirror, self.grid = mirror, grid
        self.normals = -vertex_normals(model.mean_shape, model.triangles)   # outward (FaceModel winds inward)
        uv_clip = torch.cat([self.uv * 2 - 1, torch.zeros_like(self.uv[:, :1]), torch.ones_like(self.uv[:, :1])], -1)
        self.uv_clip = uv_clip[None].contiguous()
        self._uv_rasters: dict[tuple[int, int], torch.Tensor] = {}
        self.depth_tolerance, self.backend = depth_tolerance, backend

    # --- cameras -------------------------------------------------------------------------
    def view_camera(self, m: np.ndarray, pose: ViewPose, size: int) -> tuple[np.ndarray, np.ndarray, tuple]:
        """(m of the view, m of the turned face in the crop's frame, window (top, left, side)
        of the view in the crop's frame)."""
        m = np.asarray(m, dtype=np.float64)
        s, _ = camera_pose(m)
        rotation = pose_rotation(pose.pitch, pose.yaw, pose.roll)
        M = m.reshape(4, 2)
        turned = np.empty((4, 2))
        turned[:3] = s * rotation[:2].T
        turned[3] = self.centre @ M[:3] + M[3] - self.centre @ turned[:3]  # the centre stays put
        m_turned = turned.reshape(-1)
        points = self.vertices[self.landmark_ids]
        (centre_before, extent_before), (centre_after, extent_after) = (
            _landmark_box(project_m(points, camera, size)) for camera in (m, m_turned))
        side = size * extent_after / extent_before * pose.scale
        middle = size / 2 + centre_after - centre_before + np.array(pose.shift[::-1]) * side / size
        left, top = middle - side / 2
        m_view = resize_m(crop_m(m_turned, top, left, size, side), (side, side), (size, size))
        return m_view, m_turned, (float(top), float(left), float(side))

    @staticmethod
    def view_pose_para(m_view: np.ndarray, pose: ViewPose) -> np.ndarray:
        """Pose_Para of a view in its own frame: its angles, m's translation as (tx, ty),
        tz = 0 (weak perspective has no depth offset) and m's scale."""
        s, _ = camera_pose(m_view)
        return np.array([pose.pitch, pose.yaw, pose.roll, m_view[6], m_view[7], 0.0, s])

    def seen_squarely(self, m: np.ndarray, texture_size: tuple[int, int]) -> np.ndarray:
        """(Ht, Wt) bool: texels whose surface faces camera m within GRAZING_DEGREES."""
        if texture_size not in self._uv_rasters:
            self._uv_rasters[texture_size] = rasterize(self.uv_clip, self.triangles, texture_size, backend=self.backend)
        axis = camera_pose(m)[1][2]                     # towards the camera (m_depth's axis)
        facing = torch.from_numpy((self.normals @ axis)[:, None].astype(np.float32))
        cosine = interpolate(facing, self._uv_rasters[texture_size], self.triangles, backend=self.backend)[0, ..., 0]
        on_mesh = self._uv_rasters[texture_size][0, ..., 3] > 0
        return (on_mesh & (cosine >= np.cos(np.deg2rad(GRAZING_DEGREES)))).numpy()

    def _landmark_visible(self, clip: torch.Tensor, rast: torch.Tensor) -> torch.Tensor:
        """(B, 68) bool: the landmark vertex is the surface its pixel shows (unwrap's depth test),
        from the mesh's (B, V, 4) clip positions and its (B, S, S, 4) raster."""
        size = rast.shape[1]
        points = clip[:, torch.from_numpy(self.landmark_ids)]
        col = ((points[..., 0] + 1) / 2 * size).floor().long()
        row = ((points[..., 1] + 1) / 2 * size).floor().long()
        inside = (col >= 0) & (col < size) & (row >= 0) & (row < size)
        surface = rast[torch.arange(len(rast))[:, None], row.clamp(0, size - 1), col.clamp(0, size - 1)]
        return inside & (surface[..., 3] > 0) & (points[..., 2] <= surface[..., 2] + self.depth_tolerance)

    def landmark_visibility(self, m: np.ndarray, size: int) -> np.ndarray:
        """(68,) bool: which landmark vertices camera m sees in a size x size image."""
        vertices = torch.from_numpy(self.vertices.astype(np.float32))[None]
        clip = self._clip(vertices, torch.from_numpy(np.asarray(m, dtype=np.float32).reshape(1, 8)), size)
        rast = rasterize(clip, self.triangles, (size, size), cull_backfaces=True, backend=self.backend)
        return self._landmark_visible(clip, rast)[0].numpy()

    # --- drawing -------------------------------------------------------------------------
    def _clip(self, vertices: torch.Tensor, m: torch.Tensor, size: int) -> torch.Tensor:
        return image_to_clip(project_m_with_depth(vertices, m, size), size, size).float()

    def background(self, photo: torch.Tensor, m: np.ndarray, turned: list[np.ndarray], windows: list[tuple],
                   source_rast: torch.Tensor) -> torch.Tensor:
        """(n, S, S, 3) float: the crop `photo` (S, S, 3 float) warped for each view (module
        docstring, step 4). `source_rast` is the face's raster in the crop (S, S, 4). The crop is
        first padded by S/2 on every side by reflection, so a view whose window reaches past the
        crop shows mirrored surroundings rather than black."""
        size, pad = photo.shape[0], photo.shape[0] // 2
        padded = torch.from_numpy(np.pad(photo.numpy(), ((pad, pad), (pad, pad), (0, 0)), mode="reflect"))
        cells = 2 * self.grid
        ticks = np.linspace(-pad, size + pad, cells + 1)
        lattice = np.stack(np.meshgrid(ticks, ticks, indexing="xy"), -1).reshape(-1, 2)   # (P, 2) x, y
        pixel = np.floor(lattice).astype(np.int64)
        inside = ((pixel >= 0) & (pixel < size)).all(1)
        pixel = np.clip(pixel, 0, size - 1)
        rast = source_rast[pixel[:, 1], pixel[:, 0]].double().numpy()
        on_face = inside & (rast[:, 3] > 0)
        corners = self.triangles.numpy()[rast[on_face, 3].astype(np.int64) - 1]            # (Pf, 3)
        b0, b1 = rast[on_face, :1], rast[on_face, 1:2]
        v = self.vertices[corners]
        surface = b0 * v[:, 0] + b1 * v[:, 1] + (1 - b0 - b1) * v[:, 2]                    # (Pf, 3) model points
        border = np.minimum(lattice + pad, size + pad - lattice).min(1)
        if on_face.any():
            to_face = np.linalg.norm(lattice[:, None] - lattice[on_face][None], axis=-1)   # (P, Pf)
            weights = 1.0 / np.maximum(to_face, 1e-6) ** WARP_POWER
            weights /= weights.sum(1, keepdims=True)
            fade = border / np.maximum(border + to_face.min(1), 1e-12)
        index = np.arange(cells ** 2).reshape(cells, cells)
        a = (index // cells) * (cells + 1) + index % cells
        quads = np.stack([a, a + 1, a + cells + 2, a + cells + 1], -1).reshape(-1, 4)
        triangles = torch.from_numpy(np.concatenate([quads[:, [0, 1, 2]], quads[:, [0, 2, 3]]]).astype(np.int32))
        points = []
        for m_turned, (top, left, side) in zip(turned, windows):
            moved, depth = lattice.copy(), np.zeros(len(lattice))
            if on_face.any():
                motion = project_m(surface, m_turned, size) - project_m(surface, m, size)
                moved += fade[:, None] * (weights @ motion)
                moved[on_face] = lattice[on_face] + motion
                depth_face = m_depth(surface, m_turned)
                depth[:] = depth_face.min() - (np.ptp(depth_face) + 1.0)   # behind every face point
                depth[on_face] = depth_face
            points.append(np.concatenate([(moved - [left, top]) * size / side, depth[:, None]], 1))
        clip = image_to_clip(torch.from_numpy(np.stack(points)), size, size).float()
        warp_rast = rasterize(clip, triangles, (size, size), backend=self.backend)
        uv = torch.from_numpy(((lattice + pad) / (size + 2 * pad)).astype(np.float32))
        where = interpolate(uv, warp_rast, triangles, backend=self.backend)
        image = sample_texture(padded[None].expand(len(turned), -1, -1, -1).contiguous(), where, backend=self.backend)
        return image * (warp_rast[..., 3:] > 0)

    def __call__(self, image: np.ndarray, m: np.ndarray, texture: np.ndarray, texture_mask: np.ndarray,
                 poses: list[ViewPose]) -> ProfiledViews:
        image, texture, texture_mask = np.asarray(image), np.asarray(texture), np.asarray(texture_mask)
        if image.ndim != 3 or image.shape[0] != image.shape[1] or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"image must be a square (S, S, 3) uint8 crop, got {image.shape} {image.dtype}")
        if texture.shape != texture_mask.shape + (3,) or texture.dtype != np.uint8 or texture_mask.dtype != bool:
            raise ValueError(f"need a (Ht, Wt, 3) uint8 texture and a (Ht, Wt) bool texture_mask, got "
                             f"{texture.shape} {texture.dtype} and {texture_mask.shape} {texture_mask.dtype}")
        if not poses:
            raise ValueError("no views asked for")
        size, n = image.shape[0], len(poses)
        m = np.asarray(m, dtype=np.float64).reshape(8)
        cameras = [self.view_camera(m, pose, size) for pose in poses]
        m_views = np.stack([c[0] for c in cameras])

        vertices = torch.from_numpy(self.vertices.astype(np.float32))
        photo = torch.from_numpy(image).float().div_(255.0)
        source_rast = rasterize(self._clip(vertices[None], torch.from_numpy(m.astype(np.float32))[None], size),
                                self.triangles, (size, size), cull_backfaces=True, backend=self.backend)[0]
        background = self.background(photo, m, [c[1] for c in cameras], [c[2] for c in cameras], source_rast)

        seen = texture_mask & self.seen_squarely(m, texture_mask.shape)
        drawn = torch.from_numpy(fill_texture(texture, seen)).float().div_(255.0)
        m_torch = torch.from_numpy(m_views.astype(np.float32))
        batch = vertices[None].expand(n, -1, -1)
        face = render_face(batch, m_torch, drawn[None].expand(n, -1, -1, -1).contiguous(), self.triangles,
                           self.uv, size, background=background, backend=self.backend)
        views = face["image"].mul(255.0).round_().clamp_(0, 255).to(torch.uint8)

        landmark_visible = self._landmark_visible(self._clip(batch, m_torch, size), face["rast"])

        # Texture target: known texels (seen, or mirrored with `mirror`) that the view shows.
        target, known = mirror_texels(texture, seen) if self.mirror else (texture, seen)
        points = project_m_with_depth(batch, m_torch, size)
        _, in_view = unwrap_texture(face["image"], points, self.uv, self.triangles, tuple(texture.shape[:2]),
                                    self.depth_tolerance, backend=self.backend)
        mask = in_view.numpy() & known[None]
        targets = np.where(mask[..., None], target[None], 0).astype(np.uint8)

        pixel_uv = interpolate(self.uv, face["rast"], self.triangles, backend=self.backend)
        seen_map = torch.from_numpy(seen.astype(np.float32))[None, ..., None].expand(n, -1, -1, -1).contiguous()
        seen_at_pixel = sample_texture(seen_map, pixel_uv, backend=self.backend)[..., 0] >= KNOWN
        on_face = face["mask"] > 0
        filled = ((on_face & ~seen_at_pixel).sum((1, 2)) / on_face.sum((1, 2)).clamp(min=1)).numpy()

        landmarks = project_m(self.vertices[self.landmark_ids][None], m_views, size)
        pose_para = np.stack([self.view_pose_para(mv, pose) for mv, pose in zip(m_views, poses)])
        return ProfiledViews(views.numpy(), m_views, landmarks, landmark_visible.numpy(), pose_para, targets, mask,
                             filled.astype(np.float64), np.array([c[2] for c in cameras]))

