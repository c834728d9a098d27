"""The 300W-LP / AFLW2000-3D sample reader on the 17 real samples, and its errors on broken
copies: each names the file and, for labels, the key."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import scipy.io as sio

from nl3dmm.face.camera import pose_para_to_m, project_m
from nl3dmm.data import LabelError, find_samples, read_image, read_label, read_sample
from nl3dmm.face.facemodel import load_paper_mesh

AFLW = "prnet/aflw2000"
LP = "face3d/IBUG_image_008_1_0"


def test_reads_all_real_samples(shared_data):
    stems = find_samples(shared_data / AFLW)
    assert len(stems) == 16
    stems.append(shared_data / LP)
    mesh = load_paper_mesh()
    kp = mesh.mean_shape[mesh.keypoints].astype(np.float64)
    for stem in stems:
        sample = read_sample(stem)
        assert sample.image.shape == (450, 450, 3) and sample.image.dtype == np.uint8
        assert sample.pose_para.shape == (7,) and sample.shape_para.shape == (199,) and sample.exp_para.shape == (29,)
        assert sample.landmarks.shape == (68, 2) and (sample.landmarks > 0).all() and (sample.landmarks < 450).all()
        assert np.array_equal(sample.m, pose_para_to_m(sample.pose_para))
        # Landmarks and camera agree (inner points: the 300W-LP jaw follows the silhouette).
        err = np.linalg.norm(project_m(kp, sample.m, sample.height) - sample.landmarks, axis=1)[17:]
        assert err.mean() < 8, stem.name
        if stem.name.startswith("IBUG"):
            assert sample.dataset == "300W-LP" and sample.landmark_depth is None
        else:
            assert sample.dataset == "AFLW2000-3D" and sample.landmark_depth.shape == (68,)
            assert sample.extras["pt2d"].shape == (2, 21)  # the AFLW 21-point markup, kept as is
        assert {"Tex_Para", "Color_Para", "Illum_Para", "roi"} <= set(sample.extras)
    # Any of the three ways to name a sample.
    stem = stems[0]
    for path in (stem, stem.with_suffix(".jpg"), stem.with_suffix(".mat")):
        assert read_sample(path).name == stem.name


@pytest.fixture
def copy(shared_data, tmp_path):
    def make(name: str = "image00050") -> Path:
        for suffix in (".jpg", ".mat"):
            shutil.copy(shared_data / AFLW / f"{name}{suffix}", tmp_path / f"{name}{suffix}")
        return tmp_path / name
    return make


@pytest.mark.parametrize("cut", [10, 100, 1000, -10])
def test_truncated_label_names_the_file(copy, cut):
    stem = copy()
    mat = stem.with_suffix(".mat")
    mat.write_bytes(mat.read_bytes()[:cut])
    with pytest.raises(LabelError, match="cannot read label file .*image00050.mat"):
        read_sample(stem)


def test_missing_and_malformed_keys(copy):
    stem = copy()
    label = {k: v for k, v in sio.loadmat(stem.with_suffix(".mat")).items() if not k.startswith("__")}
    path = stem.with_suffix(".mat")
    sio.savemat(path, {k: v for k, v in label.items() if k != "Pose_Para"})
    with pytest.raises(LabelError, match=r"image00050.mat: missing key 'Pose_Para' \(keys present: \['Color_Para'"):
        read_sample(stem)
    sio.savemat(path, {**label, "Shape_Para": label["Shape_Para"][:150]})
    with pytest.raises(LabelError, match=r"image00050.mat: key 'Shape_Para' has shape \(150, 1\), expected 199"):
        read_label(path)
    bad = label["Pose_Para"].copy()
    bad[0, 2] = np.nan
    sio.savemat(path, {**label, "Pose_Para": bad})
    with pytest.raises(LabelError, match="key 'Pose_Para' contains NaN"):
        read_label(path)
    sio.savemat(path, {k: v for k, v in label.items() if k != "pt3d_68"})  # only the 21-point pt2d
    with pytest.raises(LabelError, match="no 68-point landmarks"):
        read_sample(stem)
    sio.savemat(path, {**label, "pt3d_68": label["pt3d_68"][:, :60]})
    with pytest.raises(LabelError, match=r"key 'pt3d_68' has shape \(3, 60\)"):
        read_sample(stem)


def test_unreadable_or_missing_image(copy):
    stem = copy()
    stem.with_suffix(".jpg").write_text("this is not a JPEG\n")
    with pytest.raises(ValueError, match="cannot read image .*image00050.jpg"):
        read_sample(stem)
    with pytest.raises(ValueError, match="cannot read image"):
        read_image(stem.with_suffix(".jpg"))
    stem.with_suffix(".jpg").unlink()
    with pytest.raises(FileNotFoundError, match="image file missing: .*image00050.jpg"):
        read_sample(stem)
    with pytest.raises(FileNotFoundError, match="label file missing: .*nothing.mat"):
        read_sample(stem.with_name("nothing"))


def test_find_samples_pairs_images_with_labels(copy, tmp_path):
    copy("image00050")
    copy("image00081")
    (tmp_path / "image00081.mat").unlink()                 # image without a label
    (tmp_path / "landmarks").mkdir()
    (tmp_path / "landmarks" / "x_pts.mat").write_bytes(b"")  # 300W-LP landmark files: no image
    assert [p.name for p in find_samples(tmp_path)] == ["image00050"]
    with pytest.raises(FileNotFoundError, match="dataset folder missing"):
        find_samples(tmp_path / "absent")
