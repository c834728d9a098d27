"""Landmark targets of training samples (nl3dmm.data.landmark_targets): 3-D-consistent by
default, on the real 300W-LP sample and through preprocessing; the `_pts.mat` reader on
files with the release's key layout."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import scipy.io

from nl3dmm.data.landmark_targets import landmark_target, pts_mat_path, read_pts_mat
from nl3dmm.data.preprocess import PreprocessSettings, preprocess
from nl3dmm.data.samples import LabelError, read_sample
from nl3dmm.face.bfm import convert_300wlp
from nl3dmm.face.camera import project_m
from nl3dmm.face.facemodel import load_paper_mesh

LP = "face3d/IBUG_image_008_1_0"
JAW = np.arange(17)


def _reference(shared_data, sample) -> np.ndarray:
    """3-D-consistent landmarks of the sample independent of our code paths: 3DDFA's real
    40 + 10 component basis at the 68 landmarks (1-2 px from AFLW2000-3D's pt3d_68)."""
    weights = shared_data / "3ddfa" / "weights"
    points = (np.loadtxt(weights / "u_base.txt") + np.loadtxt(weights / "w_shp_base.txt") @ sample.shape_para[:40]
              + np.loadtxt(weights / "w_exp_base.txt") @ sample.exp_para[:10]).reshape(68, 3)
    return project_m(points, sample.m, sample.height)


def _landmark_basis(shared_data, tmp_path):
    """A converted basis whose rows at the landmarks are 3DDFA's real ones (others zero)."""
    config, weights = shared_data / "3ddfa" / "train.configs", shared_data / "3ddfa" / "weights"
    rows = np.load(config / "keypoints_sim.npy")
    size = load_paper_mesh().num_vertices * 3
    w, w_exp = np.zeros((size, 40)), np.zeros((size, 10))
    w[rows], w_exp[rows] = np.loadtxt(weights / "w_shp_base.txt"), np.loadtxt(weights / "w_exp_base.txt")
    scipy.io.savemat(tmp_path / "Model_Shape.mat", {"mu_shape": np.load(config / "u_shp.npy").astype(np.float64), "w": w})
    scipy.io.savemat(tmp_path / "Model_Exp.mat", {"mu_exp": np.load(config / "u_exp.npy").astype(np.float64),
                                                  "w_exp": w_exp})
    basis = convert_300wlp(tmp_path / "Model_Shape.mat", tmp_path / "Model_Exp.mat")
    return basis, basis.save(tmp_path / "basis.npz")


def test_targets_on_the_real_300wlp_sample_do_not_follow_the_visible_jaw(shared_data, tmp_path):
    """IBUG_image_008_1_0 (yaw -44 deg): pt2d slides onto the silhouette on the far jaw. The
    default target (mean shape posed by the label; no basis, no _pts.mat here) has the jaw gap to
    pt2d of the 3-D-consistent reference, point by point; with a basis the target is the label's
    own fit (the authors' targets), equal to the reference."""
    sample = read_sample(shared_data / LP)
    assert sample.dataset == "300W-LP" and abs(np.degrees(sample.pose_para[1]) + 44) < 0.5
    mesh = load_paper_mesh()
    reference = _reference(shared_data, sample)
    reference_gap = np.linalg.norm(reference - sample.landmarks, axis=1)
    assert reference_gap[JAW].max() > 40  # the disagreement the targets must reproduce, not remove

    target, convention = landmark_target(sample, mesh)
    assert convention == "mean"
    gap = np.linalg.norm(target - sample.landmarks, axis=1)
    print("jaw gap to pt2d: target", gap[JAW].round(1), "reference", reference_gap[JAW].round(1))
    assert gap[JAW].max() > 40 and gap[JAW].mean() > 15  # not pt2d
    assert np.abs(gap[JAW] - reference_gap[JAW]).max() < 6.0  # the jaw of a 3-D-consistent target
    assert np.linalg.norm(target - reference, axis=1)[JAW].mean() < 5.0

    basis, _ = _landmark_basis(shared_data, tmp_path)
    dense, convention = landmark_target(sample, mesh, basis=basis)
    assert convention == "dense"
    np.testing.assert_allclose(dense, reference, atol=1e-3)

    old, convention = landmark_target(sample, mesh, "pt2d")
    assert convention == "pt2d" and np.array_equal(old, sample.landmarks)
    with pytest.raises(ValueError, match="basis"):
        landmark_target(sample, mesh, "dense")
    with pytest.raises(ValueError, match="_pts.mat"):
        landmark_target(sample, mesh, "pts_3d")
    with pytest.raises(ValueError, match="one of"):
        landmark_target(sample, mesh, "pt3d")


def _pts_tree(shared_data, tmp_path, pts: dict) -> tuple:
    """A 300W-LP-style tree: IBUG/<name>.jpg + .mat and landmarks/IBUG/<name>_pts.mat."""
    root = tmp_path / "300W_LP"
    (root / "IBUG").mkdir(parents=True)
    (root / "landmarks" / "IBUG").mkdir(parents=True)
    for suffix in (".jpg", ".mat"):
        shutil.copy(shared_data / f"{LP}{suffix}", root / "IBUG" / f"IBUG_image_008_1_0{suffix}")
    pts_file = root / "landmarks" / "IBUG" / "IBUG_image_008_1_0_pts.mat"
    scipy.io.savemat(pts_file, pts)
    return root, pts_file


def test_pts_mat_reader_with_the_release_layout(shared_data, tmp_path):
    """`pts_2d` and `pts_3d`, each (68, 2) x, y in 1-based pixels (the layout public 300W-LP
    readers index as m['pts_3d'][i][0]); found beside the subset folder and preferred by auto."""
    sample = read_sample(shared_data / LP)
    rng = np.random.default_rng(0)
    pts3d = _reference(shared_data, sample) + 0.5 + rng.normal(0, 0.1, (68, 2))  # stored 1-based
    pts2d = sample.landmarks + 0.5
    root, pts_file = _pts_tree(shared_data, tmp_path, {"pts_2d": pts2d, "pts_3d": pts3d})
    read = read_pts_mat(pts_file)
    np.testing.assert_allclose(read["pts_3d"], pts3d - 0.5)
    np.testing.assert_allclose(read["pts_2d"], sample.landmarks)
    assert pts_mat_path(root / "IBUG" / "IBUG_image_008_1_0.mat") == pts_file
    assert pts_mat_path(shared_data / f"{LP}.mat") is None
    target, convention = landmark_target(read_sample(root / "IBUG" / "IBUG_image_008_1_0"), load_paper_mesh())
    assert convention == "pts_3d"
    np.testing.assert_allclose(target, pts3d - 0.5)
    scipy.io.savemat(tmp_path / "t.mat", {"pts_2d": pts2d.T, "pts_3d": pts3d.T})  # (2, 68) is accepted
    np.testing.assert_allclose(read_pts_mat(tmp_path / "t.mat")["pts_3d"], pts3d - 0.5)


@pytest.mark.parametrize("content, message", [
    ({"pts_2d": np.zeros((68, 2))}, "missing key 'pts_3d'"),
    ({"pts_2d": np.zeros((68, 2)), "pts_3d": np.zeros((68, 3))}, r"'pts_3d' has shape \(68, 3\)"),
    ({"pts_2d": np.full((68, 2), np.nan), "pts_3d": np.zeros((68, 2))}, "'pts_2d' contains NaN"),
])
def test_pts_mat_reader_names_bad_content(tmp_path, content, message):
    scipy.io.savemat(tmp_path / "x_pts.mat", content)
    with pytest.raises(LabelError, match=message):
        read_pts_mat(tmp_path / "x_pts.mat")
    (tmp_path / "broken_pts.mat").write_bytes(b"not a mat file")
    with pytest.raises(LabelError, match="broken_pts.mat"):
        read_pts_mat(tmp_path / "broken_pts.mat")


def test_preprocess_records_the_landmark_convention(shared_data, tmp_path):
    """The store's crops carry the chosen targets and the manifest says which convention each
    record follows; the window is placed from those targets."""
    samples = [LP, "prnet/aflw2000/image00050"]
    settings = PreprocessSettings(shard_size=4, flip=True)
    manifest = preprocess(shared_data, tmp_path / "store", settings, progress=False, samples=samples,
                          log=lambda _: None)
    assert manifest["counts"]["landmark_conventions"] == {"mean": 2, "pt3d_68": 2}
    assert "landmark targets: auto" in manifest["notes"]["landmarks"]
    info = json.loads((tmp_path / "store" / "shard-00000" / "shard.json").read_text())
    assert info["landmark_conventions"] == ["mean", "mean", "pt3d_68", "pt3d_68"]
    from nl3dmm.data.store import open_shard
    arrays = open_shard(tmp_path / "store" / "shard-00000")
    mesh = load_paper_mesh()
    projected = project_m(mesh.mean_shape[mesh.keypoints].astype(np.float64), arrays["m"][0].astype(np.float64), 224)
    assert np.abs(projected - arrays["landmarks"][0]).max() < 0.01  # the mean target, carried through the crop
    old = preprocess(shared_data, tmp_path / "old", PreprocessSettings(shard_size=4, landmarks="pt2d"),
                     progress=False, samples=[LP], log=lambda _: None)
    assert old["counts"]["landmark_conventions"] == {"pt2d": 1}
