"""Face models: the paper's BFM topology and the Surrey Face Model through one interface, their
shared conventions (axes, winding, UVs, landmarks), their statistics, and clear errors on
corrupt files."""
from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

import nl3dmm
from nl3dmm.face.camera import image_to_clip, pose_para_to_m, project_m_with_depth
from nl3dmm.face.facemodel import (SURREY_DIR, FaceModel, load_face_model, load_paper_mesh,
                              load_surrey_model, read_ibug_mapping, read_surrey_binary)

SFM_BIN = SURREY_DIR / "sfm_shape_3448.bin"
SFM_MAP = SURREY_DIR / "ibug_to_sfm.txt"


@pytest.fixture(scope="module", params=["paper", "sfm"])
def model(request, paper, sfm):
    return {"paper": paper, "sfm": sfm}[request.param]


def test_sizes_and_statistics_of_the_two_models(paper, sfm):
    assert (paper.num_vertices, paper.num_triangles) == (53215, 105840)
    assert (sfm.num_vertices, sfm.num_triangles) == (3448, 6736)
    assert paper.std_shape.shape == (53215, 3) and 200 < paper.std_shape.min() < paper.std_shape.max() < 8000
    assert paper.m_mean.shape == paper.m_std.shape == (8,) and (paper.m_std > 0).all()
    assert paper.basis is None and sfm.basis.shape == (3 * 3448, 63)
    # Defined landmarks: all 68 on the paper mesh; 50 on the SFM (no jaw contour, no inner
    # mouth corners), the rest marked -1.
    assert (paper.landmarks >= 0).all()
    missing = set(np.nonzero(~sfm.landmark_mask)[0] + 1)
    assert missing == set(range(1, 9)) | set(range(10, 18)) | {61, 65}
    with pytest.raises(ValueError, match="does not define all 68"):
        sfm.keypoints
    assert load_face_model("sfm").num_vertices == 3448
    with pytest.raises(ValueError, match="unknown face model"):
        load_face_model("flame")


def test_shared_axes_uv_and_winding(model):
    """x towards the subject's left, y up, z out of the face; v = 0 at the top of the UV map;
    triangle normals (raw winding) point into the head."""
    v, lm = model.mean_shape.astype(np.float64), model.landmarks
    assert v[lm[45], 0] > v[lm[36], 0], "left eye outer corner (iBUG 46) must have larger x"
    assert v[lm[8], 1] < v[lm[27], 1], "chin must be below the nose bridge (y up)"
    defined = lm[lm >= 0]
    assert lm[30] == defined[np.argmax(v[defined, 2])], "nose tip must be the nearest landmark (z out)"
    inside = ((model.uv >= 0) & (model.uv <= 1)).all(1)
    assert inside.sum() >= model.num_vertices - 86  # the paper mesh's neck/ears leave its UV map
    assert np.corrcoef(model.uv[:, 1], v[:, 1])[0, 1] < -0.9, "v must grow downwards on the face"
    assert np.corrcoef(model.uv[:, 0], v[:, 0])[0, 1] > 0.9, "u must grow towards the subject's left"
    a, b, c = (v[model.triangles[:, k]] for k in range(3))
    inward = np.einsum("ij,ij->i", np.cross(b - a, c - a), (a + b + c) / 3 - v.mean(0)) < 0
    assert inward.mean() > 0.9


def test_frontal_render_survives_backface_culling(model):
    """With the shared winding, culling keeps the visible side of a frontal face: nearly every
    pixel drawn without culling is still drawn with it (the wrong winding leaves almost none)."""
    size = 64
    v = model.mean_shape.astype(np.float64)
    scale = 0.8 * size / np.ptp(v[:, :2], axis=0).max()
    centre = v[:, :2].mean(0)
    # Frontal, with the face centre at the image centre (u = x + 0.5, v = H + 0.5 - y).
    m = pose_para_to_m([0, 0, 0, size / 2 + 0.5 - scale * centre[0], size / 2 + 0.5 - scale * centre[1], 0, scale])
    points = torch.from_numpy(project_m_with_depth(v, m, size))[None]
    clip = image_to_clip(points, size, size).float()
    tri = torch.from_numpy(model.triangles)
    culled = nl3dmm.rasterize(clip, tri, (size, size), cull_backfaces=True)[0, ..., 3] > 0
    full = nl3dmm.rasterize(clip, tri, (size, size), cull_backfaces=False)[0, ..., 3] > 0
    assert full.float().mean() > 0.3
    assert (culled & full).sum() >= 0.97 * full.sum()


def test_surrey_std_shape_is_the_spread_of_the_linear_model(sfm, seed):
    rng = np.random.default_rng(seed)
    coefficients = rng.standard_normal((2000, 63))
    offsets = coefficients * np.sqrt(sfm.eigenvalues) @ sfm.basis.T.astype(np.float64)
    empirical = offsets.std(0).reshape(-1, 3)
    one = sfm.shape_from_coefficients(coefficients[0])
    assert np.allclose(one, sfm.mean_shape + offsets[0].reshape(-1, 3), atol=1e-3)
    ratio = empirical / sfm.std_shape
    assert np.median(np.abs(ratio - 1)) < 0.05 and np.abs(ratio - 1).max() < 0.25
    assert np.allclose(sfm.shape_from_coefficients(np.zeros(63)), sfm.mean_shape)
    gram = sfm.basis.T.astype(np.float64) @ sfm.basis
    assert np.abs(gram - np.eye(63)).max() < 1e-5
    assert (np.diff(sfm.eigenvalues) <= 0).all() and sfm.eigenvalues.min() > 0


def test_transferred_camera_statistics_project_like_the_papers(paper, sfm):
    """The SFM's mean m puts its landmarks where the paper mean m puts the paper's (a few
    pixels at 224, from the two models' different face shapes)."""
    both = sfm.landmark_mask
    from nl3dmm.face.camera import project_m
    ours = project_m(sfm.mean_shape[sfm.landmarks[both]].astype(np.float64), sfm.m_mean.astype(np.float64), 224)
    theirs = project_m(paper.mean_shape[paper.landmarks[both]].astype(np.float64),
                       paper.m_mean.astype(np.float64), 224)
    err = np.linalg.norm(ours - theirs, axis=1)
    assert err.mean() < 6, err
    assert "transferred" in sfm.notes["m statistics"]


@pytest.mark.parametrize("cut, words", [
    (3, "truncated or corrupt: version"),
    (20, "truncated or corrupt: shape mean"),
    (200_000, "truncated or corrupt: shape basis"),
    (-100, "truncated or corrupt: 3448 texture coordinates need 55168 bytes"),
])
def test_truncated_surrey_file_names_file_and_field(tmp_path, cut, words):
    data = SFM_BIN.read_bytes()
    broken = tmp_path / "sfm_truncated.bin"
    broken.write_bytes(data[:cut])
    with pytest.raises(ValueError, match=words) as info:
        read_surrey_binary(broken)
    assert str(broken) in str(info.value)


def test_corrupt_surrey_files(tmp_path):
    data = bytearray(SFM_BIN.read_bytes())
    extra = tmp_path / "extra.bin"
    extra.write_bytes(bytes(data) + b"\0\0\0\0")
    with pytest.raises(ValueError, match="4 unexpected bytes"):
        read_surrey_binary(extra)
    version = tmp_path / "version.bin"
    version.write_bytes(b"\x07\0\0\0" + bytes(data[4:]))
    with pytest.raises(ValueError, match="unsupported cereal MorphableModel version 7"):
        read_surrey_binary(version)
    huge = tmp_path / "rows.bin"
    huge.write_bytes(bytes(data[:4]) + (2**30).to_bytes(4, "little") + bytes(data[8:]))
    with pytest.raises(ValueError, match="truncated or corrupt: shape mean needs 4294967296 bytes"):
        read_surrey_binary(huge)
    with pytest.raises(FileNotFoundError, match="missing.bin"):
        load_surrey_model(tmp_path / "missing.bin")


def test_corrupt_landmark_mapping(tmp_path):
    bad_vertex = tmp_path / "map.txt"
    bad_vertex.write_text("[landmark_mappings]\n9 = 99999\n")
    with pytest.raises(ValueError, match=r"map.txt: landmark 9 maps to 99999"):
        read_ibug_mapping(bad_vertex, 3448)
    bad_key = tmp_path / "key.txt"
    bad_key.write_text("[landmark_mappings]\n70 = 3\n")
    with pytest.raises(ValueError, match="'70' is not an iBUG point"):
        read_ibug_mapping(bad_key, 3448)
    not_toml = tmp_path / "junk.txt"
    not_toml.write_bytes(b"\x89PNG\x00\x01 = = =")
    with pytest.raises(ValueError, match="junk.txt: not an eos landmark mapping"):
        read_ibug_mapping(not_toml, 3448)
    assert (read_ibug_mapping(SFM_MAP, 3448) >= 0).sum() == 50


def test_corrupt_paper_files(tmp_path):
    source = load_paper_mesh().notes["source"]
    for name in ("mean_shape.npy", "3DMM_tri.dat", "vertices_2d_u.dat", "vertices_2d_v.dat",
                 "3DMM_keypoints.dat", "std_shape.npy", "mean_m.npy", "std_m.npy"):
        shutil.copy(f"{source}/{name}", tmp_path / name)
    assert load_paper_mesh(tmp_path).m_std is not None
    (tmp_path / "vertices_2d_u.dat").write_bytes((tmp_path / "vertices_2d_u.dat").read_bytes()[:1000])
    with pytest.raises(ValueError, match=r"vertices_2d_u.dat: expected 53215 float32 values, found 250"):
        load_paper_mesh(tmp_path)
    shutil.copy(f"{source}/vertices_2d_u.dat", tmp_path / "vertices_2d_u.dat")
    (tmp_path / "std_shape.npy").write_bytes((tmp_path / "std_shape.npy").read_bytes()[:5000])
    with pytest.raises(ValueError, match="std_shape.npy: not a readable .npy file"):
        load_paper_mesh(tmp_path)
    (tmp_path / "std_shape.npy").unlink()
    assert load_paper_mesh(tmp_path).std_shape is None  # statistics are optional
    (tmp_path / "3DMM_keypoints.dat").unlink()
    with pytest.raises(FileNotFoundError, match="3DMM_keypoints.dat"):
        load_paper_mesh(tmp_path)


def test_face_model_validates_its_arrays(sfm):
    with pytest.raises(ValueError, match="triangle vertex ids outside"):
        FaceModel(sfm.mean_shape, sfm.triangles + 1, sfm.uv, None, name="bad")
    with pytest.raises(ValueError, match="landmarks must be 68"):
        FaceModel(sfm.mean_shape, sfm.triangles, sfm.uv, np.zeros(5, np.int64), name="bad")
    with pytest.raises(ValueError, match="uv must be"):
        FaceModel(sfm.mean_shape, sfm.triangles, sfm.uv[:10], None, name="bad")
    nan_shape = sfm.mean_shape.copy()
    nan_shape[0, 0] = np.nan
    with pytest.raises(ValueError, match="mean_shape contains NaN"):
        FaceModel(nan_shape, sfm.triangles, sfm.uv, None, name="bad")
