"""The training crop of a labelled face: a square around its 68 landmarks, resized to 224 x 224,
with the camera m and the landmarks carried along exactly; and its horizontal flip.

The rule. Centre: the centre of the landmarks' bounding box. Side (in source pixels):
`FACE_BOX_SCALE * max(box width, box height)`, rounded to whole pixels, so the crop is a whole-
pixel window and m's correction is exact. Parts of the window outside the photo are black.

Why 1.68. The authors crop 300W-LP to 256 x 256 and train on random 224 x 224 windows of it
(offsets 0..32, m's translation corrected; their `main` training loop). Their m statistics
(`mean_m.npy`) put the mean face at scale 9.24e-4 in that 256 frame. On the 17 real samples
(shared/data), `Pose_Para`'s scale against the landmark box gives a 256 window of
1.92 (median; 1.78-2.20) box sizes at that scale; the central 224 window of it is
1.92 * 224 / 256 = 1.68 box sizes. So our crops show faces at the authors' mean scale, and
`jitter` offsets of up to +-16 px reproduce their random offsets around the centre.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from ..face.camera import crop_m, flip_landmarks, flip_m, resize_m

CROP_SIZE = 224
FACE_BOX_SCALE = 1.68


@dataclass(frozen=True)
class FaceCrop:
    image: np.ndarray       # (S, S, 3) uint8
    m: np.ndarray           # (8,) float64, camera of the crop
    landmarks: np.ndarray   # (68, 2) float64, corner frame of the crop
    box: tuple[int, int, int]  # (top, left, side) of the window in the source photo, pixels
    flipped: bool = False


def crop_window(landmarks: np.ndarray, scale: float = FACE_BOX_SCALE,
                offset: tuple[float, float] = (0.0, 0.0), size: int = CROP_SIZE) -> tuple[int, int, int]:
    """(top, left, side) of the crop window in source pixels. `offset` = (dy, dx) shifts the
    window by that many *output* pixels (jitter), before rounding to whole source pixels."""
    points = np.asarray(landmarks, dtype=np.float64)
    lo, hi = points.min(0), points.max(0)
    side = max(int(round(scale * float((hi - lo).max()))), 1)
    centre = (lo + hi) / 2
    k = side / size  # source pixels per output pixel
    left = int(round(centre[0] - side / 2 + offset[1] * k))
    top = int(round(centre[1] - side / 2 + offset[0] * k))
    return top, left, side


def crop_face(image: np.ndarray, m: np.ndarray, landmarks: np.ndarray, scale: float = FACE_BOX_SCALE,
              offset: tuple[float, float] = (0.0, 0.0), size: int = CROP_SIZE) -> FaceCrop:
    """The `size` x `size` crop of `image` (H, W, 3) uint8 around `landmarks` (68, 2, corner frame)
    with the camera `m` (8,) of the photo corrected to it (crop_m then resize_m)."""
    height = image.shape[0]
    top, left, side = crop_window(landmarks, scale, offset, size)
    # PIL's crop pads outside the photo with zeros; its resize maps pixel corners to corners
    # (x' = x * size / side), the same frame camera.resize_m assumes. BILINEAR antialiases
    # when shrinking.
    window = Image.fromarray(image).crop((left, top, left + side, top + side))
    out = np.asarray(window.resize((size, size), Image.BILINEAR))
    k = size / side
    cropped_m = resize_m(crop_m(np.asarray(m, dtype=np.float64), top, left, height, side), (side, side), (size, size))
    points = (np.asarray(landmarks, dtype=np.float64) - [left, top]) * k
    return FaceCrop(np.ascontiguousarray(out), cropped_m, points, (top, left, side))


def flip_face(crop: FaceCrop) -> FaceCrop:
    """The horizontal mirror of a crop: image columns reversed, m through `flip_m`, landmarks
    mirrored and re-ordered to keep their iBUG meaning. m then describes the *mirrored* face,
    which for the mean shape (left-right symmetric) is the same shape."""
    width = crop.image.shape[1]
    return FaceCrop(np.ascontiguousarray(crop.image[:, ::-1]), flip_m(crop.m, width),
                    flip_landmarks(crop.landmarks, width), crop.box, not crop.flipped)
