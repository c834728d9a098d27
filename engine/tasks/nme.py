"""Face-alignment evaluation on AFLW2000-3D: the standard 2-D NME protocol.

NME of one face = mean over the 68 landmarks of the 2-D point-to-point distance, divided by
sqrt(w * h) of the ground-truth landmarks' bounding box. Faces are grouped by absolute yaw
into [0, 30], (30, 60], (60, 90] degrees (1,306 / 462 / 232 images on the full set), and the
headline number is the mean of the three bin means (so the rarer large poses weigh as much as
the frontal ones).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

YAW_BINS = ((0.0, 30.0), (30.0, 60.0), (60.0, 90.0))
BIN_NAMES = ("[0, 30]", "(30, 60]", "(60, 90]")


def nme(pred: np.ndarray, gt: np.ndarray, landmark_mask: np.ndarray | None = None) -> np.ndarray:
    """Per-face NME. pred, gt: (N, 68, 2) (extra coordinates in gt, such as z, are ignored).

    `landmark_mask` (L,) bool limits the mean distance to the points a model defines (the
    Surrey model has 50 of the 68); the normaliser stays the box of *all* ground-truth points,
    so the scale is the protocol's. Predictions at masked-out points may be NaN."""
    pred, gt = np.asarray(pred, dtype=np.float64), np.asarray(gt, dtype=np.float64)[..., :2]
    if pred.ndim != 3 or pred.shape[-1] != 2 or pred.shape[:2] != gt.shape[:2]:
        raise ValueError(f"pred must be (N, L, 2) matching gt (N, L, >=2); got {pred.shape} and {gt.shape}")
    mask = np.ones(pred.shape[1], dtype=bool) if landmark_mask is None else np.asarray(landmark_mask, dtype=bool)
    if mask.shape != (pred.shape[1],) or not mask.any():
        raise ValueError(f"landmark_mask must be ({pred.shape[1]},) bool with at least one True, got {mask.shape}")
    if not np.isfinite(pred[:, mask]).all():
        raise ValueError("pred contains NaN or Inf landmarks")
    size = np.sqrt(np.prod(gt.max(1) - gt.min(1), axis=-1))
    if (size <= 0).any():
        raise ValueError("a ground-truth landmark set has a zero-area bounding box")
    return np.linalg.norm(pred[:, mask] - gt[:, mask], axis=-1).mean(-1) / size


def yaw_bin(yaw_degrees: np.ndarray) -> np.ndarray:
    """Bin index 0, 1, 2 of each absolute yaw (|yaw| above 90 counts in the last bin)."""
    yaw = np.abs(np.asarray(yaw_degrees, dtype=np.float64))
    return np.where(yaw <= 30.0, 0, np.where(yaw <= 60.0, 1, 2))


@dataclass
class NMEReport:
    per_bin: list[float]
    counts: list[int]
    mean: float
    per_face: np.ndarray = field(repr=False)

    def table(self) -> str:
        rows = ["| yaw | faces | NME (%) |", "|---|---|---|"]
        for name, count, value in zip(BIN_NAMES, self.counts, self.per_bin):
            rows.append(f"| {name} | {count} | {100 * value:.2f} |")
        rows.append(f"| mean of bins | {sum(self.counts)} | {100 * self.mean:.2f} |")
        return "\n".join(rows)

    def as_dict(self) -> dict:
        return {"nme_per_bin": dict(zip(BIN_NAMES, self.per_bin)), "counts": dict(zip(BIN_NAMES, self.counts)),
                "nme_mean_of_bins": self.mean}


def evaluate(pred: np.ndarray, gt: np.ndarray, yaw_degrees: np.ndarray,
             landmark_mask: np.ndarray | None = None) -> NMEReport:
    """NME per yaw bin and their mean. Empty bins (possible on small subsets) are left out
    of the mean and reported as NaN. `landmark_mask`: see `nme`."""
    per_face = nme(pred, gt, landmark_mask)
    bins = yaw_bin(yaw_degrees)
    if bins.shape != per_face.shape:
        raise ValueError(f"one yaw per face expected: {bins.shape} vs {per_face.shape}")
    per_bin = [float(per_face[bins == k].mean()) if (bins == k).any() else float("nan") for k in range(3)]
    counts = [int((bins == k).sum()) for k in range(3)]
    mean = float(np.nanmean(per_bin))
    return NMEReport(per_bin, counts, mean, per_face)


def load_aflw2000_landmarks(configs_dir: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Ground truth of all 2,000 AFLW2000-3D faces from 3DDFA's test.configs folder:
    (2000, 68, 3) landmarks in image pixels and (2000,) absolute yaw in degrees."""
    root = Path(configs_dir)
    pts_path, yaw_path = root / "AFLW2000-3D.pts68.npy", root / "AFLW2000-3D-new.pose.npy"
    for path in (pts_path, yaw_path):
        if not path.is_file():
            raise FileNotFoundError(f"AFLW2000-3D ground truth file missing: {path}")
    pts = np.load(pts_path)
    yaw = np.load(yaw_path)
    if pts.shape != (2000, 3, 68) or yaw.shape != (2000,):
        raise ValueError(f"unexpected shapes {pts.shape} in {pts_path} / {yaw.shape} in {yaw_path}")
    return np.transpose(pts, (0, 2, 1)), yaw
