"""The networks: output shapes and dtypes of both configurations on the small Surrey model, the
paper-size shape decoder, initial outputs at the model's statistics, gradients to every part,
the UV sampling convention, SH shading, and the parameter summary."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from nl3dmm.face.camera import pose_para_to_m, pose_rotation
from nl3dmm.face.facemodel import vertex_normals as numpy_normals
from nl3dmm.model.networks import (CONFIGS, MLPShapeDecoder, build_model, count_parameters, parameter_summary,
                             sample_uv_map)
from nl3dmm.face.shading import m_rotation, sh_shading, vertex_normals, white_light


@pytest.mark.parametrize("name", ["cvpr18", "tpami19"])
def test_forward_shapes_dtypes_and_gradients(name, sfm, seed):
    model = build_model(name, sfm)
    image = torch.rand(2, 3, 224, 224) * 2 - 1
    out = model(image)
    Q = sfm.num_vertices
    tex = CONFIGS[name].texture_size
    expected = {"m": (2, 8), "m_normalized": (2, 8), "shape_code": (2, 160), "texture_code": (2, 160),
                "vertices": (2, Q, 3), "shape_normalized": (2, Q, 3), "texture": (2, *tex, 3)}
    if name == "tpami19":
        expected.update({"lighting": (2, 27), "albedo": (2, 192, 224, 3), "shade": (2, 192, 224, 3),
                         "shape_uv": (2, 3, 192, 224)})
        assert out["uv_mask"].shape == (192, 224) and 0.5 < out["uv_mask"].float().mean() < 0.95
    for key, shape in expected.items():
        assert tuple(out[key].shape) == shape, key
        assert out[key].dtype == torch.float32 and torch.isfinite(out[key]).all(), key
    assert out["albedo" if name == "tpami19" else "texture"].abs().max() <= 1  # tanh
    # Small N(0, 0.02) weights: an untrained model answers near the statistics, i.e. the mean
    # face seen through the mean camera.
    assert out["m_normalized"].abs().max() < 1.0
    assert torch.allclose(out["m"], out["m_normalized"] * model.m_std + model.m_mean)
    assert (out["vertices"] - torch.from_numpy(sfm.mean_shape)).abs().max() < 3 * float(sfm.std_shape.max())
    assert torch.allclose(model.normalize_shape(out["vertices"]), out["shape_normalized"], atol=1e-4)
    assert torch.allclose(model.normalize_m(out["m"]), out["m_normalized"], atol=1e-5)
    if name == "tpami19":
        shade = out["shade"][:, out["uv_mask"]]
        assert (shade - 1).abs().max() < 0.2  # ambient white light at init
    loss = out["texture"].square().mean() + out["vertices"].square().mean() * 1e-4 + out["m"].square().mean()
    loss.backward()
    for part in ("encoder", "shape_decoder", "texture_decoder"):
        grads = [p.grad for p in getattr(model, part).parameters()]
        assert all(g is not None and torch.isfinite(g).all() for g in grads), part
        assert sum(float(g.abs().sum()) for g in grads) > 0, part


def test_reconstruction_loss_trains_every_part_through_the_render(sfm, seed):
    """End to end: image -> model -> render over the image -> reconstruction loss; the loss
    reaches the encoder and both decoders."""
    from nl3dmm.model.losses import reconstruction_loss
    model = build_model("cvpr18", sfm)
    image = torch.rand(2, 3, 224, 224) * 2 - 1
    out = model(image)
    background = image.permute(0, 2, 3, 1)
    rendered = model.render(out, background)
    assert rendered["image"].shape == (2, 224, 224, 3) and 0.05 < float(rendered["mask"].mean()) < 0.9
    loss = reconstruction_loss(rendered["image"], background, rendered["mask"])
    assert float(loss.detach()) > 0
    loss.backward()
    for part in ("encoder", "shape_decoder", "texture_decoder"):
        assert sum(float(p.grad.abs().sum()) for p in getattr(model, part).parameters() if p.grad is not None) > 0, part


def test_eval_mode_single_image_and_bad_input(sfm):
    model = build_model("cvpr18", sfm).eval()
    with torch.no_grad():
        out = model(torch.zeros(1, 3, 224, 224))
    assert out["vertices"].shape == (1, sfm.num_vertices, 3)
    with pytest.raises(ValueError, match=r"image must be \(B, 3, 224, 224\)"):
        model(torch.zeros(1, 3, 200, 200))
    with pytest.raises(ValueError, match="unknown network configuration"):
        build_model("cvpr17", sfm)


def test_paper_size_shape_decoder(paper, seed):
    """The MLP decoder at the paper's Q = 53,215: 160 -> 1000 -> 159,645."""
    decoder = MLPShapeDecoder(paper)
    assert count_parameters(decoder) == (160 * 1000 + 1000) + 2 * 1000 + (1000 * 159645 + 159645)
    with torch.no_grad():
        out = decoder(torch.randn(2, 160))
    assert out["vertices"].shape == (2, 53215, 3) and out["vertices"].dtype == torch.float32
    assert torch.allclose(out["vertices"], out["shape_normalized"] * torch.from_numpy(paper.std_shape)
                          + torch.from_numpy(paper.mean_shape), atol=1.0)


def test_uv_sampling_convention(sfm):
    """A map whose value is the texel-centre column (c + 0.5) and row (r + 0.5) samples to
    u * W and v * H at every vertex inside the map."""
    H, W = 192, 224
    rows, cols = torch.meshgrid(torch.arange(H) + 0.5, torch.arange(W) + 0.5, indexing="ij")
    maps = torch.stack([cols, rows])[None].double()
    uv = torch.from_numpy(sfm.uv).double()
    sampled = sample_uv_map(maps, (uv * 2 - 1).reshape(1, 1, -1, 2))[0]
    inside = ((uv[:, 0] * W > 0.5) & (uv[:, 0] * W < W - 0.5) & (uv[:, 1] * H > 0.5) & (uv[:, 1] * H < H - 0.5))
    assert inside.float().mean() > 0.9
    assert torch.allclose(sampled[inside], uv[inside] * torch.tensor([W, H]).double(), atol=1e-6)


def test_normals_rotation_and_sh_shading(paper, seed):
    v = torch.from_numpy(paper.mean_shape[None].astype(np.float64))
    tri = torch.from_numpy(paper.triangles)
    assert torch.allclose(vertex_normals(v, tri)[0], -torch.from_numpy(numpy_normals(paper.mean_shape, paper.triangles)),
                          atol=1e-6)
    pose = np.r_[np.random.default_rng(seed).uniform(-0.8, 0.8, 3), 100, 120, 0, 1e-3]
    R = m_rotation(torch.from_numpy(pose_para_to_m(pose))[None])[0].numpy()
    assert np.allclose(R, pose_rotation(*pose[:3]), atol=1e-9)
    # Outward normals of a frontal face point at the camera: most have z > 0.
    assert (vertex_normals(v, tri)[0, :, 2] > 0).double().mean() > 0.6
    # SH: ambient light is flat; a first-order z light shades like n_z (Lambert's cosine).
    normals = torch.nn.functional.normalize(torch.randn(2, 50, 3, dtype=torch.float64), dim=-1)
    assert torch.allclose(sh_shading(normals, white_light(2, 0.7, torch.float64)), torch.full((2, 50, 3), 0.7,
                                                                                              dtype=torch.float64))
    light = torch.zeros(2, 3, 9, dtype=torch.float64)
    light[:, :, 1] = 1
    shade = sh_shading(normals, light.reshape(2, 27))
    ratio = shade / normals[..., 2:3]
    assert torch.allclose(ratio, ratio[0, 0, 0].expand_as(ratio))


def test_parameter_summary(sfm):
    model = build_model("cvpr18", sfm)
    text = parameter_summary(model)
    print(text)
    assert "cvpr18" in text and "Surrey" in text
    total = count_parameters(model)
    assert f"{total:,d}" in text.splitlines()[-1]
    parts = [count_parameters(getattr(model, p)) for p in ("encoder", "shape_decoder", "texture_decoder")]
    assert sum(parts) == total
    # The shape MLP's output layer dominates: 1000 x 3Q weights + 3Q biases.
    assert parts[1] == 161000 + 2000 + 1001 * 3 * sfm.num_vertices
