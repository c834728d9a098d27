"""One labelled face sample of 300W-LP or AFLW2000-3D, as users download them: an image
`NAME.jpg` beside a MATLAB label `NAME.mat` written by the 3DDFA fitting (Zhu et al. 2016).

Label keys read (shapes as stored; row/column vectors are flattened):
* `Pose_Para` (1, 7): pitch, yaw, roll (radians), tx, ty, tz, scale -> the camera m;
* `Shape_Para` (199, 1) BFM identity and `Exp_Para` (29, 1) expression coefficients;
* landmarks: `pt3d_68` (3, 68) in AFLW2000-3D (x, y in pixels + depth) or, in 300W-LP,
  `pt2d` (2, 68); AFLW2000-3D's own `pt2d` is the 21-point AFLW markup (-1 = missing) and is
  kept in `extras`. Landmark pixels are MATLAB 1-based; the sample holds them in the package's
  corner frame (see camera.py).
* `Tex_Para`, `Color_Para`, `Illum_Para`, `roi` and any other arrays go to `extras` unchecked.

Every failure names the file, and for labels the key: a file that is not a readable image or
MAT file, a missing key, a key of the wrong size, NaN/Inf values.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.io as sio
from PIL import Image

from ..face.camera import matlab_to_image, pose_para_to_m

REQUIRED = {"Pose_Para": 7, "Shape_Para": 199, "Exp_Para": 29}


def split_names(text: str | None) -> list[str]:
    """`a,b, c` -> ["a", "b", "c"]: photo names given as one command-line word (exclude=, --only)."""
    return [part.strip() for part in (text or "").split(",") if part.strip()]


class LabelError(ValueError):
    """A label file that cannot be used; the message names the file and the key."""


@dataclass(frozen=True, eq=False)
class LabelledSample:
    name: str
    image_path: Path
    label_path: Path
    image: np.ndarray                     # (H, W, 3) uint8 RGB
    pose_para: np.ndarray                 # (7,) float64
    shape_para: np.ndarray                # (199,) float64
    exp_para: np.ndarray                  # (29,) float64
    landmarks: np.ndarray | None          # (68, 2) float64, corner frame, iBUG order
    landmark_depth: np.ndarray | None     # (68,) float64 (AFLW2000-3D `pt3d_68` z) or None
    dataset: str                          # "AFLW2000-3D" (has pt3d_68) or "300W-LP" (68-point pt2d)
    extras: dict = field(default_factory=dict)

    @property
    def height(self) -> int:
        return self.image.shape[0]

    @property
    def width(self) -> int:
        return self.image.shape[1]

    @property
    def m(self) -> np.ndarray:
        """(8,) camera m of `pose_para` (image-size independent; see camera.py)."""
        return pose_para_to_m(self.pose_para)


def read_image(path: str | Path) -> np.ndarray:
    """(H, W, 3) uint8 RGB of an image file; ValueError naming the file if it is not one."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image file missing: {path}")
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))
    except (OSError, ValueError, SyntaxError) as exc:  # PIL's UnidentifiedImageError is an OSError
        raise ValueError(f"cannot read image {path}: {exc}") from exc


def _vector(label: dict, key: str, path: Path, size: int | None) -> np.ndarray:
    if key not in label:
        present = sorted(k for k in label if not k.startswith("__"))
        raise LabelError(f"{path}: missing key '{key}' (keys present: {present})")
    try:
        value = np.asarray(label[key], dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise LabelError(f"{path}: key '{key}' is not numeric ({exc})") from exc
    if size is not None:
        if value.size != size or (value.ndim == 2 and min(value.shape) != 1) or value.ndim > 2:
            raise LabelError(f"{path}: key '{key}' has shape {value.shape}, expected {size} values")
        value = value.reshape(-1)
    if not np.isfinite(value).all():
        raise LabelError(f"{path}: key '{key}' contains NaN or Inf")
    return value


def read_label(path: str | Path) -> dict[str, np.ndarray]:
    """The checked arrays of a 300W-LP / AFLW2000-3D `.mat` label (see the module docstring):
    `Pose_Para`, `Shape_Para`, `Exp_Para` flattened, `pt3d_68` / `pt2d` as stored, and the
    rest as stored."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"label file missing: {path}")
    try:
        raw = sio.loadmat(path)
    except Exception as exc:  # scipy raises MatReadError, OSError, IndexError, ... on corrupt files
        raise LabelError(f"cannot read label file {path}: {type(exc).__name__}: {exc}") from exc
    label = {key: _vector(raw, key, path, size) for key, size in REQUIRED.items()}
    for key, value in raw.items():
        if not key.startswith("__") and key not in label:
            label[key] = value
    if "pt3d_68" in label:
        points = _vector(raw, "pt3d_68", path, None)
        if points.shape != (3, 68):
            raise LabelError(f"{path}: key 'pt3d_68' has shape {points.shape}, expected (3, 68)")
        label["pt3d_68"] = points
    if "pt2d" in label:
        points = _vector(raw, "pt2d", path, None)
        if points.ndim != 2 or points.shape[0] != 2:
            raise LabelError(f"{path}: key 'pt2d' has shape {points.shape}, expected (2, N)")
        label["pt2d"] = points
    return label


def _stem(path: str | Path) -> Path:
    path = Path(path)
    return path.with_suffix("") if path.suffix.lower() in (".jpg", ".jpeg", ".png", ".mat") else path


def read_sample(path: str | Path, image_suffix: str = ".jpg") -> LabelledSample:
    """The sample at `path` (its image, its `.mat`, or the common stem without suffix)."""
    stem = _stem(path)
    image_path = Path(path) if Path(path).suffix.lower() in (".jpg", ".jpeg", ".png") else stem.with_suffix(image_suffix)
    label_path = stem.with_suffix(".mat")
    label = read_label(label_path)
    image = read_image(image_path)
    landmarks = depth = None
    if "pt3d_68" in label:
        dataset = "AFLW2000-3D"
        landmarks, depth = matlab_to_image(label["pt3d_68"][:2].T), label["pt3d_68"][2].copy()
    elif "pt2d" in label and label["pt2d"].shape == (2, 68):
        dataset = "300W-LP"
        landmarks = matlab_to_image(label["pt2d"].T)
    else:
        raise LabelError(f"{label_path}: no 68-point landmarks: needs 'pt3d_68' (3, 68) or 'pt2d' (2, 68)")
    extras = {k: v for k, v in label.items() if k not in REQUIRED and k != "pt3d_68"
              and not (k == "pt2d" and dataset == "300W-LP")}
    return LabelledSample(stem.name, image_path, label_path, image, label["Pose_Para"], label["Shape_Para"],
                          label["Exp_Para"], landmarks, depth, dataset, extras)


def find_samples(root: str | Path, image_suffix: str = ".jpg") -> list[Path]:
    """Sorted stems under `root` (recursively) that have both an image and a `.mat` label, as in
    the 300W-LP tree (`AFW/`, `HELEN_Flip/`, ...) or an AFLW2000-3D folder. The 300W-LP
    `landmarks/` folder (`*_pts.mat` without images) is skipped by construction."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"dataset folder missing: {root}")
    return sorted(p.with_suffix("") for p in root.rglob(f"*{image_suffix}") if p.with_suffix(".mat").is_file())
