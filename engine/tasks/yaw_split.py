"""The yaw of each AFLW2000-3D face for the [0, 30] / (30, 60] / (60, 90] bins of the NME table.

Two splits:
* `paper` (default): 3DDFA's `AFLW2000-3D-new.pose.npy`, the absolute yaws behind the
  1,306 / 462 / 232 split that the nonlinear 3DMM paper and every peer table (3DDFA, PRNet,
  3DDFA_V2, SynergyNet) report. The arrays hold no file names, so a face's row is found by
  matching its label's `pt3d_68` exactly against `AFLW2000-3D.pts68.npy` (the same float32
  numbers: any subset of the 2,000 images gets its paper yaw).
* `pose_para`: |yaw| of the label's own `Pose_Para` (1,312 / 383 / 305 on the full set): our
  earlier split, kept for comparison with old results.

Both arrays ship in nl3dmm/assets/aflw2000 (from cleardusk/3DDFA, MIT; see assets/README.md).
"""
from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

from ..data.samples import LabelledSample
from ..face.facemodel import ASSETS

SPLITS = ("paper", "pose_para")
DESCRIPTION = {
    "paper": "paper split: |yaw| of 3DDFA's AFLW2000-3D-new.pose.npy (1306/462/232 on the full set), each face's "
             "row found by exact equality of its pt3d_68 with AFLW2000-3D.pts68.npy",
    "pose_para": "|yaw| of each label's Pose_Para (1312/383/305 on the full set; not the paper's split)",
}
PTS68_FILE = ASSETS / "aflw2000" / "AFLW2000-3D.pts68.npy"
YAW_FILE = ASSETS / "aflw2000" / "AFLW2000-3D-new.pose.npy"


@lru_cache(maxsize=1)
def _paper_rows() -> tuple[dict[bytes, int], np.ndarray]:
    points, yaw = np.load(PTS68_FILE), np.load(YAW_FILE)
    if points.shape != (2000, 3, 68) or points.dtype != np.float32 or yaw.shape != (2000,):
        raise ValueError(f"unexpected arrays {points.shape} {points.dtype} in {PTS68_FILE} / {yaw.shape} in {YAW_FILE}")
    return {row.tobytes(): i for i, row in enumerate(points)}, yaw.astype(np.float64)


def label_pt3d_68(sample: LabelledSample) -> np.ndarray:
    """(3, 68) float32 `pt3d_68` exactly as the label stores it (undoing the corner-frame shift,
    which is exact in float64)."""
    if sample.dataset != "AFLW2000-3D" or sample.landmark_depth is None:
        raise ValueError(f"{sample.label_path}: no pt3d_68 in the label; not an AFLW2000-3D sample")
    return np.vstack([(sample.landmarks + 0.5).T, sample.landmark_depth[None]]).astype(np.float32)


def paper_row(sample: LabelledSample) -> int:
    """The sample's row in 3DDFA's AFLW2000-3D arrays; ValueError naming it when none matches."""
    rows, _ = _paper_rows()
    row = rows.get(label_pt3d_68(sample).tobytes())
    if row is None:
        raise ValueError(f"{sample.label_path}: its pt3d_68 matches no row of {PTS68_FILE.name}, so it has no "
                         "paper yaw; is it an AFLW2000-3D label? (--yaw-split pose_para bins by its Pose_Para)")
    return row


def absolute_yaw(sample: LabelledSample, split: str = "paper") -> float:
    """|yaw| in degrees of an AFLW2000-3D sample under `split` (module docstring)."""
    if split not in SPLITS:
        raise ValueError(f"yaw split must be one of {SPLITS}, got {split!r}")
    if split == "pose_para":
        return abs(math.degrees(float(sample.pose_para[1])))
    return float(_paper_rows()[1][paper_row(sample)])
