"""NME cost of cropping from detected boxes instead of ground-truth landmark boxes, on the 16
AFLW2000-3D photos of shared/data, with a trained checkpoint.

    python bench/detect_nme.py --ckpt runs/quick/checkpoints/checkpoint-XXXXXXXX.pt \
        [--data ../shared/data/prnet/aflw2000] [--out bench/results/detect-nme.json]

Both crops use the training rule (1.68 x the landmark box, centred; `nl3dmm.data.crop`):
* "ground truth": from the box of the 68 `pt3d_68` landmarks (what `nl3dmm eval aflw2000` does);
* "detected": from `nl3dmm.tasks.detect.detect_faces(photo)[0]` (the largest face; each photo
  holds one labelled face), its box mapped to the landmark box. A photo with no detection has
  no detected score; it is counted and the NME of both sources is also given on the photos
  the detector found.
NME as `nl3dmm eval aflw2000`: mean 2-D distance of the model's landmarks over sqrt(w * h) of the
GT landmark box, in the photo, per |yaw| bin.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # shared_data_dir()

from nl3dmm.data.samples import find_samples, read_sample  # noqa: E402
from nl3dmm.model.inference import load_trained, predict  # noqa: E402
from nl3dmm.tasks.detect import box_iou, detect_faces, square_landmark_box  # noqa: E402
from nl3dmm.tasks.inference_crop import (crop_to_window, to_source_points, window_from_box,  # noqa: E402
                                         window_from_landmarks)
from nl3dmm.tasks.nme import evaluate, nme  # noqa: E402


def main() -> int:
    from conftest import shared_data_dir

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ckpt", required=True)
    parser.add_argument("--data", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "detect-nme.json")
    args = parser.parse_args()
    data = args.data or (shared_data_dir() / "prnet" / "aflw2000")
    model, face_model, config = load_trained(args.ckpt)
    mask = face_model.landmark_mask
    rows = []
    for stem in find_samples(data):
        sample = read_sample(stem)
        gt_window = window_from_landmarks(sample.landmarks)
        faces = detect_faces(sample.image)
        windows = {"ground truth": gt_window}
        if faces:
            windows["detected"] = window_from_box(faces[0].landmark_box)
        row = dict(image=sample.name, yaw_degrees=math.degrees(float(sample.pose_para[1])),
                   face_found=bool(faces),
                   iou=box_iou(faces[0].landmark_box, square_landmark_box(sample.landmarks)) if faces else None)
        if faces:  # how far the detected crop is from the training crop, in units of the GT window side
            (top, left, side), (dtop, dleft, dside) = gt_window, windows["detected"]
            row["centre_offset_over_side"] = float(np.hypot(dtop + dside / 2 - top - side / 2,
                                                            dleft + dside / 2 - left - side / 2) / side)
            row["side_ratio"] = dside / side
        for source, window in windows.items():
            crop_points = predict(model, crop_to_window(sample.image, window)[None], face_model)["landmarks"][0]
            points = to_source_points(crop_points, window)
            row[source] = dict(window=list(map(int, window)),
                               nme=float(nme(points[None], sample.landmarks[None], mask)[0]),
                               points=points)
        rows.append(row)
        print(f"{row['image']} yaw {row['yaw_degrees']:6.1f}: GT-box NME {row['ground truth']['nme']:.4f}, "
              + (f"detected NME {row['detected']['nme']:.4f} (IoU {row['iou']:.2f}, centre offset "
                 f"{row['centre_offset_over_side']:.3f} side, side ratio {row['side_ratio']:.3f})" if faces
                 else "no face detected"))

    gt = np.stack([read_sample(s).landmarks for s in find_samples(data)])
    yaw = np.abs([r["yaw_degrees"] for r in rows])
    found = np.array([r["face_found"] for r in rows])
    summary = {}
    for source in ("ground truth", "detected"):
        subset = found if source == "detected" else np.ones(len(rows), bool)
        pred = np.stack([r[source]["points"] for r, keep in zip(rows, subset) if keep])
        all_faces = evaluate(pred, gt[subset], yaw[subset], mask)
        summary[source] = dict(faces=int(subset.sum()), nme_mean_of_bins=all_faces.mean,
                               nme_per_bin=all_faces.as_dict()["nme_per_bin"],
                               nme_mean_over_faces=float(np.mean(all_faces.per_face)))
    on_found = {source: float(np.mean([r[source]["nme"] for r in rows if r["face_found"]]))
                for source in ("ground truth", "detected")}
    lines = [f"checkpoint {args.ckpt} (model {config.get('model')}, face model {config.get('face_model')}, "
             f"{config.get('steps')} steps, stage {config.get('stage')})",
             f"photos {len(rows)}, detector found the face in {int(found.sum())}",
             "| crop from | faces | NME mean over faces | NME per bin [0,30] / (30,60] / (60,90] |",
             "|---|---|---|---|"]
    for source, s in summary.items():
        bins = " / ".join("—" if v is None or not math.isfinite(v) else f"{v:.4f}" for v in s["nme_per_bin"].values())
        lines.append(f"| {source} box | {s['faces']} | {s['nme_mean_over_faces']:.4f} | {bins} |")
    lines.append(f"| ground truth box, the {int(found.sum())} detected photos only | {int(found.sum())} | "
                 f"{on_found['ground truth']:.4f} | |")
    offsets = [r["centre_offset_over_side"] for r in rows if r["face_found"]]
    ratios = [r["side_ratio"] for r in rows if r["face_found"]]
    lines.append(f"detected vs GT crop window: centre offset / side median {np.median(offsets):.3f} (max "
                 f"{max(offsets):.3f}); side ratio median {np.median(ratios):.3f} (range {min(ratios):.3f}-"
                 f"{max(ratios):.3f})")
    table = "\n".join(lines)
    print(table)
    for r in rows:
        for source in ("ground truth", "detected"):
            if source in r:
                r[source].pop("points")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(dict(checkpoint=str(args.ckpt), table=table, summary=summary,
                                        on_detected_photos=on_found, per_photo=rows), indent=1, default=float))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
