"""Face model definitions: one `FaceModel` interface for every mesh topology the package uses.

Two loaders fill it:

* `load_paper_mesh`: the Nonlinear-3DMM authors' 53,215-vertex BFM topology (their raw
  `np.fromfile` arrays with MATLAB 1-based indices, turned into 0-based arrays) plus their
  normalisation statistics (per-coordinate shape std, mean/std of the camera m);
* `load_surrey_model`: the Surrey Face Model (eos `sfm_shape_3448.bin`, a cereal binary), a
  real linear 3DMM of 3,448 vertices: mean, orthonormal PCA basis, eigenvalues, triangles
  and UVs. It is the small model the fast tests run on, and proves the code does not assume
  the paper's topology.

Copies of both ship in nl3dmm/assets (see its README for origin and licence), so the package
works with no download.

Conventions shared by every FaceModel (checked by the tests on both models):
* model axes: x towards the subject's left, y up, z out of the face (towards a frontal camera);
* `triangles` are 0-based and wound like the BFM files: `cross(b - a, c - a)` points *into*
  the head (`vertex_normals` therefore returns inward normals; negate them for shading). The
  render chain (`image_to_clip` + `rasterize(cull_backfaces=True)`) keeps the visible side with
  this winding, so models with the other winding are re-wound on load;
* `uv` is (u = column, v = row) with v = 0 at the top of the texture (forehead up), in [0, 1]
  except for 86 neck/ear vertices of the paper mesh that lie outside the authors' UV map
  (texture lookups clamp them to its edge);
* `landmarks` are the 68 iBUG points (0-based, iBUG order); a model that does not define a point
  has -1 there (`landmark_mask` says which are defined).
"""
from __future__ import annotations

import struct
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ASSETS = Path(__file__).resolve().parents[1] / "assets"
PAPER_MESH_DIR = ASSETS / "nonlinear_3dmm"
SURREY_DIR = ASSETS / "sfm"
UV_MAP_SIZE = (192, 224)  # (rows, columns) of the authors' UV texture map
NUM_LANDMARKS = 68


@dataclass(frozen=True, eq=False)
class FaceModel:
    """A face mesh topology with its statistics. Arrays are numpy; see the module docstring
    for the axis, winding, UV and landmark conventions."""

    mean_shape: np.ndarray                 # (V, 3) float32, in `units`
    triangles: np.ndarray                  # (F, 3) int32, 0-based
    uv: np.ndarray                         # (V, 2) float32 (u = column, v = row), [0, 1] but see above
    landmarks: np.ndarray | None           # (68,) int64 vertex ids, -1 = not defined
    name: str = "face model"
    units: str = "unknown"
    std_shape: np.ndarray | None = None    # (V, 3) float32 per-coordinate std of the shape
    basis: np.ndarray | None = None        # (3V, K) float32 orthonormal PCA basis, rows x0 y0 z0 x1 ...
    eigenvalues: np.ndarray | None = None  # (K,) float32 PCA variances
    m_mean: np.ndarray | None = None       # (8,) float32 mean of the camera m (4x2, row-major)
    m_std: np.ndarray | None = None        # (8,) float32 std of the camera m
    notes: dict = field(default_factory=dict)  # provenance: files read, approximations made

    def __post_init__(self):
        V = self.mean_shape.shape[0] if self.mean_shape.ndim == 2 else -1
        if self.mean_shape.shape != (V, 3) or V < 3:
            raise ValueError(f"{self.name}: mean_shape must be (V, 3), got {self.mean_shape.shape}")
        if self.triangles.ndim != 2 or self.triangles.shape[1] != 3 or len(self.triangles) == 0:
            raise ValueError(f"{self.name}: triangles must be (F, 3), got {self.triangles.shape}")
        if self.triangles.min() < 0 or self.triangles.max() >= V:
            raise ValueError(f"{self.name}: triangle vertex ids outside 0..{V - 1}")
        if self.uv.shape != (V, 2):
            raise ValueError(f"{self.name}: uv must be ({V}, 2), got {self.uv.shape}")
        if self.landmarks is not None:
            lm = self.landmarks
            if lm.shape != (NUM_LANDMARKS,) or lm.min() < -1 or lm.max() >= V:
                raise ValueError(f"{self.name}: landmarks must be 68 vertex ids in -1..{V - 1}")
        if self.std_shape is not None and self.std_shape.shape != (V, 3):
            raise ValueError(f"{self.name}: std_shape must be ({V}, 3), got {self.std_shape.shape}")
        if self.basis is not None:
            if self.basis.ndim != 2 or self.basis.shape[0] != 3 * V:
                raise ValueError(f"{self.name}: basis must be ({3 * V}, K), got {self.basis.shape}")
            if self.eigenvalues is None or self.eigenvalues.shape != (self.basis.shape[1],):
                raise ValueError(f"{self.name}: eigenvalues must be ({self.basis.shape[1]},)")
        for key in ("m_mean", "m_std"):
            value = getattr(self, key)
            if value is not None and value.shape != (8,):
                raise ValueError(f"{self.name}: {key} must be (8,), got {value.shape}")
        for key in ("mean_shape", "uv", "std_shape", "basis", "eigenvalues", "m_mean", "m_std"):
            value = getattr(self, key)
            if value is not None and not np.isfinite(value).all():
                raise ValueError(f"{self.name}: {key} contains NaN or Inf")

    @property
    def num_vertices(self) -> int:
        return self.mean_shape.shape[0]

    @property
    def num_triangles(self) -> int:
        return self.triangles.shape[0]

    @property
    def keypoints(self) -> np.ndarray:
        """The 68 landmark vertex ids; only for models that define all 68 (the paper mesh)."""
        if self.landmarks is None or (self.landmarks < 0).any():
            raise ValueError(f"{self.name} does not define all 68 landmarks; use landmarks + landmark_mask")
        return self.landmarks

    @property
    def units_per_mm(self) -> float:
        """Model units per millimetre (to report distances in mm), read from `units`."""
        for word, factor in (("micrometre", 1000.0), ("millimetre", 1.0), ("centimetre", 0.1)):
            if word in self.units:
                return factor
        raise ValueError(f"{self.name}: units {self.units!r} have no known size in millimetres")

    @property
    def landmark_mask(self) -> np.ndarray:
        """(68,) bool: which iBUG points this model defines (all False without landmarks)."""
        if self.landmarks is None:
            return np.zeros(NUM_LANDMARKS, dtype=bool)
        return self.landmarks >= 0

    def shape_from_coefficients(self, coefficients: np.ndarray) -> np.ndarray:
        """(V, 3) linear-model shape for PCA coefficients given in standard deviations."""
        if self.basis is None:
            raise ValueError(f"{self.name} has no PCA basis")
        c = np.asarray(coefficients, dtype=np.float64).reshape(-1)
        if c.size > self.basis.shape[1]:
            raise ValueError(f"{self.name}: {c.size} coefficients for {self.basis.shape[1]} components")
        offset = self.basis[:, :c.size] @ (c * np.sqrt(self.eigenvalues[:c.size]))
        return (self.mean_shape + offset.reshape(-1, 3)).astype(np.float32)


def _read(path: Path, dtype, count: int | None = None) -> np.ndarray:
    if not path.is_file():
        raise FileNotFoundError(f"face model file missing: {path}")
    data = np.fromfile(path, dtype=dtype)
    if count is not None and data.size != count:
        raise ValueError(f"{path}: expected {count} {np.dtype(dtype).name} values, found {data.size} "
                         "(truncated or not the authors' file?)")
    return data


def _load_npy(path: Path, count: int) -> np.ndarray:
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise ValueError(f"{path}: not a readable .npy file ({exc})") from exc
    if data.size != count:
        raise ValueError(f"{path}: expected {count} values, found {data.size}")
    data = data.astype(np.float32).reshape(-1)
    if not np.isfinite(data).all():
        raise ValueError(f"{path}: contains NaN or Inf")
    return data


def load_paper_mesh(directory: str | Path | None = None) -> FaceModel:
    """The authors' topology: mean shape, triangles, UVs, 68 landmarks, and (where the files are
    present) `std_shape.npy`, `mean_m.npy`, `std_m.npy`.

    `directory` holds `mean_shape.npy` (+ the optional statistics) and the `3DMM_*.dat` /
    `vertices_2d_*.dat` files, either flat or with the `.dat` files in a `3DMM_definition/`
    subfolder (the layout of the authors' repository). Default: the copy bundled with the package.
    """
    root = Path(directory) if directory is not None else PAPER_MESH_DIR
    definition = root / "3DMM_definition" if (root / "3DMM_definition").is_dir() else root
    shape_path = root / "mean_shape.npy"
    if not shape_path.is_file():
        raise FileNotFoundError(f"face model file missing: {shape_path}")
    try:
        mean = np.load(shape_path, allow_pickle=False).astype(np.float32).reshape(-1)
    except (OSError, ValueError, EOFError) as exc:
        raise ValueError(f"{shape_path}: not a readable .npy file ({exc})") from exc
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
    keypoints = _read(definition / "3DMM_keypoints.dat", np.int32, NUM_LANDMARKS).astype(np.int64) - 1
    if keypoints.min() < 0 or keypoints.max() >= V:
        raise ValueError(f"{definition / '3DMM_keypoints.dat'}: vertex ids outside 1..{V}")
    stats = {}
    for key, filename, count in (("std_shape", "std_shape.npy", 3 * V),
                                 ("m_mean", "mean_m.npy", 8), ("m_std", "std_m.npy", 8)):
        path = root / filename
        stats[key] = _load_npy(path, count) if path.is_file() else None
    if stats["std_shape"] is not None:
        stats["std_shape"] = stats["std_shape"].reshape(V, 3)
    return FaceModel(mean.reshape(V, 3), np.ascontiguousarray(tri, dtype=np.int32),
                     uv.astype(np.float32), keypoints, name="paper BFM 53,215 (Nonlinear-3DMM)",
                     units="BFM units (about micrometres)", notes={"source": str(root)}, **stats)


load_paper_model = load_paper_mesh


class _CerealReader:
    """Sequential little-endian reads from a cereal binary archive, with errors that name the
    file, the field and the byte offset."""

    def __init__(self, path: Path):
        self.path = path
        self.data = path.read_bytes()
        self.offset = 0

    def _take(self, size: int, what: str) -> bytes:
        if size < 0 or self.offset + size > len(self.data):
            raise ValueError(f"{self.path}: truncated or corrupt: {what} needs {size} bytes at offset "
                             f"{self.offset}, file has {len(self.data)}")
        chunk = self.data[self.offset:self.offset + size]
        self.offset += size
        return chunk

    def scalar(self, fmt: str, what: str) -> int:
        return struct.unpack("<" + fmt, self._take(struct.calcsize(fmt), what))[0]

    def count(self, what: str, item_bytes: int) -> int:
        n = self.scalar("Q", f"{what} count")
        if n * item_bytes > len(self.data) - self.offset:
            raise ValueError(f"{self.path}: truncated or corrupt: {n} {what} need {n * item_bytes} "
                             f"bytes at offset {self.offset}, file has {len(self.data)}")
        return n

    def eigen_matrix(self, what: str) -> np.ndarray:
        rows, cols = self.scalar("i", f"{what} rows"), self.scalar("i", f"{what} cols")
        if rows < 0 or cols < 0:
            raise ValueError(f"{self.path}: corrupt: {what} has negative size {rows} x {cols}")
        values = np.frombuffer(self._take(4 * rows * cols, what), dtype="<f4")
        return values.reshape(cols, rows).T.astype(np.float32)  # Eigen stores column-major

    def array(self, dtype: str, n: int, what: str) -> np.ndarray:
        item = np.dtype(dtype).itemsize
        return np.frombuffer(self._take(item * n, what), dtype=dtype).copy()


def read_surrey_binary(path: str | Path) -> dict[str, np.ndarray]:
    """Raw arrays of an eos/Surrey `MorphableModel` cereal binary (version 1): `mean` (3V,),
    `basis` (3V, K) orthonormal, `eigenvalues` (K,), `triangles` (F, 3) 0-based, `texcoords`
    (V, 2). The colour model must be empty (the public SFM is shape-only)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"face model file missing: {path}")
    r = _CerealReader(path)
    version = r.scalar("I", "version")
    if version != 1:
        raise ValueError(f"{path}: unsupported cereal MorphableModel version {version} (expected 1)")
    mean = r.eigen_matrix("shape mean")
    basis = r.eigen_matrix("shape basis")
    eigenvalues = r.eigen_matrix("shape eigenvalues")
    n_tri = r.count("shape triangles", 12)
    triangles = r.array("<i4", 3 * n_tri, "shape triangles").reshape(-1, 3)
    colour = [r.eigen_matrix(f"colour {part}") for part in ("mean", "basis", "eigenvalues")]
    n_colour_tri = r.count("colour triangles", 12)
    r.array("<i4", 3 * n_colour_tri, "colour triangles")
    n_tex = r.count("texture coordinates", 16)
    texcoords = r.array("<f8", 2 * n_tex, "texture coordinates").reshape(-1, 2)
    if r.offset != len(r.data):
        raise ValueError(f"{path}: corrupt: {len(r.data) - r.offset} unexpected bytes after the model")
    V3 = mean.shape[0]
    if mean.shape[1] != 1 or V3 % 3 or V3 == 0:
        raise ValueError(f"{path}: corrupt: shape mean is {mean.shape}, expected (3V, 1)")
    if basis.shape[0] != V3 or eigenvalues.shape != (basis.shape[1], 1):
        raise ValueError(f"{path}: corrupt: basis {basis.shape} / eigenvalues {eigenvalues.shape} "
                         f"do not match a mean of {V3} values")
    if any(c.size for c in colour):
        raise ValueError(f"{path}: has a colour model; only shape-only models are supported")
    if texcoords.shape[0] != V3 // 3:
        raise ValueError(f"{path}: corrupt: {texcoords.shape[0]} texture coordinates for {V3 // 3} vertices")
    if n_tri == 0 or triangles.min() < 0 or triangles.max() >= V3 // 3:
        raise ValueError(f"{path}: corrupt: triangle vertex ids outside 0..{V3 // 3 - 1}")
    return {"mean": mean[:, 0], "basis": basis, "eigenvalues": eigenvalues[:, 0],
            "triangles": triangles.astype(np.int32), "texcoords": texcoords}


def read_ibug_mapping(path: str | Path, num_vertices: int) -> np.ndarray:
    """(68,) int64 vertex ids from an eos landmark mapping (TOML `[landmark_mappings]`,
    1-based iBUG point = 0-based vertex id); -1 for the points the file leaves out."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"landmark mapping file missing: {path}")
    try:
        with open(path, "rb") as fh:
            table = tomllib.load(fh)["landmark_mappings"]
    except (tomllib.TOMLDecodeError, UnicodeDecodeError, KeyError) as exc:
        raise ValueError(f"{path}: not an eos landmark mapping ({exc!r})") from exc
    ids = np.full(NUM_LANDMARKS, -1, dtype=np.int64)
    for key, vertex in table.items():
        if not (str(key).isdigit() and 1 <= int(key) <= NUM_LANDMARKS):
            raise ValueError(f"{path}: landmark '{key}' is not an iBUG point 1..68")
        if not isinstance(vertex, int) or not 0 <= vertex < num_vertices:
            raise ValueError(f"{path}: landmark {key} maps to {vertex!r}, not a vertex id 0..{num_vertices - 1}")
        ids[int(key) - 1] = vertex
    return ids


def wind_inward(vertices: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """`triangles`, re-wound if needed so that most face normals point towards the centroid
    (the BFM convention the render chain expects)."""
    a, b, c = (vertices[triangles[:, k]].astype(np.float64) for k in range(3))
    normals = np.cross(b - a, c - a)
    outward = np.einsum("ij,ij->i", normals, (a + b + c) / 3 - vertices.mean(0)) > 0
    if outward.mean() > 0.5:
        return np.ascontiguousarray(triangles[:, [0, 2, 1]])
    return triangles


def _similarity_to(source: np.ndarray, target: np.ndarray) -> tuple[float, np.ndarray]:
    """(scale k, translation d) minimising |k * source + d - target|^2 (same axes, no rotation)."""
    src, tgt = source - source.mean(0), target - target.mean(0)
    k = float((src * tgt).sum() / (src * src).sum())
    return k, target.mean(0) - k * source.mean(0)


def transfer_m_statistics(model_mean: np.ndarray, model_landmarks: np.ndarray,
                          reference: FaceModel) -> tuple[np.ndarray, np.ndarray, float, np.ndarray]:
    """Camera-m statistics for a model that has none, from the reference model's.

    Both models share the axes (x left, y up, z out); they differ in units and origin. With
    `X_ref ~ k X + d` fitted on the landmarks both define, a camera m for the reference gives
    the same image for `X` through m' = [k m_rot ; m_t + d @ m_rot]. Mean and std transform the
    same way, except the translation std, which we keep (its spread is over faces, not over d).
    This is an approximation for initialising and normalising networks, not a fitted statistic.

    Returns (m_mean, m_std, k, d).
    """
    if reference.m_mean is None or reference.m_std is None or reference.landmarks is None:
        raise ValueError(f"{reference.name} has no camera statistics or landmarks to transfer")
    both = (model_landmarks >= 0) & (reference.landmarks >= 0)
    if both.sum() < 4:
        raise ValueError("fewer than 4 landmarks in common; cannot align the models")
    k, d = _similarity_to(model_mean[model_landmarks[both]].astype(np.float64),
                          reference.mean_shape[reference.landmarks[both]].astype(np.float64))
    mean = reference.m_mean.astype(np.float64).reshape(4, 2)
    std = reference.m_std.astype(np.float64).reshape(4, 2)
    new_mean = np.concatenate([k * mean[:3], (mean[3] + d @ mean[:3])[None]])
    new_std = np.concatenate([k * std[:3], std[3:]])
    return new_mean.reshape(-1).astype(np.float32), new_std.reshape(-1).astype(np.float32), k, d


def load_surrey_model(path: str | Path | None = None, landmark_mapping: str | Path | None = None,
                      reference: FaceModel | None = None) -> FaceModel:
    """The Surrey Face Model (shape-only, 3,448 vertices, 63 PCA components) as a FaceModel.

    * `landmarks`: from `ibug_to_sfm.txt`; it defines 50 of the 68 iBUG points. The 16 jaw
      contour points (iBUG 1-8 and 10-17, which eos fits to the silhouette rather than to fixed
      vertices) and the inner mouth corners (61, 65) are -1.
    * `std_shape`: per-coordinate std of the linear model, sqrt(sum_k basis^2 * eigenvalue_k).
    * `m_mean` / `m_std`: transferred from `reference` (default: the bundled paper model) with
      `transfer_m_statistics` — an approximation, recorded in `notes`.
    * The SFM's triangles face outward; they are re-wound to the BFM convention.
    """
    path = Path(path) if path is not None else SURREY_DIR / "sfm_shape_3448.bin"
    raw = read_surrey_binary(path)
    mean = raw["mean"].reshape(-1, 3)
    V = mean.shape[0]
    mapping = Path(landmark_mapping) if landmark_mapping is not None else SURREY_DIR / "ibug_to_sfm.txt"
    landmarks = read_ibug_mapping(mapping, V)
    texcoords = raw["texcoords"]
    if texcoords.min() < 0 or texcoords.max() > 1:
        raise ValueError(f"{path}: texture coordinates outside [0, 1]")
    variance = (raw["basis"].astype(np.float64) ** 2) @ raw["eigenvalues"].astype(np.float64)
    std_shape = np.sqrt(variance).reshape(V, 3).astype(np.float32)
    reference = reference if reference is not None else load_paper_mesh()
    m_mean, m_std, k, d = transfer_m_statistics(mean, landmarks, reference)
    notes = {"source": str(path), "landmarks": str(mapping),
             "m statistics": f"transferred from {reference.name}: scale {k:.4g}, offset {np.round(d, 1).tolist()}"}
    return FaceModel(mean.astype(np.float32), wind_inward(mean, raw["triangles"]),
                     texcoords.astype(np.float32), landmarks, name="Surrey Face Model 3448",
                     units="millimetres", std_shape=std_shape, basis=raw["basis"],
                     eigenvalues=raw["eigenvalues"].astype(np.float32), m_mean=m_mean, m_std=m_std,
                     notes=notes)


def load_face_model(name: str = "paper") -> FaceModel:
    """A bundled model by name: "paper" (53,215-vertex BFM topology) or "sfm" (Surrey, 3,448)."""
    loaders = {"paper": load_paper_mesh, "bfm": load_paper_mesh, "sfm": load_surrey_model,
               "surrey": load_surrey_model}
    if name not in loaders:
        raise ValueError(f"unknown face model {name!r}; choose from {sorted(loaders)}")
    return loaders[name]()


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
