"""Pictures of training: rows of input | render | shape shading | texture, as a PNG and for
TensorBoard."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..face.camera import image_to_clip, project_m_with_depth
from ..render import interpolate, rasterize
from ..face.shading import m_rotation, vertex_normals


@torch.no_grad()
def shape_shading(vertices: torch.Tensor, m: torch.Tensor, triangles: torch.Tensor, size: int) -> torch.Tensor:
    """(B, H, W, 3) grey Lambertian rendering of the shapes seen through m, light from the camera."""
    points = project_m_with_depth(vertices.float(), m.float(), size)
    rast = rasterize(image_to_clip(points, size, size), triangles, (size, size), cull_backfaces=True)
    # z of the outward normal in the camera frame: how much a surface faces the viewer.
    normals = vertex_normals(vertices.float(), triangles) @ m_rotation(m.float()).transpose(1, 2)
    shade = interpolate(normals[..., 2:3].contiguous(), rast, triangles).clamp(min=0)
    grey = 0.15 + 0.85 * shade
    return torch.where(rast[..., 3:] > 0, grey, torch.ones_like(grey)).expand(-1, -1, -1, 3)


def grid(rows: list[list[torch.Tensor]], height: int = 160) -> np.ndarray:
    """Rows of (H, W, 3) images in [0, 1] -> one uint8 picture; each resized to `height`."""
    out_rows = []
    for row in rows:
        cells = []
        for image in row:
            t = image.detach().float().clamp(0, 1).permute(2, 0, 1)[None]
            width = max(1, round(t.shape[3] * height / t.shape[2]))
            cells.append(F.interpolate(t, size=(height, width), mode="bilinear", align_corners=False)[0])
        out_rows.append(torch.cat(cells, 2))
    widest = max(r.shape[2] for r in out_rows)
    out_rows = [F.pad(r, (0, widest - r.shape[2]), value=1.0) for r in out_rows]
    return (torch.cat(out_rows, 1).permute(1, 2, 0).cpu().numpy() * 255).round().astype(np.uint8)


def reconstruction_grid(model, out: dict[str, torch.Tensor], batch: dict[str, torch.Tensor], count: int = 4) -> np.ndarray:
    n = min(count, batch["image_hwc"].shape[0])
    with torch.no_grad():
        rendered = model.render({k: out[k][:n].float() for k in ("vertices", "m", "texture")},
                                background=batch["image_hwc"][:n])
        shading = shape_shading(out["vertices"][:n], out["m"][:n], model.triangles, model.config.image_size)
    to01 = lambda t: (t.float() + 1) / 2  # noqa: E731
    rows = [[to01(batch["image_hwc"][i]), to01(rendered["image"][i]), shading[i], to01(out["texture"][i])]
            for i in range(n)]
    return grid(rows)


def save_png(picture: np.ndarray, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(picture).save(path)
    return path
