"""Face detection in front of `nl3dmm reconstruct`: every face of a photo, as a landmark box.

The detector, chosen by measuring recall on the real photos of shared/data
(bench/results/detect-recall.md): dlib's HOG face detector (frontal to about 45 degrees of yaw;
built into dlib, no model file) plus OpenCV's Haar profile cascade (`cv2.data.haarcascades`,
inside the opencv-python-headless wheel; OpenCV 5 dropped the cascades, hence the `<5` pin) run
on the photo and on its mirror image, for faces turned further. Nothing is downloaded at run
time. Overlapping boxes of the passes are one face: the HOG box is kept (its map is the better
fitted one), else the higher-scoring profile box.

The box. A detector's box is its own convention (HOG's is about brow to lower lip; a profile box
sits off-centre on the head). The model was trained on crops of 1.68 x the box of the face's 68
landmarks (`nl3dmm.data.crop`), so each detector box is mapped to a *landmark box*: a square of
side `scale * w` centred at the detector box centre moved by `(dx * w, dy * h)`, with
(dx, dy, scale) fitted per pass by bench/detect_recall.py on the 21 photos of shared/data that
have 68 landmarks (medians; held-out numbers in bench/results/detect-recall.md). The crop rule
then reads that square like a box of landmarks (`inference_crop.window_from_box`), exactly as
it reads a ground-truth one.

Scores: HOG's SVM margin, or the profile cascade's level weight (`detectMultiScale3`); larger is
surer, comparable within one pass only. Faces come back largest first.

dlib and cv2 are imported on first use, so `import nl3dmm` stays light.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

# The passes of the detector, in order of preference when two find the same face.
PASSES = ("frontal", "profile-left", "profile-right")
# Haar cascade of the profile passes; it finds faces turned towards the image's left
# ("profile-left"); run on the mirrored photo, it finds the others ("profile-right").
PROFILE_CASCADE = "haarcascade_profileface.xml"

# Detector box -> landmark box, per pass: (dx, dy, scale), the landmark box being a square of
# side scale * w centred at (cx + dx * w, cy + dy * h). Fitted by bench/detect_recall.py (medians
# over the 68-landmark photos of shared/data; profile pairs pooled, the right pass mirrored).
BOX_TO_LANDMARK_BOX = {
    "frontal": (0.017, 0.100, 0.985),
    "profile-left": (-0.042, 0.173, 0.763),
    "profile-right": (0.042, 0.173, 0.763),
}

# HOG runs at the photo's size (upsampling finds faces under ~80 px but costs 4x the time), or
# shrunk to a shorter side of HOG_MAX_SIDE: its smallest face, 80 px there, is then about
# MIN_FACE_FRACTION of the photo, and a 24-megapixel phone photo takes a second, not ten.
HOG_UPSAMPLE = 0
HOG_MAX_SIDE = 1280
# The cascade runs on a copy whose shorter side is at most this: a face under MIN_FACE_FRACTION
# of the shorter side is not looked for (its 224 crop would be mostly upsampled blur), so a
# larger picture only costs time.
CASCADE_MAX_SIDE = 640
MIN_FACE_FRACTION = 0.05
MIN_FACE_PX = 24
# OpenCV's usual cascade settings (scale pyramid step, neighbours needed to keep a box).
SCALE_STEP = 1.1
MIN_NEIGHBOURS = 4
# Boxes whose intersection over the smaller landmark box exceeds this are one face.
MERGE_OVERLAP = 0.5

Box = tuple[float, float, float, float]  # x0, y0, x1, y1 in photo pixels, corner frame


@dataclass(frozen=True)
class Detection:
    """One face: the detector's own box, the landmark box it maps to, its score and pass."""
    detector_box: Box
    landmark_box: Box          # a square: what the crop rule reads
    score: float
    source: str                # the pass that found it (a PASSES name)

    def as_dict(self) -> dict:
        return {"landmark_box": [round(v, 2) for v in self.landmark_box],
                "detector_box": [round(v, 2) for v in self.detector_box],
                "score": round(self.score, 4), "source": self.source}


def _import(module: str, install: str):
    try:
        return __import__(module)
    except ImportError as exc:  # a clear message instead of a bare ModuleNotFoundError deep in a batch
        raise RuntimeError(f"face detection needs {module}: pip install '{install}'") from exc


def _cv2():
    return _import("cv2", "opencv-python-headless<5")


@lru_cache(maxsize=None)
def _hog():
    return _import("dlib", "dlib-bin").get_frontal_face_detector()


@lru_cache(maxsize=None)
def _profile_cascade():
    cv2 = _cv2()
    folder = getattr(getattr(cv2, "data", None), "haarcascades", None)
    if not folder:
        raise RuntimeError(f"OpenCV {cv2.__version__} ships no Haar cascades (OpenCV 5 removed them); "
                           "pip install 'opencv-python-headless<5'")
    cascade = cv2.CascadeClassifier(folder + PROFILE_CASCADE)
    if cascade.empty():
        raise RuntimeError(f"could not load the Haar cascade {folder + PROFILE_CASCADE}")
    return cascade


def to_landmark_box(box: Box, mapping: tuple[float, float, float]) -> Box:
    """The square landmark box of a detector box, `mapping` = (dx, dy, scale) of its pass
    (BOX_TO_LANDMARK_BOX)."""
    dx, dy, scale = mapping
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    cx, cy, half = (x0 + x1) / 2 + dx * w, (y0 + y1) / 2 + dy * h, scale * w / 2
    return cx - half, cy - half, cx + half, cy + half


def _check_image(image: np.ndarray) -> np.ndarray:
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8:
        raise TypeError(f"image must be a uint8 numpy array, got {type(image).__name__} "
                        f"{getattr(image, 'dtype', '')}")
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] != 3 or min(image.shape[:2]) < 1:
        raise ValueError(f"image must be (H, W) or (H, W, 3) RGB, got shape {image.shape}")
    return np.ascontiguousarray(image)



def _shrunk(picture: np.ndarray, max_side: int) -> tuple[np.ndarray, float]:
    """`picture` resized so its shorter side is at most `max_side` (area-averaged), and the factor."""
    height, width = picture.shape[:2]
    shrink = min(1.0, max_side / min(height, width))
    if shrink == 1.0:
        return picture, 1.0
    size = (max(1, round(width * shrink)), max(1, round(height * shrink)))
    return _cv2().resize(picture, size, interpolation=_cv2().INTER_AREA), shrink


def run_pass(rgb: np.ndarray, source: str) -> list[tuple[Box, float]]:
    """Raw (detector box in photo pixels, score) of one pass over an (H, W, 3) uint8 RGB photo."""
    if source not in PASSES:
        raise ValueError(f"unknown detector pass {source!r}; passes: {PASSES}")
    if source == "frontal":
        picture, shrink = _shrunk(rgb, HOG_MAX_SIDE)
        rects, scores, _ = _hog().run(picture, HOG_UPSAMPLE, 0.0)
        return [((r.left() / shrink, r.top() / shrink, (r.right() + 1) / shrink, (r.bottom() + 1) / shrink),
                 float(s)) for r, s in zip(rects, scores)]
    cv2 = _cv2()
    gray, shrink = _shrunk(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), CASCADE_MAX_SIDE)
    # Equalising: the cascade was trained on normalised windows (OpenCV's own sample does this).
    gray = cv2.equalizeHist(gray)
    mirrored = source == "profile-right"
    if mirrored:
        gray = np.ascontiguousarray(gray[:, ::-1])
    smallest = max(MIN_FACE_PX, int(MIN_FACE_FRACTION * min(gray.shape)))
    boxes, _, weights = _profile_cascade().detectMultiScale3(
        gray, scaleFactor=SCALE_STEP, minNeighbors=MIN_NEIGHBOURS, minSize=(smallest, smallest),
        outputRejectLevels=True)
    found = []
    for (x, y, w, h), weight in zip(np.asarray(boxes).reshape(-1, 4), np.asarray(weights).reshape(-1)):
        x0 = gray.shape[1] - (x + w) if mirrored else x
        found.append(((x0 / shrink, y / shrink, (x0 + w) / shrink, (y + h) / shrink), float(weight)))
    return found


def _overlap_of_smaller(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    smaller = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
    return iw * ih / smaller if smaller > 0 else 0.0


def merge(candidates: list[Detection]) -> list[Detection]:
    """One detection per face: passes in PASSES order, then by score; a box overlapping a kept one
    (MERGE_OVERLAP of the smaller) is the same face. Returned largest first."""
    order = sorted(candidates, key=lambda d: (PASSES.index(d.source), -d.score))
    kept: list[Detection] = []
    for candidate in order:
        if all(_overlap_of_smaller(candidate.landmark_box, k.landmark_box) <= MERGE_OVERLAP for k in kept):
            kept.append(candidate)
    return sorted(kept, key=lambda d: -(d.landmark_box[2] - d.landmark_box[0]))


def detect_faces(image: np.ndarray, max_faces: int | None = None) -> list[Detection]:
    """Every face found in `image` ((H, W, 3) RGB or (H, W) gray, uint8), largest first, at most
    `max_faces` of them (None: all)."""
    if max_faces is not None and (isinstance(max_faces, bool) or not isinstance(max_faces, int) or max_faces < 1):
        raise ValueError(f"max_faces must be a positive integer or None, got {max_faces!r}")
    rgb = _check_image(image)
    found = merge([Detection(box, to_landmark_box(box, BOX_TO_LANDMARK_BOX[source]), score, source)
                   for source in PASSES for box, score in run_pass(rgb, source)])
    return found[:max_faces] if max_faces is not None else found


def box_iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    """Intersection over union of two (x0, y0, x1, y1) boxes."""
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - iw * ih
    return iw * ih / union if union > 0 else 0.0


def square_landmark_box(landmarks: np.ndarray) -> tuple[float, float, float, float]:
    """The square the crop rule reads from landmarks (N, 2): centred on their box, side = its larger
    side. Ground truth for a detection's `landmark_box` (their IoU is the IoU of the two crops)."""
    points = np.asarray(landmarks, dtype=np.float64)[:, :2]
    lo, hi = points.min(0), points.max(0)
    (cx, cy), half = (lo + hi) / 2, float((hi - lo).max()) / 2
    return cx - half, cy - half, cx + half, cy + half
