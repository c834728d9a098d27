"""The face mesh the renderer draws: the Nonlinear-3DMM authors' 53,215-vertex BFM topology.

Reads the authors' own files (raw `np.fromfile` arrays with MATLAB 1-based indices) and turns
them into 0-based, renderer-ready arrays. A copy ships in nl3dmm/assets (see its README for
origin and licence), so the package renders a face with no download.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

ASSETS = Path(__file__).resolve().parent / "assets"
PAPER_MESH_DIR = ASSETS / "nonlinear_3dmm"
UV_MAP_SIZE = (192, 224)  # (rows, columns) of the authors' UV texture map


@dataclass(frozen=True)
class FaceMesh:
    mean_shape: np.ndarray  # (V, 3) float32, BFM units (about micrometres)
    triangles: np.ndarray   # (F, 3) int32, 0-based
    uv: np.ndarray          # (V, 2) float32 texture coordinates (u = column, v = row) in [0, 1]
    keypoints: np.ndarray   # (68,) int64 0-based vertex ids of the iBUG-68 landmarks

    @property
    def num_vertices(self) -> int:
        return self.mean_shape.shape[0]


def _read(path: Path, dtype, count: int | None = None) -> np.ndarray:
    if not path.is_file():
        raise FileNotFoundError(f"face model file missing: {path}")
    data = np.fromfile(path, dtype=dtype)
    if count is not None and data.size != count:
        raise ValueError(f"{path}: expected {count} {np.dtype(dtype).name} values, found {data.size} "
                         "(truncated or not the authors' file?)")
    return data


def load_paper_mesh(directory: str | Path | None = None) -> FaceMesh:
    """Load mean shape, triangles, UVs and landmarks of the authors' topology.

    `directory` holds `mean_shape.npy` and the `3DMM_*.dat` / `vertices_2d_*.dat` files,
    either flat or with the `.dat` files in a `3DMM_definition/` subfolder (the layout of
    the authors' repository). Default: the copy bundled with the package.
    """
    root = Path(directory) if directory is not None else PAPER_MESH_DIR
    definition = root / "3DMM_definition" if (root / "3DMM_definition").is_dir() else root
    shape_path = root / "mean_shape.npy"
    if not shape_path.is_file():
        raise FileNotFoundError(f"face model file missing: {shape_path}")
    mean = np.load(shape_path).astype(np.float32).reshape(-1)
    if mean.size % 3:
        raise ValueError(f"{shape_path}: length {mean.size} is not a multiple of 3")
    V = mean.size // 3
    tri = _read(definition / "3DMM_tri.dat", np.int32)
    if tri.size % 3:
        raise ValueError(f"{definition / '3DMM_tri.dat'}: length {tri.size} is not a multiple of 3")
    tri = tri.reshape(3, -1).T - 1
    if tri.min() < 0 or tri.max() >= V:
        raise ValueError(f"{definition / '3DMM_tri.dat'}: vertex ids outside 1..{V}")
    rows = _read(definition / "vertices_2d_u.dat", np.float32, V)
    cols = _read(definition / "vertices_2d_v.dat", np.float32, V)
    # 1-based texel index k is the centre of texel k - 1, i.e. at (k - 0.5) / size.
    uv = np.stack([(cols - 0.5) / UV_MAP_SIZE[1], (rows - 0.5) / UV_MAP_SIZE[0]], 1)
    keypoints = _read(definition / "3DMM_keypoints.dat", np.int32, 68).astype(np.int64) - 1
    return FaceMesh(mean.reshape(V, 3), np.ascontiguousarray(tri, dtype=np.int32),
                    uv.astype(np.float32), keypoints)


def vertex_normals(vertices: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """Area-weighted unit vertex normals, oriented like the triangles' winding."""
    v = vertices.astype(np.float64)
    a, b, c = v[triangles[:, 0]], v[triangles[:, 1]], v[triangles[:, 2]]
    face = np.cross(b - a, c - a)
    normals = np.zeros_like(v)
    for k in range(3):
        np.add.at(normals, triangles[:, k], face)
    length = np.linalg.norm(normals, axis=1, keepdims=True)
    return normals / np.maximum(length, 1e-30)
