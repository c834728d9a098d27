"""The demo render: the authors' mean face posed by a real AFLW2000-3D label and drawn over
the photo with our rasterize -> interpolate -> sample_texture chain.

Until a model is trained (issues 5 and 6) there is no learned texture, so the face wears a
UV grid texture, shaded by interpolated vertex normals: the grid shows that UVs are
interpolated and sampled correctly, the shading shows depth order and culling.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.io as sio
import torch
from PIL import Image

from ..face.camera import image_to_clip, pose_rotation, project_pose_para
from ..face.facemodel import ASSETS, FaceModel, load_paper_mesh, vertex_normals
from ..render import interpolate, rasterize, sample_texture

DEFAULT_SAMPLE = ASSETS / "aflw2000" / "image02616"


def uv_grid_texture(height: int = 192, width: int = 224, cells: int = 16) -> torch.Tensor:
    """(1, H, W, 3) texture: hue from u, v with a dark grid every `cells` texels."""
    v, u = torch.meshgrid(torch.linspace(0, 1, height), torch.linspace(0, 1, width), indexing="ij")
    rgb = torch.stack([0.55 + 0.4 * u, 0.45 + 0.3 * v, 0.85 - 0.4 * u], -1)
    rows = (torch.arange(height) % cells == 0).view(-1, 1)
    cols = (torch.arange(width) % cells == 0).view(1, -1)
    rgb[rows | cols] *= 0.35
    return rgb[None]


def load_sample(stem: Path) -> tuple[np.ndarray, np.ndarray]:
    """(RGB image uint8, Pose_Para (7,)) of an AFLW2000-3D / 300W-LP sample `stem`.{jpg,mat}."""
    image_path, label_path = stem.with_suffix(".jpg"), stem.with_suffix(".mat")
    try:
        image = np.asarray(Image.open(image_path).convert("RGB"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot read image {image_path}: {exc}") from exc
    try:
        label = sio.loadmat(label_path)
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot read label file {label_path}: {exc}") from exc
    if "Pose_Para" not in label:
        raise ValueError(f"{label_path} has no 'Pose_Para' key (keys: {sorted(k for k in label if not k.startswith('__'))})")
    return image, np.asarray(label["Pose_Para"], dtype=np.float64).reshape(-1)


def render_posed_mean_face(mesh: FaceModel, pose_para: np.ndarray, height: int, width: int,
                backend: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(shaded RGB float image (H, W, 3), coverage mask (H, W)) of the posed mesh."""
    points = project_pose_para(mesh.mean_shape, pose_para, height)
    clip = image_to_clip(torch.from_numpy(points)[None], height, width).float()
    tri = torch.from_numpy(mesh.triangles)
    rast = rasterize(clip, tri, (height, width), cull_backfaces=True, backend=backend)
    uv = interpolate(torch.from_numpy(mesh.uv), rast, tri, backend=backend)
    albedo = sample_texture(uv_grid_texture(), uv, backend=backend)
    # Outward normals, rotated into the camera frame; light comes from the camera.
    normals = -vertex_normals(mesh.mean_shape, mesh.triangles) @ pose_rotation(*pose_para[:3]).T
    n = interpolate(torch.from_numpy(normals.astype(np.float32)), rast, tri, backend=backend)
    n = n / n.norm(dim=-1, keepdim=True).clamp(min=1e-8)
    shade = 0.25 + 0.75 * n[..., 2:3].clamp(min=0)
    mask = rast[..., 3] > 0
    return (albedo * shade)[0].numpy(), mask[0].numpy()


def render_demo(sample: Path = DEFAULT_SAMPLE, out: Path = Path("out/mean_face.png"),
                backend: str | None = None) -> Path:
    """Write a three-panel PNG: photo | mean face render | render over the photo."""
    image, pose = load_sample(sample)
    mesh = load_paper_mesh()
    height, width = image.shape[:2]
    shaded, mask = render_posed_mean_face(mesh, pose, height, width, backend)
    photo = image.astype(np.float32) / 255.0
    render_panel = np.where(mask[..., None], shaded, 1.0)
    overlay = np.where(mask[..., None], 0.65 * shaded + 0.35 * photo, photo)
    panels = np.concatenate([photo, render_panel, overlay], axis=1)
    out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((panels.clip(0, 1) * 255).round().astype(np.uint8)).save(out)
    return out
