"""Textured Wavefront OBJ + MTL + PNG of a face mesh, readable by trimesh, MeshLab and Blender.

Conventions of the files (and why):
* one `vt` per vertex with the same index as its `v` (the model's UV is per vertex), so
  `f a/a b/b c/c`; readers that split vertices by UV keep the count unchanged;
* OBJ texture coordinates have v = 0 at the *bottom* of the image, our UVs at the top
  (facemodel.py), so vt = (u, 1 - v);
* our triangles are wound inward (facemodel.py); OBJ readers take counter-clockwise as the
  outside, so each face is written as (a, c, b) and viewers light the face's outer side.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def texture_to_uint8(texture: np.ndarray) -> np.ndarray:
    """(H, W, 3) texture in [-1, 1] -> uint8 RGB."""
    return np.clip(np.round((np.asarray(texture, dtype=np.float64) + 1.0) * 127.5), 0, 255).astype(np.uint8)


def _rows(fmt: str, array: np.ndarray) -> str:
    return "".join(fmt % tuple(row) for row in array)


def write_textured_obj(obj_path: str | Path, vertices: np.ndarray, triangles: np.ndarray, uv: np.ndarray,
                       texture_rgb: np.ndarray, material: str = "face") -> dict[str, Path]:
    """Write `obj_path`, the .mtl beside it (same stem) and `<stem>_texture.png`.
    vertices (V, 3); triangles (F, 3) 0-based, inward-wound; uv (V, 2) with v down; texture_rgb
    (H, W, 3) uint8. Returns the three paths."""
    obj_path = Path(obj_path)
    vertices, triangles, uv = np.asarray(vertices), np.asarray(triangles), np.asarray(uv)
    if vertices.ndim != 2 or vertices.shape[1] != 3 or uv.shape != (len(vertices), 2):
        raise ValueError(f"vertices (V, 3) and uv (V, 2) expected, got {vertices.shape} and {uv.shape}")
    if triangles.ndim != 2 or triangles.shape[1] != 3 or triangles.min() < 0 or triangles.max() >= len(vertices):
        raise ValueError(f"triangles must be (F, 3) vertex ids below {len(vertices)}")
    texture_rgb = np.asarray(texture_rgb)
    if texture_rgb.ndim != 3 or texture_rgb.shape[2] != 3 or texture_rgb.dtype != np.uint8:
        raise ValueError(f"texture must be (H, W, 3) uint8, got {texture_rgb.shape} {texture_rgb.dtype}")
    obj_path.parent.mkdir(parents=True, exist_ok=True)
    mtl_path = obj_path.with_suffix(".mtl")
    png_path = obj_path.with_name(f"{obj_path.stem}_texture.png")
    Image.fromarray(texture_rgb).save(png_path)
    mtl_path.write_text(f"newmtl {material}\nKa 1.0 1.0 1.0\nKd 1.0 1.0 1.0\nKs 0.0 0.0 0.0\nillum 1\n"
                        f"map_Kd {png_path.name}\n")
    vt = np.stack([uv[:, 0], 1.0 - uv[:, 1]], 1)
    faces = triangles[:, [0, 2, 1]] + 1  # outward winding, 1-based
    with open(obj_path, "w") as file:
        file.write(f"# nl3dmm reconstruction: {len(vertices)} vertices, {len(faces)} triangles\n")
        file.write(f"mtllib {mtl_path.name}\n")
        file.write(_rows("v %.6g %.6g %.6g\n", vertices))
        file.write(_rows("vt %.6f %.6f\n", vt))
        file.write(f"usemtl {material}\n")
        file.write(_rows("f %d/%d %d/%d %d/%d\n", np.repeat(faces, 2, axis=1)))
    return {"obj": obj_path, "mtl": mtl_path, "texture": png_path}
