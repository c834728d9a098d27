"""`nl3dmm eval aflw2000`: 2-D face alignment of a trained model on AFLW2000-3D.

Protocol (engine/tasks/nme.py): 68 landmarks from the model (landmark vertices projected with
the predicted m), NME normalised by sqrt(w * h) of the ground-truth landmarks' box, per |yaw|
bin [0, 30], (30, 60], (60, 90] and the mean of the bins.

The crop. AFLW2000-3D ships no face boxes, and evaluations of 3DMM regressors (3DDFA, PRNet)
crop each test face from its *ground-truth* landmarks. We do the same with our training rule
(1.68 x the GT landmark box, centred; `nl3dmm.data.crop`), so the test faces appear at the
training scale. This uses the GT box only to place the crop, never the landmark positions
inside it; the numbers are therefore comparable to those protocols, not to detector-based ones.

Ground truth is each `.mat`'s `pt3d_68` (x, y). The yaw bins follow the paper's split by
default (3DDFA's AFLW2000-3D-new.pose.npy, found by exact pt3d_68 match: `yaw_split.py`);
`yaw_split="pose_para"` bins by the label's own Pose_Para yaw instead. The table and the JSON
name the split.
Predictions are mapped back to the photo exactly (`inference_crop.to_source_points`), where
the NME is measured.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from ..data.samples import find_samples, read_sample
from .nme import NMEReport, evaluate
from .yaw_split import DESCRIPTION as YAW_SPLITS, absolute_yaw
from .inference_crop import Window, crop_to_window, to_source_points, window_from_landmarks
from ..model.inference import load_trained, predict
from ..runtime import resolve_device

PROTOCOL = ("68 landmark vertices projected with the predicted camera; 224 crop placed from the ground-truth "
            "landmark box (1.68 x its larger side, centred), as 3DDFA/PRNet evaluations crop from GT; NME = mean "
            "2-D point distance / sqrt(w*h) of the GT landmark box, in the original image")


@dataclass
class AFLWResult:
    report: NMEReport
    names: list[str]
    yaw_degrees: np.ndarray
    landmarks: np.ndarray     # (N, 68, 2) predictions in the source photos' corner frame
    landmark_mask: np.ndarray  # (68,) which points the model defines (and the NME uses)
    yaw_split: str = "paper"   # yaw_split.SPLITS

    def table(self) -> str:
        return f"AFLW2000-3D NME, {self.yaw_split} yaw split\n" + self.report.table()

    def as_dict(self) -> dict:
        def finite(x: float) -> float | None:  # JSON has no NaN
            return None if not math.isfinite(x) else float(x)
        summary = self.report.as_dict()
        summary["nme_per_bin"] = {k: finite(v) for k, v in summary["nme_per_bin"].items()}
        summary["nme_mean_of_bins"] = finite(summary["nme_mean_of_bins"])
        summary["faces"] = len(self.names)
        summary["landmarks_used"] = int(self.landmark_mask.sum())
        summary["protocol"] = PROTOCOL
        summary["yaw_split"] = self.yaw_split
        summary["yaw_split_description"] = YAW_SPLITS[self.yaw_split]
        summary["per_face"] = [{"image": n, "yaw_degrees": float(y), "nme": float(e)}
                               for n, y, e in zip(self.names, self.yaw_degrees, self.report.per_face)]
        return summary


PredictFn = Callable[[np.ndarray], dict]


def pick_stems(stems: list[Path], only: list[str] | None) -> list[Path]:
    """The stems named in `only` (file names without extension), in `stems` order; every name
    must exist, so a typo cannot shrink the test set unnoticed."""
    if not only:
        return stems
    by_name = {stem.name: stem for stem in stems}
    missing = [name for name in only if name not in by_name]
    if missing:
        raise FileNotFoundError(f"no labelled image named {missing} in the data folder")
    wanted = set(only)
    return [stem for stem in stems if stem.name in wanted]


def evaluate_folder(data_dir: str | Path, predict_crops: PredictFn, landmark_mask: np.ndarray | None = None,
                    batch: int = 16, limit: int | None = None, progress: bool = True,
                    only: list[str] | None = None, yaw_split: str = "paper") -> AFLWResult:
    """Run `predict_crops` ((B, 224, 224, 3) uint8 -> dict with (B, 68, 2) crop-frame `landmarks`)
    on every labelled image of `data_dir` (imageXXXXX.jpg + .mat), or those named in `only`,
    and score it with the yaw bins of `yaw_split` ("paper" or "pose_para")."""
    from tqdm import tqdm

    if limit is not None and limit < 1:
        raise ValueError(f"limit must be >= 1 (the first N images), got {limit}")
    stems = pick_stems(find_samples(data_dir), only)
    if limit is not None:
        stems = stems[:limit]
    if not stems:
        raise FileNotFoundError(f"no image + .mat pairs found in {data_dir}")
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    if yaw_split not in YAW_SPLITS:
        raise ValueError(f"yaw_split must be one of {tuple(YAW_SPLITS)}, got {yaw_split!r}")
    names, yaws, gts, preds = [], [], [], []
    bar = tqdm(total=len(stems), desc="AFLW2000-3D", unit="img", disable=not progress)
    for start in range(0, len(stems), batch):
        crops, windows = [], []
        for stem in stems[start:start + batch]:
            sample = read_sample(stem)
            if sample.dataset != "AFLW2000-3D":
                raise ValueError(f"{stem}: no pt3d_68 in the label; not an AFLW2000-3D sample")
            window: Window = window_from_landmarks(sample.landmarks)
            crops.append(crop_to_window(sample.image, window))
            windows.append(window)
            names.append(sample.name)
            yaws.append(absolute_yaw(sample, yaw_split))
            gts.append(sample.landmarks)
        crop_landmarks = np.asarray(predict_crops(np.stack(crops))["landmarks"], dtype=np.float64)
        preds.extend(to_source_points(points, window) for points, window in zip(crop_landmarks, windows))
        bar.update(len(crops))
    bar.close()
    pred, gt, yaw = np.stack(preds), np.stack(gts), np.abs(np.array(yaws))
    mask = np.ones(68, dtype=bool) if landmark_mask is None else np.asarray(landmark_mask, dtype=bool)
    return AFLWResult(evaluate(pred, gt, yaw, mask), names, yaw, pred, mask, yaw_split)


def evaluate_checkpoint(data_dir: str | Path, ckpt: str | Path, out: str | Path | None = None, batch: int = 16,
                        device: str = "auto", limit: int | None = None, progress: bool = True,
                        only: list[str] | None = None, yaw_split: str = "paper") -> AFLWResult:
    """Load `ckpt`, evaluate it on `data_dir`, write the JSON summary to `out` when given."""
    model, face_model, config = load_trained(ckpt, resolve_device(device))
    result = evaluate_folder(data_dir, lambda crops: predict(model, crops, face_model), face_model.landmark_mask,
                             batch, limit, progress, only, yaw_split)
    if out is not None:
        summary = result.as_dict()
        summary.update(checkpoint=str(ckpt), network=config.get("model"), face_model=config.get("face_model"),
                       data=str(data_dir), trained_on=config.get("data") or "bundled default data",
                       held_out_in_training=config.get("exclude"))
        path = Path(out)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(summary, indent=2))
    return result
