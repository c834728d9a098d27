"""Camera error of a checkpoint on AFLW2000-3D photos: each photo cropped as `nl3dmm eval aflw2000`
crops it (1.68 x the ground-truth landmark box), the predicted m against the crop's ground-truth m
(Pose_Para through the crop): RMS of the difference of the model-normalised m (the L0 camera
term's scale) and |yaw| error in degrees. Used by run.sh beside it."""
from __future__ import annotations

import argparse
import json

import numpy as np
import torch

from nl3dmm.data.crop import crop_face
from nl3dmm.data.profile_views import camera_pose, rotation_angles
from nl3dmm.data.samples import read_sample
from nl3dmm.model.inference import load_trained, predict


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", required=True)
    parser.add_argument("--ckpt", required=True)
    parser.add_argument("--only", required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    model, _, _ = load_trained(args.ckpt)
    rows = {}
    for name in args.only.split(","):
        sample = read_sample(f"{args.data}/{name}")
        crop = crop_face(sample.image, sample.m, sample.landmarks)
        m_pred = predict(model, crop.image[None].copy())["m"][0].astype(np.float64)
        with torch.no_grad():
            normalised = model.normalize_m(torch.tensor(np.stack([m_pred, crop.m]), dtype=torch.float32)).numpy()
        yaw_pred = np.rad2deg(rotation_angles(camera_pose(m_pred)[1])[1])
        yaw_true = np.rad2deg(rotation_angles(camera_pose(crop.m)[1])[1])
        rows[name] = {"m_rms_normalised": float(np.sqrt(np.mean((normalised[0] - normalised[1]) ** 2))),
                      "yaw_true_deg": float(yaw_true), "yaw_pred_deg": float(yaw_pred),
                      "yaw_error_deg": float(abs(yaw_pred - yaw_true))}
    summary = {"m_rms_normalised": float(np.mean([r["m_rms_normalised"] for r in rows.values()])),
               "yaw_error_deg": float(np.mean([r["yaw_error_deg"] for r in rows.values()])),
               "per_photo": rows, "checkpoint": args.ckpt}
    with open(args.out, "w") as handle:
        json.dump(summary, handle, indent=1)
    print(json.dumps({k: v for k, v in summary.items() if k != "per_photo"}))


if __name__ == "__main__":
    main()
