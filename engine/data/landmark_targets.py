"""The 68 landmarks a training sample is supervised with, and which convention they follow.

Why this matters. 300W-LP's `pt2d` follows the *visible* face outline at the jaw (on the
far side of a turned face it slides onto the silhouette), while AFLW2000-3D's `pt3d_68`, which
we evaluate against, and the authors' landmark targets (the ground-truth landmark vertices
projected with the ground-truth m and shape) are 3-D-consistent: fixed points of the face,
hidden or not. On `IBUG_image_008_1_0` (yaw -44 degrees) the two differ by up to 49 px on the
jaw. Training on `pt2d` teaches the model the wrong jaw.

Conventions, in the order `auto` prefers them (the first one a sample has wins):

* `pts_3d`  300W-LP's `landmarks/<subset>/<name>_pts.mat` (the release's own 3-D-consistent
            landmarks; keys `pts_2d` and `pts_3d`, each (68, 2) x, y in 1-based image pixels, as
            read by public 300W-LP loaders; `pts_2d` there is the contour-snapped set);
* `pt3d_68` AFLW2000-3D's own 3-D landmarks (x, y);
* `dense`   the landmark vertices of the label's dense shape (Shape_Para, Exp_Para and a
            converted BFM basis) projected by the label's m: what the authors' code does;
* `mean`    the mean shape's landmark vertices projected by the label's m (pose and scale of
            the fit, no identity or expression: a few px off inside the face, right at the jaw);
* `pt2d`    300W-LP's `pt2d`, only when asked for by name (the old behaviour).

A flipped 300W-LP folder (`AFW_Flip/...`) has no `_pts.mat` of its own; its samples fall
through to `dense` / `mean` (preprocess's own `--flip` mirrors whatever convention was used).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.io as sio

from ..face.bfm import BFMBasis
from ..face.camera import matlab_to_image, project_m
from ..face.facemodel import FaceModel
from .samples import LabelError, LabelledSample, _vector

AUTO = "auto"
CONVENTIONS = ("pts_3d", "pt3d_68", "dense", "mean", "pt2d")
CHOICES = (AUTO, "pts_3d", "dense", "mean", "pt2d")
PTS_MAT_KEYS = ("pts_2d", "pts_3d")
DESCRIPTION = {
    "pts_3d": "300W-LP landmarks/<subset>/<name>_pts.mat `pts_3d` (3-D-consistent)",
    "pt3d_68": "AFLW2000-3D `pt3d_68` x, y (3-D-consistent)",
    "dense": "landmark vertices of the label's dense shape (Shape_Para, Exp_Para, basis) projected by its m "
             "(the authors' targets)",
    "mean": "mean-shape landmark vertices projected by the label's m (3-D-consistent jaw; no identity "
            "or expression: a few px off inside the face)",
    "pt2d": "300W-LP `pt2d` (follows the visible outline at the jaw; not what AFLW2000-3D measures)",
}


def read_pts_mat(path: str | Path) -> dict[str, np.ndarray]:
    """`pts_2d` and `pts_3d` of a 300W-LP `landmarks/.../<name>_pts.mat`, each (68, 2) float64
    in the package's corner frame (the file's 1-based MATLAB pixels minus 0.5). The stored layout
    is (68, 2); a (2, 68) array is accepted too. A missing key, another shape or NaN/Inf is a
    LabelError naming the file and the key."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"landmark file missing: {path}")
    try:
        raw = sio.loadmat(path)
    except Exception as exc:  # scipy raises several types on corrupt files
        raise LabelError(f"cannot read landmark file {path}: {type(exc).__name__}: {exc}") from exc
    out = {}
    for key in PTS_MAT_KEYS:
        value = _vector(raw, key, path, None)  # present, numeric, finite
        if value.shape == (2, 68):
            value = value.T
        if value.shape != (68, 2):
            raise LabelError(f"{path}: key '{key}' has shape {value.shape}, expected (68, 2)")
        out[key] = matlab_to_image(value)
    return out


def pts_mat_path(label_path: str | Path) -> Path | None:
    """The `landmarks/<subset>/<name>_pts.mat` of a 300W-LP label `.../<subset>/<name>.mat`, or
    None: looked up in the `landmarks/` folder beside `<subset>` (the release's layout)."""
    label_path = Path(label_path)
    candidate = label_path.parent.parent / "landmarks" / label_path.parent.name / f"{label_path.stem}_pts.mat"
    return candidate if candidate.is_file() else None


def landmark_vertices(shape_para: np.ndarray, exp_para: np.ndarray, basis: BFMBasis,
                      keypoints: np.ndarray) -> np.ndarray:
    """(68, 3) float64 landmark vertices of the dense shape of (Shape_Para, Exp_Para): only the
    basis rows of the keypoints are used (`bfm.dense_shape` at those vertices)."""
    rows = (3 * np.asarray(keypoints)[:, None] + np.arange(3)).reshape(-1)
    shape = np.asarray(shape_para, dtype=np.float64).reshape(-1)[:basis.num_shape]
    flat = basis.mean[rows].astype(np.float64) + basis.shape_basis[rows].astype(np.float64) @ shape
    if basis.exp_basis is not None:
        exp = np.asarray(exp_para, dtype=np.float64).reshape(-1)[:basis.num_exp]
        flat = flat + basis.exp_basis[rows].astype(np.float64) @ exp
    return flat.reshape(68, 3)


def landmark_target(sample: LabelledSample, mesh: FaceModel, choice: str = AUTO,
                    basis: BFMBasis | None = None) -> tuple[np.ndarray, str]:
    """(68, 2) corner-frame landmarks of `sample` in its photo, and the convention they follow
    (module docstring). `choice` names one convention or `auto` (the best the sample has);
    a named convention the sample lacks is a ValueError, so a run never mixes silently."""
    if choice not in CHOICES:
        raise ValueError(f"landmark targets must be one of {CHOICES}, got {choice!r}")
    if sample.dataset == "AFLW2000-3D":
        return np.asarray(sample.landmarks, dtype=np.float64), "pt3d_68"  # already 3-D-consistent
    if choice in (AUTO, "pts_3d"):
        path = pts_mat_path(sample.label_path)
        if path is not None:
            return read_pts_mat(path)["pts_3d"], "pts_3d"
        if choice == "pts_3d":
            raise ValueError(f"{sample.label_path}: no landmarks/<subset>/{sample.name}_pts.mat for pts_3d targets")
    if choice in (AUTO, "dense") and basis is not None:
        points = landmark_vertices(sample.shape_para, sample.exp_para, basis, mesh.keypoints)
        return project_m(points, sample.m, sample.height), "dense"
    if choice == "dense":
        raise ValueError("dense landmark targets need a converted BFM basis (basis=)")
    if choice in (AUTO, "mean"):
        points = mesh.mean_shape[mesh.keypoints].astype(np.float64)
        return project_m(points, sample.m, sample.height), "mean"
    return np.asarray(sample.landmarks, dtype=np.float64), "pt2d"
