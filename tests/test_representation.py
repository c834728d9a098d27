"""Representation-power experiment: both models' code fits lower the error from code 0, on
held-out source photos of the bundled store, and the report and plot are written."""
from __future__ import annotations

import json

import numpy as np
import torch
from PIL import Image
from torch import nn

from nl3dmm.cli import main
from nl3dmm.data import default_store
from nl3dmm.data.loader import TrainingStore
from nl3dmm.networks import TextureDecoder
from nl3dmm.representation import (fill_invisible, run_experiment, sample_sources, save_bar_plot,
                                   texture_targets)


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
    sources = sample_sources(store)
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
    assert saved["components"] == 4 and saved["paper"] == {"nonlinear": 0.0196, "linear": 0.0241}
    assert (out / "representation.png").is_file()
