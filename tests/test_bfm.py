"""BFM basis converters on small synthetic .mat files with the real files' keys and layouts
(the real bases cannot ship): the interleaved MATLAB layout, 1-based triangles/keypoints, the
53,490 -> 53,215 reduction with 0- and 1-based maps, errors that name the file and the key, the
npz round trip, the CLI, and the "no basis" path. With the shared data, the converted mean of
the real 3DDFA means equals the authors' mean shape."""
from __future__ import annotations

import logging

import numpy as np
import pytest
import scipy.io

from nl3dmm.face.bfm import (DEFAULT_VERTEX_MAP, NO_BASIS_MESSAGE, BFMBasis, convert_300wlp, convert_bfm2009,
                        dense_shape, load_basis, read_basis, read_vertex_map)
from nl3dmm.cli import main
from nl3dmm.face.facemodel import load_paper_mesh

V = 12          # vertices of the synthetic 53,215-style model
V_FULL = 15     # vertices of the synthetic BFM 2009 before the reduction
KS, KE = 199, 29


def matlab_vector(points: np.ndarray) -> np.ndarray:
    """(V, 3) points as the (3V, 1) column MATLAB reshapes with reshape(v, 3, V): column-major."""
    return points.T.reshape(-1, order="F")[:, None]


def write_300wlp(tmp_path, rng, drop_shape=(), drop_exp=(), exp_vertices=V):
    mean = rng.normal(0, 5e4, (V, 3))
    mu_exp = rng.normal(0, 1e3, (exp_vertices, 3))
    shape = {"mu_shape": matlab_vector(mean), "w": rng.normal(0, 0.1, (3 * V, KS)), "sigma": rng.uniform(1e4, 1e6, (KS, 1)),
             "tri": np.array([[1, 2, 3], [3, 2, 12], [5, 6, 7]], dtype=np.float64).T,  # (3, F), 1-based
             "keypoints": rng.integers(1, V + 1, (1, 68)).astype(np.float64),
             "mu_tex": np.ones((3 * V, 1))}  # extra keys are ignored
    exp = {"mu_exp": matlab_vector(mu_exp), "w_exp": rng.normal(0, 1e4, (3 * exp_vertices, KE))}
    for key in drop_shape:
        shape.pop(key)
    for key in drop_exp:
        exp.pop(key)
    scipy.io.savemat(tmp_path / "Model_Shape.mat", shape)
    scipy.io.savemat(tmp_path / "Model_Exp.mat", exp)
    return tmp_path / "Model_Shape.mat", tmp_path / "Model_Exp.mat", shape, exp, mean, mu_exp


def test_300wlp_layout_parameters_and_indices(tmp_path, seed):
    rng = np.random.default_rng(seed)
    shape_path, exp_path, shape, exp, mean, mu_exp = write_300wlp(tmp_path, rng)
    # component 0 moves vertex 5 along y only, written the MATLAB way: a (3, V) field, column-major
    field = np.zeros((3, V))
    field[1, 5] = 1.0
    shape["w"][:, 0] = field.reshape(-1, order="F")
    scipy.io.savemat(shape_path, shape)
    basis = convert_300wlp(shape_path, exp_path)
    assert basis.num_vertices == V and (basis.num_shape, basis.num_exp) == (KS, KE)
    np.testing.assert_allclose(basis.mean_shape, mean + mu_exp, rtol=1e-6)
    zero = dense_shape(np.zeros((KS, 1)), np.zeros((KE, 1)), basis)
    np.testing.assert_allclose(zero, mean + mu_exp, rtol=1e-6)
    moved = dense_shape(7.0 * np.eye(KS)[0][:, None], np.zeros(KE), basis) - zero
    expected = np.zeros((V, 3))
    expected[5, 1] = 7.0
    np.testing.assert_allclose(moved, expected, atol=1e-2)  # float32 at 5e4: ~4e-3 rounding
    # triangles (3, F) 1-based -> (F, 3) 0-based; keypoints 1-based -> 0-based
    np.testing.assert_array_equal(basis.triangles, [[0, 1, 2], [2, 1, 11], [4, 5, 6]])
    np.testing.assert_array_equal(basis.keypoints, shape["keypoints"].ravel().astype(int) - 1)
    # the 300W-LP formula, in float64, for random parameters; (199, 1) columns as read from a .mat
    sp, ep = rng.normal(0, 3e5, (KS, 1)), rng.normal(0, 1.5, (KE, 1))
    vertex = shape["mu_shape"] + exp["mu_exp"] + shape["w"] @ sp + exp["w_exp"] @ ep
    want = vertex.reshape(3, V, order="F").T
    np.testing.assert_allclose(dense_shape(sp, ep, basis), want, rtol=0, atol=2e-5 * np.abs(want).max())
    # a batch (B, K) gives the same rows
    sps, eps = rng.normal(0, 3e5, (3, KS)), rng.normal(0, 1.5, (3, KE))
    batch = dense_shape(sps, eps, basis)
    assert batch.shape == (3, V, 3) and batch.dtype == np.float32
    np.testing.assert_allclose(batch[2], dense_shape(sps[2], eps[2], basis), atol=2e-5 * np.abs(batch).max())
    assert dense_shape(sps[:1], eps[:1], basis).shape == (1, V, 3)  # a batch of one stays a batch


def test_real_3ddfa_means_give_the_authors_mean_shape(tmp_path, seed, shared_data):
    """mu_shape + mu_exp from the real 3DDFA arrays must be our mean_shape (units and axes), and
    the real 1-based triangles and keypoints must come out as the paper mesh's."""
    rng = np.random.default_rng(seed)
    paper = load_paper_mesh()
    u_shp = np.load(shared_data / "3ddfa" / "train.configs" / "u_shp.npy")
    u_exp = np.load(shared_data / "3ddfa" / "train.configs" / "u_exp.npy")
    D = u_shp.size
    scipy.io.savemat(tmp_path / "Model_Shape.mat", {
        "mu_shape": u_shp.astype(np.float64), "w": rng.normal(0, 1e-3, (D, 2)),
        "tri": paper.triangles.T + 1.0, "keypoints": paper.keypoints[None] + 1.0})
    scipy.io.savemat(tmp_path / "Model_Exp.mat", {"mu_exp": u_exp.astype(np.float64),
                                                  "w_exp": rng.normal(0, 1.0, (D, 1))})
    basis = convert_300wlp(tmp_path / "Model_Shape.mat", tmp_path / "Model_Exp.mat")
    np.testing.assert_array_equal(basis.mean_shape, paper.mean_shape)
    np.testing.assert_array_equal(dense_shape(np.zeros(2), np.zeros(1), basis), paper.mean_shape)
    np.testing.assert_array_equal(basis.triangles, paper.triangles)
    np.testing.assert_array_equal(basis.keypoints, paper.keypoints)


def test_real_parameters_through_the_converter_fit_the_real_landmarks(tmp_path, shared_data):
    """The converter path with real numbers: a Model_Shape.mat / Model_Exp.mat whose rows at the 68
    landmarks are 3DDFA's real 40 + 10 basis (other rows 0), fed each AFLW2000-3D sample's own
    Shape_Para / Exp_Para in their raw units, puts the landmarks within ~2 px of `pt3d_68`, far
    closer than the mean shape does: the units (no sigma scaling), interleaving and axes hold."""
    from nl3dmm.face.camera import matlab_to_image, pose_para_to_m, project_m
    paper = load_paper_mesh()
    config, weights = shared_data / "3ddfa" / "train.configs", shared_data / "3ddfa" / "weights"
    rows = np.load(config / "keypoints_sim.npy")  # (204,) rows of the flattened xyz arrays
    w = np.zeros((paper.num_vertices * 3, 40))
    w[rows] = np.loadtxt(weights / "w_shp_base.txt")
    w_exp = np.zeros((paper.num_vertices * 3, 10))
    w_exp[rows] = np.loadtxt(weights / "w_exp_base.txt")
    scipy.io.savemat(tmp_path / "Model_Shape.mat", {"mu_shape": np.load(config / "u_shp.npy").astype(np.float64),
                                                    "w": w})
    scipy.io.savemat(tmp_path / "Model_Exp.mat", {"mu_exp": np.load(config / "u_exp.npy").astype(np.float64),
                                                  "w_exp": w_exp})
    basis = convert_300wlp(tmp_path / "Model_Shape.mat", tmp_path / "Model_Exp.mat")
    fitted, mean = [], []
    for path in sorted((shared_data / "prnet" / "aflw2000").glob("image*.mat")):
        label = scipy.io.loadmat(path)
        landmarks = matlab_to_image(label["pt3d_68"][:2].T.astype(np.float64))
        m = pose_para_to_m(label["Pose_Para"].ravel())
        shape = dense_shape(label["Shape_Para"][:40], label["Exp_Para"][:10], basis)
        for points, errors in ((shape, fitted), (paper.mean_shape, mean)):
            errors.append(np.linalg.norm(project_m(points[paper.keypoints], m, 450) - landmarks, axis=1).mean())
    print(np.round(fitted, 2), np.round(mean, 2))
    assert len(fitted) == 16 and max(fitted) < 2.5 and np.mean(fitted) < 0.4 * np.mean(mean), (fitted, mean)


def write_bfm2009(tmp_path, rng, ids0: np.ndarray):
    full_mean = rng.normal(0, 5e4, (V_FULL, 3))
    full_pc = rng.normal(0, 0.1, (3 * V_FULL, KS))
    scipy.io.savemat(tmp_path / "01_MorphableModel.mat", {
        "shapeMU": matlab_vector(full_mean), "shapePC": full_pc, "shapeEV": rng.uniform(1e4, 1e6, (KS, 1)),
        "texMU": np.ones((3 * V_FULL, 1)), "tl": np.ones((4, 3))})
    scipy.io.savemat(tmp_path / "map0.mat", {"map_tddfa_to_basel": ids0[None].astype(np.uint16)})
    scipy.io.savemat(tmp_path / "map1.mat", {"trimIndex": (ids0[:, None] + 1).astype(np.uint16)})
    return tmp_path / "01_MorphableModel.mat", full_mean, full_pc


def test_bfm2009_reduction_with_0_and_1_based_maps(tmp_path, seed, caplog):
    rng = np.random.default_rng(seed)
    ids = rng.permutation(V_FULL)[:V]  # unordered on purpose
    path, full_mean, full_pc = write_bfm2009(tmp_path, rng, ids)
    *_, mu_exp = write_300wlp(tmp_path, rng)
    zero_based = convert_bfm2009(path, tmp_path / "Model_Exp.mat", tmp_path / "map0.mat")
    one_based = convert_bfm2009(path, tmp_path / "Model_Exp.mat", tmp_path / "map1.mat")
    for basis in (zero_based, one_based):
        np.testing.assert_allclose(basis.mean_shape, full_mean[ids] + mu_exp, rtol=1e-6)
        np.testing.assert_allclose(basis.shape_basis.reshape(V, 3, KS), full_pc.reshape(V_FULL, 3, KS)[ids],
                                   rtol=1e-6)
        assert basis.shape_sigma.shape == (KS,) and basis.num_exp == KE
    np.testing.assert_array_equal(zero_based.shape_basis, one_based.shape_basis)
    # index_base overrides the key: the 1-based ids read as 0-based pick the next vertex
    shifted = read_vertex_map(tmp_path / "map1.mat", index_base=0)
    np.testing.assert_array_equal(shifted, ids + 1)
    # without an expression basis: neutral shapes, said in the log, and exp_para is refused
    with caplog.at_level(logging.WARNING, logger="nl3dmm.face.bfm"):
        neutral = convert_bfm2009(path, None, tmp_path / "map0.mat")
    assert "no expression basis" in caplog.text
    np.testing.assert_allclose(neutral.mean_shape, full_mean[ids], rtol=1e-6)
    with pytest.raises(ValueError, match="no expression model"):
        dense_shape(np.zeros(KS), np.zeros(KE), neutral)
    assert dense_shape(np.zeros(KS), None, neutral).shape == (V, 3)


def test_bundled_map_is_the_0_based_3dmmasstn_map_and_matches_1_based_trim_index(shared_data):
    bundled = read_vertex_map(DEFAULT_VERTEX_MAP, 53490)
    assert bundled.shape == (53215,) and bundled.min() >= 0 and bundled.max() < 53490
    np.testing.assert_array_equal(bundled, read_vertex_map(shared_data / "3dmmasstn" / "map_tddfa_to_basel.mat"))
    trim = read_vertex_map(shared_data / "deep3dfacerecon" / "BFM" / "BFM_exp_idx.mat", 53490)  # 1-based key
    np.testing.assert_array_equal(bundled, trim)


@pytest.mark.parametrize("case, match", [
    ("shape key", r"Model_Shape\.mat: key 'w' missing"),
    ("exp key", r"Model_Exp\.mat: key 'w_exp' missing"),
    ("exp vertices", r"Model_Exp\.mat: key 'mu_exp' has 33 values, expected 36"),
    ("w rows", r"Model_Shape\.mat: key 'w' has shape \(35, 199\)"),
    ("tri base", r"Model_Shape\.mat: key 'tri' has vertex ids 0\.\.11, expected MATLAB 1-based"),
    ("not mat", r"Model_Shape\.mat: not a readable MATLAB"),
    ("v7.3", r"Model_Shape\.mat: MATLAB v7\.3"),
])
def test_300wlp_errors_name_the_file_and_the_key(tmp_path, seed, case, match):
    rng = np.random.default_rng(seed)
    shape_path, exp_path, shape, exp, *_ = write_300wlp(
        tmp_path, rng, drop_shape=("w",) if case == "shape key" else (),
        drop_exp=("w_exp",) if case == "exp key" else (), exp_vertices=11 if case == "exp vertices" else V)
    if case == "w rows":
        shape["w"] = shape["w"][:-1]
        scipy.io.savemat(shape_path, shape)
    if case == "tri base":
        shape["tri"] = shape["tri"] - 1
        scipy.io.savemat(shape_path, shape)
    if case == "not mat":
        shape_path.write_bytes(b"this is not a MATLAB file" * 10)
    if case == "v7.3":
        shape_path.write_bytes(b"MATLAB 7.3 MAT-file, Platform: GLNXA64".ljust(512, b" ") + b"\x89HDF\r\n\x1a\n")
    with pytest.raises(ValueError, match=match):
        convert_300wlp(shape_path, exp_path)


def test_vertex_map_errors(tmp_path, seed):
    rng = np.random.default_rng(seed)
    path, *_ = write_bfm2009(tmp_path, rng, np.arange(V))
    scipy.io.savemat(tmp_path / "far.mat", {"map_tddfa_to_basel": np.array([[0, 3, V_FULL]], dtype=np.uint16)})
    with pytest.raises(ValueError, match=r"far\.mat: key 'map_tddfa_to_basel' has id 15 .* 15 vertices"):
        convert_bfm2009(path, None, tmp_path / "far.mat")
    scipy.io.savemat(tmp_path / "zero.mat", {"trimIndex": np.array([[0], [1], [2]], dtype=np.uint16)})
    with pytest.raises(ValueError, match=r"zero\.mat: key 'trimIndex' has id 0, impossible for 1-based"):
        read_vertex_map(tmp_path / "zero.mat")
    scipy.io.savemat(tmp_path / "twice.mat", {"map_tddfa_to_basel": np.array([[1, 2, 1]], dtype=np.uint16)})
    with pytest.raises(ValueError, match="more than once"):
        read_vertex_map(tmp_path / "twice.mat")
    scipy.io.savemat(tmp_path / "other.mat", {"indices": np.arange(3)})
    with pytest.raises(ValueError, match=r"other\.mat: no vertex map key .*variables in the file: indices"):
        read_vertex_map(tmp_path / "other.mat")
    scipy.io.savemat(tmp_path / "bfm_bad.mat", {"shapeMU": np.zeros((45, 1)), "shapePC": np.zeros((44, 3))})
    with pytest.raises(ValueError, match=r"bfm_bad\.mat: key 'shapePC' has shape \(44, 3\)"):
        convert_bfm2009(tmp_path / "bfm_bad.mat", None, tmp_path / "map0.mat")
    with pytest.raises(FileNotFoundError, match="missing"):
        convert_bfm2009(tmp_path / "nowhere.mat")


def test_npz_round_trip_and_load_basis(tmp_path, seed, caplog):
    rng = np.random.default_rng(seed)
    shape_path, exp_path, *_ = write_300wlp(tmp_path, rng)
    basis = convert_300wlp(shape_path, exp_path, shape_components=40, exp_components=10)
    assert (basis.num_shape, basis.num_exp, basis.shape_sigma.shape) == (40, 10, (40,))
    out = basis.save(tmp_path / "basis.npz")
    loaded = load_basis(out, num_vertices=V)
    for key in ("mean", "shape_basis", "exp_basis", "shape_sigma", "triangles", "keypoints"):
        np.testing.assert_array_equal(getattr(loaded, key), getattr(basis, key))
    assert loaded.exp_sigma is None and loaded.mean.dtype == np.float32 and "Model_Shape.mat" in loaded.source
    with caplog.at_level(logging.WARNING, logger="nl3dmm.face.bfm"):
        assert load_basis(None) is None
    assert NO_BASIS_MESSAGE in caplog.text and NO_BASIS_MESSAGE == "dense shapes unavailable: landmark and image losses only"
    with pytest.raises(ValueError, match="12 vertices, the face model 53215"):
        load_basis(out, num_vertices=53215)
    with pytest.raises(FileNotFoundError, match="convert-bfm"):
        load_basis(tmp_path / "absent.npz")
    np.savez(tmp_path / "wrong.npz", mean=np.zeros(3))
    with pytest.raises(ValueError, match=r"wrong\.npz: key 'format_version' missing"):
        read_basis(tmp_path / "wrong.npz")
    with pytest.raises(ValueError, match="199 values; the basis has 40"):
        dense_shape(np.zeros(199), np.zeros(10), loaded)
    with pytest.raises(ValueError, match="components"):
        convert_300wlp(shape_path, exp_path, shape_components=500)


def test_convert_bfm_command(tmp_path, seed, capsys):
    rng = np.random.default_rng(seed)
    shape_path, exp_path, *_ = write_300wlp(tmp_path, rng)
    out = tmp_path / "sub" / "basis.npz"
    assert main(["convert-bfm", "--model-shape", str(shape_path), "--model-exp", str(exp_path),
                 "--out", str(out)]) == 0
    assert "12 vertices, 199 shape + 29 expression components" in capsys.readouterr().out
    sp, ep = rng.normal(0, 3e5, KS), rng.normal(0, 1, KE)
    np.testing.assert_array_equal(dense_shape(sp, ep, read_basis(out)),
                                  dense_shape(sp, ep, convert_300wlp(shape_path, exp_path)))
    ids = rng.permutation(V_FULL)[:V]
    bfm_path, full_mean, _ = write_bfm2009(tmp_path, rng, ids)
    assert main(["convert-bfm", "--bfm2009", str(bfm_path), "--model-exp", str(exp_path),
                 "--vertex-map", str(tmp_path / "map1.mat"), "--out", str(out)]) == 0
    assert read_basis(out).num_vertices == V
    # errors: exit status 2 and a message naming the file and the key
    exp_bad = tmp_path / "Exp_bad.mat"
    scipy.io.savemat(exp_bad, {"mu_exp": np.zeros((3 * V, 1))})
    assert main(["convert-bfm", "--model-shape", str(shape_path), "--model-exp", str(exp_bad),
                 "--out", str(out)]) == 2
    assert "Exp_bad.mat: key 'w_exp' missing" in capsys.readouterr().err
    assert main(["convert-bfm", "--model-shape", str(shape_path), "--vertex-map", "x.mat", "--out", str(out)]) == 2
    with pytest.raises(SystemExit):  # the two sources are exclusive
        main(["convert-bfm", "--model-shape", str(shape_path), "--bfm2009", str(bfm_path), "--out", str(out)])


def test_basis_validation():
    with pytest.raises(ValueError, match="mean must be"):
        BFMBasis(np.zeros(10, np.float32), np.zeros((10, 2), np.float32))
    with pytest.raises(ValueError, match="shape_basis must be"):
        BFMBasis(np.zeros(9, np.float32), np.zeros((6, 2), np.float32))
    with pytest.raises(ValueError, match="triangles"):
        BFMBasis(np.zeros(9, np.float32), np.zeros((9, 2), np.float32), triangles=np.array([[0, 1, 3]]))
