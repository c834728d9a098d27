"""The full render: the paper's mean face on a real photo through m (after the resize to 224),
texture lookups landing on the right texels, compositing, and gradients to texture, vertices
and m."""
from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from nl3dmm.face.camera import pose_para_to_m, project_m, resize_m
from nl3dmm.data import read_sample
from nl3dmm.face.rendering import render_face
from nl3dmm.face.facemodel import load_paper_mesh, load_surrey_model

SIZE = 224


def test_mean_face_on_a_real_photo_at_224(shared_data):
    sample = read_sample(shared_data / "prnet" / "aflw2000" / "image02616")
    mesh = load_paper_mesh()
    photo = np.asarray(Image.fromarray(sample.image).resize((SIZE, SIZE), Image.BILINEAR))
    background = torch.from_numpy(photo[None].astype(np.float32) / 127.5 - 1)
    m = torch.from_numpy(resize_m(sample.m, (450, 450), (SIZE, SIZE)))[None].float().requires_grad_(True)
    vertices = torch.from_numpy(mesh.mean_shape[None]).requires_grad_(True)
    out = render_face(vertices, m, torch.full((1, 192, 224, 3), 0.5), mesh.triangles, mesh.uv, SIZE, background)
    mask = out["mask"][0]
    assert 0.1 < float(mask.mean()) < 0.6
    # The inner 51 labelled landmarks (resized) fall on the rendered face.
    landmarks = sample.landmarks[17:] * SIZE / 450
    cells = np.clip(np.floor(landmarks).astype(int), 0, SIZE - 1)
    assert mask[cells[:, 1], cells[:, 0]].mean() > 0.95
    # Composite: texture colour on the mask, the photo elsewhere, untouched.
    on = mask > 0
    assert torch.allclose(out["image"][0][on], torch.tensor(0.5))
    assert torch.equal(out["image"][0][~on], background[0][~on])
    # Gradients reach the texture (only texels the face uses), the vertices and m (through
    # the texture's variation under each pixel: a constant texture gives m no signal).
    texture = (torch.rand(1, 192, 224, 3) * 2 - 1).requires_grad_(True)
    out = render_face(vertices, m, texture, mesh.triangles, mesh.uv, SIZE, background)
    (out["image"] * torch.randn_like(out["image"])).sum().backward()
    assert torch.isfinite(texture.grad).all() and 0.05 < float((texture.grad != 0).float().mean()) < 0.9
    assert torch.isfinite(m.grad).all() and float(m.grad.abs().sum()) > 0
    assert torch.isfinite(vertices.grad).all() and float((vertices.grad.abs().sum(-1) > 0).float().mean()) > 0.1


def test_texture_lookup_lands_on_the_vertex_uv(seed):
    """A texture that encodes (u, v) renders, at each visible vertex's pixel, that vertex's
    own UV (to within the UV change across the pixel)."""
    sfm = load_surrey_model()
    rng = np.random.default_rng(seed)
    v = sfm.mean_shape.astype(np.float64)
    scale = 0.8 * SIZE / np.ptp(v[:, :2], axis=0).max()
    centre = v[:, :2].mean(0)
    pose = [*rng.uniform(-0.3, 0.3, 3), SIZE / 2 + 0.5 - scale * centre[0], SIZE / 2 + 0.5 - scale * centre[1], 0, scale]
    m = pose_para_to_m(pose)
    Ht, Wt = 256, 256
    rows, cols = torch.meshgrid((torch.arange(Ht) + 0.5) / Ht, (torch.arange(Wt) + 0.5) / Wt, indexing="ij")
    texture = torch.stack([cols, rows, torch.zeros_like(rows)], -1)[None].double()
    out = render_face(torch.from_numpy(v)[None], torch.from_numpy(m)[None], texture, sfm.triangles, sfm.uv.astype(np.float64), SIZE)
    image, rast = out["image"][0], out["rast"][0]
    points = project_m(v, m, SIZE)
    cells = np.floor(points).astype(int)
    inside = (cells >= 0).all(1) & (cells < SIZE).all(1)
    cells = cells[inside]
    uv = sfm.uv[inside]
    covered = rast[cells[:, 1], cells[:, 0], 3].numpy() > 0
    rendered = image[cells[:, 1], cells[:, 0], :2].numpy()
    err = np.abs(rendered - uv).max(1)[covered]
    # UV change across a pixel: the map's scale is about 1 / (face size in pixels) per pixel.
    assert covered.mean() > 0.5
    assert np.median(err) < 0.01 and np.mean(err < 0.02) > 0.8
