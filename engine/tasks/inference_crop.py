"""The 224 x 224 window a trained model sees of a photo, and the way back to the photo.

A window is (top, left, side) in source pixels (whole pixels, so the mapping is exact), the
same triple `nl3dmm.data.crop` uses for the training crops. Three ways to choose one:

* `window_from_landmarks`: the training rule (1.68 x the 68 landmarks' box, centred on it), so
  faces appear at the scale the model was trained on;
* `window_from_box`: a face box (x0, y0, x1, y1) read as the box of the face's landmarks (brow
  to chin, ear to ear) and given the same rule; a loose detector box makes the face smaller;
* `window_centre_square`: the largest centred square, for photos that are already face crops.

`to_source_points` and `to_source_m` invert the crop + resize exactly: points scale by
side / 224 and shift by (left, top); m goes through `resize_m` and the inverse `crop_m`.
"""
from __future__ import annotations

import numpy as np
from PIL import Image

from ..face.camera import crop_m, resize_m
from ..data.crop import CROP_SIZE, FACE_BOX_SCALE, crop_window

Window = tuple[int, int, int]  # (top, left, side) in source pixels


def window_from_landmarks(landmarks: np.ndarray) -> Window:
    """The training crop's window of 68 (or any number of) corner-frame landmarks (N, 2)."""
    points = np.asarray(landmarks, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] < 2 or len(points) < 2 or not np.isfinite(points[:, :2]).all():
        raise ValueError(f"landmarks must be (N >= 2, 2) finite points, got shape {points.shape}")
    return crop_window(points[:, :2])


def window_from_box(box: tuple[float, float, float, float]) -> Window:
    """The window of a face box (x0, y0, x1, y1), corner frame, treated like a landmark box."""
    x0, y0, x1, y1 = (float(v) for v in box)
    if not (x1 > x0 and y1 > y0):
        raise ValueError(f"box must be x0,y0,x1,y1 with x1 > x0 and y1 > y0, got {box}")
    return crop_window(np.array([[x0, y0], [x1, y1]]))


def require_box_overlaps(box: tuple[float, float, float, float], height: int, width: int) -> None:
    """ValueError when the face box (x0, y0, x1, y1) lies wholly outside a `width` x `height`
    photo: its crop would be all black, and the model would describe nothing."""
    x0, y0, x1, y1 = (float(v) for v in box)
    if x1 <= 0 or y1 <= 0 or x0 >= width or y0 >= height:
        raise ValueError(f"box {x0:g},{y0:g},{x1:g},{y1:g} lies wholly outside the {width} x {height} px image")


def window_centre_square(height: int, width: int) -> Window:
    side = min(height, width)
    return (height - side) // 2, (width - side) // 2, side


def crop_to_window(image: np.ndarray, window: Window, size: int = CROP_SIZE) -> np.ndarray:
    """(size, size, 3) uint8 of `image` (H, W, 3) uint8 inside `window`, black outside the photo.
    The same PIL calls as the training crops (corner-to-corner bilinear resize), so the model
    sees the same kind of pixels."""
    top, left, side = window
    crop = Image.fromarray(image).crop((left, top, left + side, top + side))
    return np.ascontiguousarray(np.asarray(crop.resize((size, size), Image.BILINEAR)))


def to_source_points(points: np.ndarray, window: Window, size: int = CROP_SIZE) -> np.ndarray:
    """(..., 2) corner-frame points of the crop -> the same points in the source photo."""
    top, left, side = window
    return np.asarray(points, dtype=np.float64) * (side / size) + np.array([left, top], dtype=np.float64)


def to_source_m(m: np.ndarray, window: Window, source_height: int, size: int = CROP_SIZE) -> np.ndarray:
    """(..., 8) camera of the crop -> camera of the source photo (height `source_height`)."""
    top, left, side = window
    unresized = resize_m(np.asarray(m, dtype=np.float64), (size, size), (side, side))
    # crop_m(m, top, left, H, side) shifts u by -left and v by top - (H - side); this undoes it
    return crop_m(unresized, -top, -left, side, source_height)


__all__ = ["Window", "FACE_BOX_SCALE", "window_from_landmarks", "window_from_box", "require_box_overlaps",
           "window_centre_square",
           "crop_to_window", "to_source_points", "to_source_m"]
