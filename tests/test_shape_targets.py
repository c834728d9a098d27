"""Dense shape targets on the training device (face/dense_shapes.py): the batched torch
product equals bfm.dense_shape, flipped crops get the mirrored face, the mirror map of the real
paper mesh sends each landmark to its iBUG mirror landmark, and a training run with basis=
adds the shape loss to L0."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from nl3dmm.face.bfm import BFMBasis, dense_shape
from nl3dmm.face.camera import IBUG68_FLIP
from nl3dmm.training.loop import train
from nl3dmm.training.batches import ArrayData
from nl3dmm.training.config import make_config
from nl3dmm.face.dense_shapes import DenseShapes, mirror_partners


def _basis(face_model, rng, ks: int = 6, ke: int = 3) -> BFMBasis:
    D = face_model.num_vertices * 3
    return BFMBasis(face_model.mean_shape.reshape(-1).astype(np.float32),
                    rng.normal(0, 1e-3, (D, ks)).astype(np.float32),
                    rng.normal(0, 1.0, (D, ke)).astype(np.float32), source="random (test)")


def test_mirror_map_of_the_paper_mesh_matches_the_ibug_mirror_landmarks(paper):
    partner = mirror_partners(paper.mean_shape)
    assert (partner[partner] == np.arange(paper.num_vertices)).mean() > 0.95  # nearly an involution
    landmarks = paper.landmarks
    mirrored = paper.mean_shape[partner[landmarks]].astype(np.float64)
    expected = paper.mean_shape[landmarks[np.asarray(IBUG68_FLIP)]].astype(np.float64)
    distance_mm = np.linalg.norm(mirrored - expected, axis=1) / paper.units_per_mm
    assert distance_mm.max() < 2.0, distance_mm.max()


def test_mirror_map_is_exact_on_a_symmetric_cloud(seed):
    rng = np.random.default_rng(seed)
    half = rng.normal(0, 1, (50, 3)) + [3.0, 0, 0]
    cloud = np.concatenate([half, half * [-1, 1, 1]])
    np.testing.assert_array_equal(mirror_partners(cloud), np.r_[np.arange(50, 100), np.arange(50)])


def test_dense_shapes_equal_numpy_and_flip_mirrors(sfm, seed):
    rng = np.random.default_rng(seed)
    basis = _basis(sfm, rng)
    targets = DenseShapes(basis, mirror_partners(sfm.mean_shape))
    shape_para = rng.normal(0, 1e4, (3, 199)).astype(np.float32)  # labels carry 199 / 29; the basis uses 6 / 3
    exp_para = rng.normal(0, 0.3, (3, 29)).astype(np.float32)
    flipped = torch.tensor([False, True, False])
    got = targets(torch.from_numpy(shape_para), torch.from_numpy(exp_para), flipped).double().numpy()
    want = dense_shape(shape_para[:, :6], exp_para[:, :3], basis).astype(np.float64)
    scale = np.abs(want).max()
    np.testing.assert_allclose(got[[0, 2]], want[[0, 2]], rtol=0, atol=1e-6 * scale)
    mirrored = want[1][mirror_partners(sfm.mean_shape)] * [-1, 1, 1]
    np.testing.assert_allclose(got[1], mirrored, rtol=0, atol=1e-6 * scale)
    with pytest.raises(ValueError, match="shape_para"):
        targets(torch.zeros(2, 5), torch.zeros(2, 29))
    with pytest.raises(ValueError, match="exp_para"):
        targets(torch.zeros(2, 199), None)


def test_training_with_a_basis_adds_the_shape_loss(tmp_path, sfm, seed):
    rng = np.random.default_rng(seed)
    path = _basis(sfm, rng).save(tmp_path / "basis.npz")
    n = 4
    arrays = dict(
        image=(rng.random((n, 224, 224, 3)) * 255).astype(np.uint8),
        m=(sfm.m_mean + sfm.m_std * rng.standard_normal((n, 8)) * 0.5).astype(np.float32),
        landmarks=(rng.random((n, 68, 2)) * 224).astype(np.float32),
        shape_para=rng.normal(0, 1e4, (n, 199)).astype(np.float32),
        exp_para=rng.normal(0, 0.3, (n, 29)).astype(np.float32),
        flipped=np.array([False, True, False, True]))
    config = make_config("tiny", steps=6, batch_size=4, out=str(tmp_path / "run"), basis=str(path))
    summary = train(config, data=ArrayData(**arrays), log=lambda *_: None)
    final = summary["stages"]["pretrain"]["final"]
    assert "shape" in final and np.isfinite(final["shape"])
    without = make_config("tiny", steps=1, batch_size=4, out=str(tmp_path / "plain"))
    assert "shape" not in train(without, data=ArrayData(**arrays), log=lambda *_: None)["stages"]["pretrain"]["final"]
