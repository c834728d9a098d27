"""Representation-power experiment: both models' code fits lower the error from code 0, on
held-out source photos of the bundled store, and the report and plot are written. The shape
half runs on a basis built from the Surrey Face Model's real PCA (the BFM cannot ship), and its
linear number is checked against an independent numpy computation."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from nl3dmm.face.bfm import BFMBasis
from nl3dmm.cli import main
from nl3dmm.data import default_store
from nl3dmm.data.loader import TrainingStore
from nl3dmm.model.networks import MLPShapeDecoder, TextureDecoder
from nl3dmm.tasks.representation import (fill_invisible, run_experiment, run_shape_experiment, save_bar_plot,
                                   save_shape_bar_plot, texture_targets)


def _responsive_decoder() -> TextureDecoder:
    """A small decoder whose output depends on its code. The authors' N(0, 0.02) init shrinks the
    signal through 14 layers until the code barely matters (an untrained model cannot fit
    anything), so the fitting machinery is tested on a He-initialised one."""
    torch.manual_seed(0)
    decoder = TextureDecoder(160, (128, 128), base=8, upsamplings=4)
    for module in decoder.modules():
        if isinstance(module, (nn.ConvTranspose2d, nn.Linear)):
            nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
    with torch.no_grad():
        decoder.decoder.layers[-1].weight.mul_(0.1)  # keep tanh out of saturation
    return decoder


def test_both_fits_reduce_the_error_on_held_out_photos(tmp_path):
    store = TrainingStore(default_store())
    sources = store.sources()
    assert len(sources) == len(store) and len(set(sources)) == 17
    result = run_experiment(_responsive_decoder(), store, 160, components=5, targets=1, steps=15)
    assert result.target_samples == 4 and result.pca_samples == 64   # 2 copies + 2 flips per photo
    assert result.target_photos == [list(dict.fromkeys(sources))[-1]]
    assert result.linear_fitted < 0.8 * result.linear_initial
    assert result.nonlinear_fitted < 0.95 * result.nonlinear_initial
    plot = save_bar_plot(result, tmp_path / "bars.png")
    assert Image.open(plot).size[0] > 100


def test_fill_invisible_uses_the_mean_of_visible_texels():
    textures = torch.tensor([[[[1.0]]], [[[3.0]]], [[[0.0]]]]).expand(3, 1, 1, 3)  # (3, 1, 1, 3)
    visible = torch.tensor([[[1.0]], [[1.0]], [[0.0]]])
    filled = fill_invisible(textures, visible)
    assert filled[2, 0, 0, 0] == 2.0 and filled[0, 0, 0, 0] == 1.0


def test_targets_are_resized_with_the_training_rule():
    store = TrainingStore(default_store())
    target, visible = texture_targets(store, np.arange(2), (96, 112))  # exactly half of 192 x 224
    full, full_visible = texture_targets(store, np.arange(2), (192, 224))
    blocks = full_visible.reshape(2, 96, 2, 112, 2).amin((2, 4))
    assert torch.equal(visible, blocks)
    np.testing.assert_allclose(target.numpy(), full.reshape(2, 96, 2, 112, 2, 3).mean((2, 4)).numpy(), atol=1e-6)


def test_represent_command(tmp_path, untrained_checkpoint, capsys):
    out = tmp_path / "rep"
    assert main(["represent", "--ckpt", str(untrained_checkpoint), "--out", str(out), "--k", "4",
                 "--targets", "1", "--steps", "3"]) == 0
    printed = capsys.readouterr().out
    assert "linear (PCA, k = 4)" in printed
    saved = json.loads((out / "representation.json").read_text())
    assert saved["texture"]["components"] == 4
    assert saved["paper"]["texture_l1"] == {"nonlinear": 0.0196, "linear": 0.0241}
    assert "shape" not in saved and (out / "representation.png").is_file()


# --------------------------------------------------------------------------- shape half

def surrey_basis(sfm) -> BFMBasis:
    """A 300W-LP-style basis on the Surrey mesh: its real PCA components, scaled so that the
    store's raw Shape_Para / Exp_Para (about 1e5 / 0.3) move the face by its real standard
    deviations. Components 0-39 play identity, 40-49 expression."""
    store = TrainingStore(default_store())
    every = np.arange(len(store))
    typical_shape = np.abs(store.gather("shape_para", every)[:, :40]).mean(0)
    typical_exp = np.abs(store.gather("exp_para", every)[:, :10]).mean(0)
    columns = sfm.basis * np.sqrt(sfm.eigenvalues)
    return BFMBasis(sfm.mean_shape.reshape(-1).astype(np.float32),
                    (columns[:, :40] / typical_shape).astype(np.float32),
                    (0.5 * columns[:, 40:50] / typical_exp).astype(np.float32), source="Surrey PCA (test)")


def _responsive_shape_decoder(sfm) -> MLPShapeDecoder:
    """An MLP decoder whose outputs move along the Surrey model's real components (random mixes
    of the first 50), as a trained decoder's would; a random output layer would point its
    offsets in random per-vertex directions that no face takes."""
    torch.manual_seed(0)
    decoder = MLPShapeDecoder(sfm, 160, hidden=64)
    nn.init.kaiming_normal_(decoder.hidden[0].weight)
    directions = torch.from_numpy(sfm.basis[:, :50] * np.sqrt(sfm.eigenvalues[:50])).float()
    with torch.no_grad():
        decoder.out.weight.copy_(directions / decoder.std.reshape(-1, 1) @ torch.randn(50, 64) / 8)
        decoder.out.bias.zero_()
    return decoder


def test_shape_fits_reduce_the_error_and_the_linear_number_is_independent(sfm, tmp_path):
    store = TrainingStore(default_store())
    basis = surrey_basis(sfm)
    decoder = _responsive_shape_decoder(sfm)
    result = run_shape_experiment(decoder, store, basis, 160, sfm.landmarks, sfm.units_per_mm, components=5,
                                  targets=3, steps=60, lr=0.1)
    assert result.target_shapes == 3 and result.pca_shapes == 14  # one shape per photo
    assert result.nonlinear_fitted < 0.9 * result.nonlinear_initial
    assert result.linear_fitted < 0.9 * result.linear_initial
    assert 0 < result.linear_fitted_iod < 100 * result.linear_fitted / 50  # IOD of a face > 50 mm
    assert Image.open(save_shape_bar_plot(result, tmp_path / "shape.png")).size[0] > 100

    # the same linear number from numpy: PCA of the other photos' shapes, least squares weighted
    # by 1 / std^2 (the decoder's loss), mean vertex distance in mm (Surrey units are mm)
    sources = np.array(store.sources())
    photos = list(dict.fromkeys(sources))
    first = [int(np.flatnonzero(sources == p)[0]) for p in photos]
    sp = store.gather("shape_para", np.array(first))[:, :40].astype(np.float64)
    ep = store.gather("exp_para", np.array(first))[:, :10].astype(np.float64)
    shapes = basis.mean + sp @ basis.shape_basis.T.astype(np.float64) + ep @ basis.exp_basis.T.astype(np.float64)
    train, target = shapes[:-3], shapes[-3:]
    mean = train.mean(0)
    components = np.linalg.svd(train - mean, full_matrices=False)[2][:5].T
    w = 1.0 / decoder.std.double().numpy().reshape(-1)
    fitted = []
    for t in target:
        code = np.linalg.lstsq(components * w[:, None], (t - mean) * w, rcond=None)[0]
        fitted.append(mean + components @ code)
    distance = np.linalg.norm((np.array(fitted) - target).reshape(3, -1, 3), axis=-1).mean()
    assert np.isclose(result.linear_fitted, distance, rtol=1e-4), (result.linear_fitted, distance)
    initial = np.linalg.norm((mean - target).reshape(3, -1, 3), axis=-1).mean()
    assert np.isclose(result.linear_initial, initial, rtol=1e-4)


def test_represent_shape_needs_a_basis_and_writes_both_halves(tmp_path, untrained_checkpoint, sfm, capsys):
    out = tmp_path / "rep"
    args = ["represent", "--ckpt", str(untrained_checkpoint), "--out", str(out), "--k", "3", "--targets", "1",
            "--steps", "2"]
    assert main(args + ["--part", "shape"]) == 2
    assert "--basis" in capsys.readouterr().err
    basis_path = surrey_basis(sfm).save(tmp_path / "basis.npz")
    assert main(args + ["--part", "both", "--basis", str(basis_path)]) == 0
    printed = capsys.readouterr().out
    assert "mm fitted" in printed and "linear (PCA, k = 3)" in printed
    saved = json.loads((out / "representation.json").read_text())
    assert saved["shape"]["target_shapes"] == 1 and saved["texture"]["target_samples"] == 4
    assert (out / "representation_shape.png").is_file() and (out / "representation.png").is_file()


def test_shape_basis_must_match_the_decoder(sfm, paper):
    wrong = BFMBasis(paper.mean_shape.reshape(-1), np.zeros((paper.num_vertices * 3, 2), np.float32))
    with pytest.raises(ValueError, match="vertices"):
        run_shape_experiment(_responsive_shape_decoder(sfm), default_store(), wrong, 160, sfm.landmarks,
                             sfm.units_per_mm)


class _Views:
    """Just what TrainingStore.faces reads: records, and labels where views share parameters
    (as 300W-LP's synthesized views of one photo do)."""

    fields = ["shape_para", "exp_para"]
    root = "views"
    faces = TrainingStore.faces
    select_sources = TrainingStore.select_sources

    def __init__(self):
        self.records = ["IBUG/a_1_0", "IBUG/a_1_0", "IBUG/a_1_1", "IBUG/b_1_0", "IBUG/a_1_2"]
        self.params = np.array([[1.0, 2.0], [1.0, 2.0], [1.0, 2.0], [3.0, 4.0], [1.0, 2.0]], np.float32)

    def __len__(self):
        return len(self.records)

    def sources(self):
        return list(self.records)

    def gather(self, field, indices):
        return self.params[indices][:, :1] if field == "shape_para" else self.params[indices][:, 1:]


def test_synthesized_views_of_one_face_are_held_out_together():
    from nl3dmm.tasks.representation import split_faces

    faces = _Views().faces()
    assert list(faces) == ["IBUG/a_1_0"] * 3 + ["IBUG/b_1_0", "IBUG/a_1_0"]
    _, held_out, is_target = split_faces(_Views(), 1)
    assert held_out == ["IBUG/b_1_0"] and list(is_target) == [False, False, False, True, False]
    # excluding one view from training excludes its face's other views too
    assert list(_Views().select_sources(["a_1_1"])) == [3]
    assert list(_Views().select_sources(["IBUG/b_1_0"])) == [0, 1, 2, 4]
