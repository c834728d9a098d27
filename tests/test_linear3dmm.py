"""The linear 3DMM baseline: PCA recovers a known subspace, reconstruction error falls with k,
the Surrey model's real basis decodes its mean at code 0 and is orthonormal, the closed-form
and gradient-descent code fits agree, and the model plugs in where the nonlinear decoders do."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from nl3dmm.face.bfm import BFMBasis, dense_shape
from nl3dmm.face.facemodel import load_surrey_model
from nl3dmm.face.linear3dmm import LinearMorphableModel
from nl3dmm.model.networks import TextureDecoder


@pytest.fixture(scope="module")
def sfm():
    return load_surrey_model()


def synthetic_samples(rng, n=400, d=60, k=5, noise=0.01):
    """Samples on a known k-dim subspace (orthonormal Q) with distinct variances, plus noise."""
    q = np.linalg.qr(rng.normal(size=(d, k)))[0]
    stds = np.linspace(5.0, 1.0, k)
    mean = rng.normal(size=d)
    x = mean + (rng.normal(size=(n, k)) * stds) @ q.T + noise * rng.normal(size=(n, d))
    return x, q, stds, mean


def test_pca_recovers_a_known_subspace(seed):
    rng = np.random.default_rng(seed)
    x, q, stds, mean = synthetic_samples(rng)
    model = LinearMorphableModel.from_pca(x, 5)
    basis = model.basis.double().numpy()
    np.testing.assert_allclose(basis.T @ basis, np.eye(5), atol=1e-5)
    # same subspace: the projector onto it agrees (the largest principal-angle sine is small)
    assert np.linalg.norm(basis @ basis.T - q @ q.T, 2) < 0.02
    np.testing.assert_allclose(model.mean.numpy(), x.mean(0), atol=1e-5)
    # variances close to the generating ones (sampling error of n = 400 is ~10 %), in order
    eig = model.scale.double().numpy() ** 2
    assert (np.diff(eig) < 0).all()
    np.testing.assert_allclose(eig, stds ** 2, rtol=0.25)
    ratio = model.explained_variance_ratio
    assert ratio.shape == (5,) and 0.99 < ratio.sum() <= 1.0 and (np.diff(ratio) < 0).all()
    # deterministic signs: fitting again (shuffled rows) gives the same basis
    again = LinearMorphableModel.from_pca(rng.permutation(x), 5)
    np.testing.assert_allclose(again.basis.numpy(), model.basis.numpy(), atol=1e-4)
    with pytest.raises(ValueError, match="support 1..59"):
        LinearMorphableModel.from_pca(x[:, :59][:60], 60)


def test_reconstruction_error_decreases_with_k(seed):
    rng = np.random.default_rng(seed)
    x, *_ = synthetic_samples(rng, n=120, d=40, k=12, noise=0.1)
    targets = torch.from_numpy(x)
    errors = []
    for k in (1, 2, 4, 8, 12, 20):
        model = LinearMorphableModel.from_pca(x, k)
        errors.append(float(model.l1_error(targets, model.fit_codes(targets)).mean()))
    assert all(a > b for a, b in zip(errors, errors[1:])), errors
    assert errors[-2] < 0.2 * errors[0]  # 12 components hold the signal; the rest is noise


def test_surrey_model_mean_at_code_zero_and_orthonormal_basis(sfm):
    model = LinearMorphableModel.from_face_model(sfm)
    assert model.num_components == 63 and model.sample_shape == (3448, 3)
    assert torch.equal(model.decode(torch.zeros(1, 63))[0], torch.from_numpy(sfm.mean_shape))
    basis = model.basis.double()
    assert float((basis.T @ basis - torch.eye(63, dtype=torch.float64)).abs().max()) < 1e-5
    code = torch.randn(2, 63, generator=torch.Generator().manual_seed(1))
    np.testing.assert_allclose(model.decode(code)[1].numpy(), sfm.shape_from_coefficients(code[1].numpy()),
                               atol=1e-3)  # code in standard deviations, as the FaceModel's coefficients
    assert torch.equal(model.triangles, torch.from_numpy(sfm.triangles))
    # a truncated model decodes the leading components only
    assert torch.allclose(LinearMorphableModel.from_face_model(sfm, 10).decode(code[:, :10]),
                          model.decode(code[:, :10]))
    from nl3dmm.face.facemodel import load_paper_mesh
    with pytest.raises(ValueError, match="no PCA basis"):
        LinearMorphableModel.from_face_model(load_paper_mesh())


@pytest.fixture
def one_thread():
    """Hundreds of tiny Adam steps: extra threads only add synchronisation (10x slower on a
    loaded 2-core machine), so run them on one and restore the setting."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_closed_form_fit_equals_gradient_descent_fit(seed, one_thread):
    rng = np.random.default_rng(seed)
    x, *_ = synthetic_samples(rng, n=200, d=60, k=6, noise=0.05)
    model = LinearMorphableModel.from_pca(x, 6)
    truth = torch.randn(4, 6, dtype=torch.float64)
    targets = model.decode(truth).double() + 0.05 * torch.randn(4, 20, 3, dtype=torch.float64)
    closed = model.fit_codes(targets)
    assert float((closed - truth).abs().max()) < 0.2  # the noise moves the optimum a little
    descent = model.fit_codes(targets, method="gradient", steps=400, lr=0.1)
    np.testing.assert_allclose(descent.numpy(), closed.numpy(), atol=1e-3)
    # the closed form is the least-squares optimum: any perturbation fits worse
    sq = lambda c: float((model.decode(c).double() - targets).square().sum())  # noqa: E731
    assert sq(closed) < sq(closed + 0.01 * torch.randn_like(closed))
    # masked fits agree too, and ignore whatever lies under the mask
    mask = torch.rand(4, 20) > 0.3
    junk = torch.where(mask[..., None], targets, torch.full_like(targets, 1e3))
    masked = model.fit_codes(junk, mask=mask)
    np.testing.assert_allclose(masked.numpy(), model.fit_codes(targets, mask=mask).numpy(), atol=1e-8)
    masked_descent = model.fit_codes(junk, method="gradient", mask=mask, steps=400, lr=0.1)
    np.testing.assert_allclose(masked_descent.numpy(), masked.numpy(), atol=1e-3)
    assert model.l1_error(junk, masked, mask).max() < 0.1 < model.l1_error(junk, masked).min()
    # a ridge prior shrinks the codes towards the mean (code 0)
    assert model.fit_codes(targets, regularization=10.0).norm() < closed.norm()
    with pytest.raises(ValueError, match="closed form exists for loss='l2' only"):
        model.fit_codes(targets, loss="l1")
    l1_fit = model.fit_codes(targets, method="gradient", loss="l1", steps=200, lr=0.05)
    assert float(model.l1_error(targets, l1_fit).mean()) <= float(model.l1_error(targets, closed).mean()) + 1e-3


def test_texture_model_has_the_texture_decoder_interface(seed):
    size = (16, 16)
    textures = torch.rand(30, *size, 3, dtype=torch.float64) * 2 - 1
    model = LinearMorphableModel.from_pca(textures, 8)
    decoder = TextureDecoder(code_size=8, size=size, base=4, upsamplings=4)
    code = torch.randn(3, 8)
    assert model(code).shape == decoder(code).shape == (3, *size, 3)
    mask = torch.rand(3, *size) > 0.5  # (B, H, W) visibility of a pseudo texture, as in the paper
    fitted = model.fit_codes(textures[:3].float(), mask=mask)
    assert fitted.shape == (3, 8) and model.l1_error(textures[:3], fitted, mask).shape == (3,)


def test_shape_decoder_interface_and_the_bfm_basis(seed, sfm):
    decoder = LinearMorphableModel.from_face_model(sfm).as_shape_decoder(sfm.std_shape)
    out = decoder(torch.zeros(2, 63))
    assert set(out) == {"vertices", "shape_normalized"} and out["vertices"].shape == (2, 3448, 3)
    assert float(out["shape_normalized"].abs().max()) < 1e-5  # the mean normalises to 0
    own = LinearMorphableModel.from_face_model(sfm).per_coordinate_std().reshape(-1, 3).numpy()
    np.testing.assert_allclose(own, sfm.std_shape, rtol=1e-4)  # the FaceModel's std is the same formula
    # the converted BFM basis as a linear model: code = [Shape_Para, Exp_Para] in raw units
    rng = np.random.default_rng(seed)
    basis = BFMBasis(rng.normal(0, 5e4, 30).astype(np.float32), rng.normal(0, 0.1, (30, 7)).astype(np.float32),
                     rng.normal(0, 1e3, (30, 2)).astype(np.float32))
    model = LinearMorphableModel.from_bfm_basis(basis)
    sp, ep = rng.normal(0, 3e5, 7), rng.normal(0, 1, 2)
    decoded = model.decode(torch.from_numpy(np.concatenate([sp, ep]))[None])[0].numpy()
    np.testing.assert_allclose(decoded, dense_shape(sp, ep, basis), atol=0.05)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match=r"basis must be \(9, K\)"):
        LinearMorphableModel(np.zeros(9), np.zeros((8, 2)))
    with pytest.raises(ValueError, match="eigenvalues must be 2 variances"):
        LinearMorphableModel(np.zeros(9), np.zeros((9, 2)), np.array([1.0, -1.0]))
    with pytest.raises(ValueError, match="triangles"):
        LinearMorphableModel(np.zeros(9), np.zeros((9, 2)), None, np.array([[0, 1, 3]]))
    with pytest.raises(ValueError, match="sample_shape"):
        LinearMorphableModel(np.zeros(10), np.zeros((10, 2)), sample_shape=(3, 3))
    model = LinearMorphableModel(np.zeros(9), np.eye(9)[:, :2])
    with pytest.raises(ValueError, match=r"code must be \(B, K'\)"):
        model.decode(torch.zeros(1, 3))
    with pytest.raises(ValueError, match="targets must be"):
        model.fit_codes(torch.zeros(1, 4, 3))
    with pytest.raises(ValueError, match="unknown method"):
        model.fit_codes(torch.zeros(1, 3, 3), method="newton")
