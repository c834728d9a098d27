"""Every loss: zero (its minimum) at the ground truth, positive and differentiable away from it,
and equal to the authors' formula on a hand-computed case; the patchGAN's output and
receptive field; the history of fakes."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from nl3dmm.model.adversarial import FakeHistory, PatchDiscriminator, lsgan_discriminator_loss, lsgan_generator_loss
from nl3dmm.face.facemodel import load_surrey_model
from nl3dmm.model.losses import (chromaticity, constant_albedo_loss, flip_texture, landmark_loss,
                           local_albedo_smoothness_loss, m_loss, reconstruction_loss, shape_loss, smoothness_loss,
                           symmetry_loss, texture_loss, uniform_laplacian, uv_smoothness_loss, white_shading_loss)

D = dict(dtype=torch.float64)


@pytest.fixture(scope="module")
def sfm():
    return load_surrey_model()


def _check(loss_fn, truth: torch.Tensor, *args, minimum: float = 0.0, scale: float = 1.0):
    """loss(truth) == minimum; loss(truth + noise) > minimum; gradients match finite differences."""
    at_truth = loss_fn(truth, *args)
    assert at_truth.ndim == 0 and abs(float(at_truth) - minimum) < 1e-12
    away = (truth + scale * torch.randn_like(truth)).requires_grad_(True)
    value = loss_fn(away, *args)
    assert float(value.detach()) > minimum
    assert torch.autograd.gradcheck(lambda x: loss_fn(x, *args), (away,))


def test_m_and_shape_losses(seed):
    m_true = torch.randn(3, 8, **D)
    _check(lambda m: m_loss(m, m_true), m_true.clone())
    assert torch.isclose(m_loss(m_true + 2, m_true), torch.tensor(5 * 4 / 2, **D))  # 5 * sum(d^2)/2/numel
    shape_true = torch.randn(2, 40, 3, **D)
    _check(lambda s: shape_loss(s, shape_true), shape_true.clone())
    assert torch.isclose(shape_loss(shape_true + 0.5, shape_true), torch.tensor(10 * 0.25 / 2, **D))


def test_texture_loss_counts_visible_texels_only(seed):
    target = torch.rand(2, 8, 10, 3, **D) * 2 - 1
    visible = torch.rand(2, 8, 10) > 0.4
    hidden_junk = torch.where(visible[..., None], target, torch.full_like(target, 9.0))
    assert texture_loss(hidden_junk, target, visible) == 0
    _check(lambda t: texture_loss(t, target, visible), target.clone())
    assert torch.isclose(texture_loss(target + 0.3, target, visible), torch.tensor(0.3, **D))
    none = texture_loss(target.clone().requires_grad_(True), target + 1, torch.zeros(2, 8, 10, dtype=torch.bool))
    assert none == 0 and none.requires_grad


def test_reconstruction_loss_is_error_per_masked_pixel(seed):
    image = torch.rand(2, 12, 12, 3, **D) * 2 - 1
    mask = (torch.rand(2, 12, 12, 1) > 0.5).double()

    def loss(render):
        return reconstruction_loss(render * mask + image * (1 - mask), image, mask)

    _check(loss, image.clone())
    # The authors' normalisation: 10 / 3 channels x the mean error per masked pixel and channel,
    # whatever the render does off the mask (their mask has 3 channels, summed in the fraction).
    render = image + 0.2 * mask + 5.0 * (1 - mask)
    assert torch.isclose(loss(render), torch.tensor(10 * 0.2 / 3, **D))
    mask3 = mask.expand(-1, -1, -1, 3)
    assert torch.isclose(reconstruction_loss(render * mask3 + image * (1 - mask3), image, mask3),
                         torch.tensor(10 * 0.2 / 3, **D))


def test_landmark_loss(seed):
    target = torch.rand(2, 68, 2, **D) * 224
    _check(lambda p: landmark_loss(p, target), target.clone(), scale=3.0)
    shifted = target + torch.tensor([3.0, 4.0], **D)  # 5 px off: 25 * 68 * 2 / 2 / 68 / 2 / 50
    assert torch.isclose(landmark_loss(shifted, target), torch.tensor(0.25, **D))
    defined = torch.ones(68, dtype=torch.bool)
    defined[:17] = False
    moved = target.clone()
    moved[:, :17] += 100  # undefined points (e.g. the Surrey jaw) do not count
    assert landmark_loss(moved, target, defined) == 0


def test_mesh_smoothness(sfm, seed):
    lap = uniform_laplacian(sfm.triangles, sfm.num_vertices)
    ones = torch.ones(sfm.num_vertices, 1, **D)
    assert torch.sparse.mm(lap, ones).abs().max() < 1e-12  # rows sum to zero
    flat = torch.zeros(2, sfm.num_vertices, 3, **D) + torch.tensor([1.0, -2.0, 3.0], **D)
    assert smoothness_loss(flat, lap) < 1e-20  # constant / translated shapes are smooth
    bumpy = torch.from_numpy(sfm.mean_shape[None]).double() / 50 + 0.1 * torch.randn(1, sfm.num_vertices, 3, **D)
    smooth = torch.from_numpy(sfm.mean_shape[None]).double() / 50
    assert smoothness_loss(bumpy, lap) > 10 * smoothness_loss(smooth, lap) > 0
    # Gradients on a small strip of the mesh (gradcheck is O(V) evaluations).
    tri = torch.tensor([[0, 1, 2], [1, 3, 2], [2, 3, 4], [3, 5, 4]])
    small = uniform_laplacian(tri, 6)
    _check(lambda s: smoothness_loss(s, small), torch.zeros(1, 6, 3, **D) + 0.3)


def test_uv_smoothness(seed):
    rows, cols = torch.meshgrid(torch.arange(9, **D), torch.arange(11, **D), indexing="ij")
    plane = torch.stack([rows, cols, 2 * rows - cols])[None]  # linear in u, v: Laplacian 0
    assert uv_smoothness_loss(plane) < 1e-20
    _check(uv_smoothness_loss, plane.clone(), scale=0.1)


def test_symmetry_loss(seed):
    half = torch.rand(2, 6, 5, 3, **D)
    symmetric = torch.cat([half, half.flip(2)], 2)
    within_epsilon = symmetric + 0.02 * (torch.rand_like(symmetric) - 0.5)
    assert symmetry_loss(within_epsilon) == 0
    _check(symmetry_loss, symmetric.clone(), scale=0.5)
    # A flip map (texel -> mirror texel) gives the same as the default left-right flip.
    index = torch.arange(6 * 10).reshape(6, 10).flip(1).reshape(-1)
    noisy = symmetric + torch.randn_like(symmetric)
    assert torch.equal(flip_texture(noisy, index), flip_texture(noisy))
    assert torch.isclose(symmetry_loss(noisy, index), symmetry_loss(noisy))


def test_constant_albedo_and_white_shading(seed):
    pairs = torch.randint(0, 8, (2, 20, 2, 2))
    pairs[:, 0, 1] = (pairs[:, 0, 0] + 1) % 8  # at least one pair of distinct texels
    flat = torch.rand(2, 1, 1, 3, **D).expand(2, 8, 8, 3).clone()  # one albedo per face
    _check(lambda a: constant_albedo_loss(a, pairs), flat, scale=1.0)
    uv_mask = torch.rand(8, 8) > 0.3
    shade = torch.where(uv_mask[None, ..., None], torch.full((2, 8, 8, 3), 0.99, **D), torch.full((2, 8, 8, 3), 7.0, **D))
    assert white_shading_loss(shade, uv_mask) < 1e-24
    _check(lambda s: white_shading_loss(s, uv_mask), shade.clone(), minimum=float(white_shading_loss(shade, uv_mask)))


def test_patch_discriminator_shapes_and_receptive_field(seed):
    disc = PatchDiscriminator()
    scores = disc(torch.rand(2, 3, 224, 224) * 2 - 1)
    assert scores.shape == (2, 1, 14, 14) and scores.dtype == torch.float32
    # One patch score depends on a 65 x 65 window of the input only (eval: no batch statistics).
    disc.eval()
    image = torch.rand(1, 3, 224, 224, requires_grad=True)
    disc(image)[0, 0, 7, 7].backward()
    rows, cols = torch.nonzero(image.grad.abs().sum(1)[0], as_tuple=True)
    assert rows.max() - rows.min() + 1 <= 65 and cols.max() - cols.min() + 1 <= 65
    assert rows.max() - rows.min() + 1 > 32


def test_lsgan_losses(seed):
    ones, zeros = torch.ones(2, 1, 14, 14, **D), torch.zeros(2, 1, 14, 14, **D)
    assert lsgan_discriminator_loss(ones, zeros) == 0 and lsgan_generator_loss(ones) == 0
    _check(lambda real: lsgan_discriminator_loss(real, zeros), ones.clone())
    _check(lambda fake: lsgan_discriminator_loss(ones, fake), zeros.clone())
    _check(lsgan_generator_loss, ones.clone())
    assert torch.isclose(lsgan_discriminator_loss(zeros, zeros), torch.tensor(0.5, **D))


def test_fake_history(seed):
    history = FakeHistory(size=4, generator=torch.Generator().manual_seed(seed))
    first = torch.arange(4.0).reshape(4, 1, 1, 1).expand(4, 3, 2, 2).clone().requires_grad_(True)
    out = history.query(first)
    assert torch.equal(out, first.detach()) and not out.requires_grad and len(history) == 4
    seen_old = seen_new = 0
    for step in range(1, 30):
        new = torch.full((2, 3, 2, 2), 10.0 + step)
        out = history.query(new)
        assert out.shape == new.shape and len(history) == 4
        seen_new += int((out[:, 0, 0, 0] == 10 + step).sum())
        seen_old += int((out[:, 0, 0, 0] != 10 + step).sum())
    assert seen_old > 5 and seen_new > 5  # a mix of stored and fresh fakes
    assert torch.equal(FakeHistory(size=0).query(first), first.detach())
    with pytest.raises(ValueError):
        FakeHistory(size=-1)


def _local_albedo_by_loops(albedo, target, visible, alpha=15.0, p=0.8, weight=10.0):
    """The TPAMI'19 formula written pair by pair (float64 numpy), for the vectorised loss."""
    A, T, M = albedo.numpy(), (target.numpy() + 1) / 2, visible.numpy().astype(float)
    C = T / (T.sum(-1, keepdims=True) + 1e-6)
    total = 0.0
    for step in ((1, 0), (0, 1)):
        num = den = 0.0
        for b in range(A.shape[0]):
            for i in range(A.shape[1] - step[0]):
                for j in range(A.shape[2] - step[1]):
                    k, l = i + step[0], j + step[1]
                    w = np.exp(-alpha * np.linalg.norm(C[b, i, j] - C[b, k, l])) * M[b, i, j] * M[b, k, l]
                    d = np.sqrt(((A[b, i, j] - A[b, k, l]) ** 2).sum() + 1e-16) ** p - 1e-16 ** (p / 2)
                    num, den = num + w * d, den + w
        total += num / (den + 1e-6)
    return weight * total


def test_local_albedo_smoothness_loss(seed):
    target = torch.rand(2, 6, 7, 3, **D) * 2 - 1
    visible = torch.rand(2, 6, 7) > 0.2
    constant = torch.full((2, 6, 7, 3), 0.3, **D)
    # zero (its minimum) at any constant albedo, positive, differentiable, the formula pair by pair
    _check(lambda a: local_albedo_smoothness_loss(a, target, visible), constant, scale=0.3)
    albedo = torch.rand(2, 6, 7, 3, **D) * 2 - 1
    assert np.isclose(float(local_albedo_smoothness_loss(albedo, target, visible)),
                      _local_albedo_by_loops(albedo, target, visible), rtol=1e-10)
    # the weights are constants: no gradient reaches the ground truth
    target_grad = target.clone().requires_grad_(True)
    local_albedo_smoothness_loss(albedo.requires_grad_(True), target_grad, visible).backward()
    assert target_grad.grad is None and albedo.grad is not None and albedo.grad.abs().sum() > 0


def test_local_albedo_smoothness_is_weaker_across_chromaticity_edges():
    """An albedo edge where the ground truth changes colour costs less than the same edge where
    it does not; a change of brightness alone (shading) is no colour edge."""
    n = 8
    target = torch.full((1, n, n, 3), -0.2, **D)
    target[:, :, n // 2:] = torch.tensor([0.6, -0.6, -0.6], **D)  # reddish right half: a colour edge
    albedo_along_edge = torch.zeros(1, n, n, 3, **D)
    albedo_along_edge[:, :, n // 2:] = 0.5                        # albedo steps where the colour does
    albedo_across_edge = torch.zeros(1, n, n, 3, **D)
    albedo_across_edge[:, n // 2:] = 0.5                          # same step, orthogonal: colour is constant
    along = local_albedo_smoothness_loss(albedo_along_edge, target)
    across = local_albedo_smoothness_loss(albedo_across_edge, target)
    assert 0 < along < 0.1 * across
    # brightness: halving the ground truth's intensity keeps its chromaticity and so the loss
    darker = (target + 1) / 2 * 0.5 * 2 - 1
    assert torch.allclose(chromaticity(darker), chromaticity(target), atol=1e-5)
    assert torch.isclose(local_albedo_smoothness_loss(albedo_across_edge, darker), across, rtol=1e-4)
    # a pair with a texel outside the visible mask carries no weight: hiding the row where the
    # albedo steps leaves only equal pairs
    visible = torch.ones(1, n, n, dtype=torch.bool)
    visible[:, n // 2] = False
    assert local_albedo_smoothness_loss(albedo_across_edge, target, visible) == 0
