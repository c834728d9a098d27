"""Dense ground-truth shapes from 300W-LP's `Shape_Para` (199) / `Exp_Para` (29): converting the
BFM-derived bases that users download themselves into one compact `.npz`, and evaluating it.

Nothing here ships a basis (the BFM licence forbids redistribution). Without one the training
pipeline still runs on landmarks and images: `load_basis(None)` returns None and logs
"dense shapes unavailable: landmark and image losses only".

Sources (what each file holds; keys and layouts as the cited code reads them):

* **300W-LP `Code/ModelGeneration/Model_Shape.mat`** (Zhu et al., CVPR 2016; the "3DDFA" model,
  53,215 vertices): `mu_shape` (3V, 1), `w` (3V, 199) identity basis, `sigma` (199, 1), `tri`
  (3, F) and `keypoints` (1, 68), both MATLAB 1-based. **`Model_Exp.mat`**: `mu_exp` (3V, 1),
  `w_exp` (3V, 29) (3DDFA's `Model_Expression.mat` has the same keys plus `sigma_exp`). Their
  sample script `main_show_with_BFM.m` builds a face as
  `vertex = mu_shape + mu_exp + w * Shape_Para + w_exp * Exp_Para; reshape(vertex, 3, V)`,
  i.e. the (3V,) vectors are interleaved x0 y0 z0 x1 ... (MATLAB's column-major reshape), and
  the parameters multiply the bases as stored, with no sigma scaling: `w` has unit columns
  (`Shape_Para` is in BFM units, about 1e5; `sigma` is its prior standard deviation, as face3d's
  `fit.py` uses `shapeEV`), while `w_exp` carries its own scale and `Exp_Para` is about 1.
  Checked with real numbers (tests/test_bfm.py): 3DDFA's real basis rows at the 68 landmarks,
  written into such files, move the landmarks of the 16 AFLW2000-3D samples from 2.4-6.9 px
  (mean shape) to 0.3-1.9 px of `pt3d_68` under each sample's own parameters.
  Python readers doing the same: 3DDFA (cleardusk, `u = u_shp + u_exp`, `w_shp`, `w_exp` taken
  from these files), face3d (`load_BFM`: `shapeMU + expMU`, `shapePC @ sp + expPC @ ep`,
  `reshape([3, V], 'F').T`).
* **BFM 2009 `01_MorphableModel.mat`** (Paysan et al. 2009; 53,490 vertices): `shapeMU`
  (160470, 1), `shapePC` (160470, 199) orthonormal, `shapeEV` (199, 1) standard deviations,
  same interleaving (also `texMU`/`texPC`/`texEV`, `tl` triangles, segments; not read here). It
  has no expression model; the expression basis comes from `Model_Exp.mat` /
  `Model_Expression.mat`, already on the 53,215 vertices. face3d's `generate.m` builds its BFM
  exactly so: `shapeMU(trimIndex_f)`, `shapePC(trimIndex_f, :)` with
  `trimIndex_f = [3i-2, 3i-1, 3i]` per kept vertex i, plus 3DDFA's `mu_exp`/`w_exp`, and applies
  300W-LP's parameters to it.
* **The 53,490 -> 53,215 reduction**: 3DMMasSTN's `util/map_tddfa_to_basel.mat`, key
  `map_tddfa_to_basel` (1, 53215), **0-based** BFM09 vertex of each 53,215-topology vertex
  (bundled: assets/bfm/); equivalently `trimIndex` (53215, 1), **1-based** (3DDFA's
  `model_info.mat`, Deep3DFaceRecon's `BFM_exp_idx.mat`). The index base is taken from the key.

Units and axes are those of `load_paper_mesh().mean_shape` (BFM units, about micrometres; x to the
subject's left, y up, z out of the face): with the 300W-LP bases the converted mean is
`mu_shape + mu_exp`, which shared/data checks bit-exact against the authors' `mean_shape.npy`
(through 3DDFA's `u_shp + u_exp`), so no transformation is applied. For BFM 2009 the same frame
is assumed (face3d applies 300W-LP parameters to `shapeMU` unchanged); we could not check it
without the file.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

ASSETS_BFM = Path(__file__).resolve().parents[1] / "assets" / "bfm"
DEFAULT_VERTEX_MAP = ASSETS_BFM / "map_tddfa_to_basel.mat"
NO_BASIS_MESSAGE = "dense shapes unavailable: landmark and image losses only"
FORMAT_VERSION = 1
# Key of a vertex map -> its index base (0 or 1); see the module docstring.
VERTEX_MAP_KEYS = {"map_tddfa_to_basel": 0, "trimIndex": 1}


@dataclass(frozen=True, eq=False)
class BFMBasis:
    """A linear shape model S = mean + shape_basis @ Shape_Para + exp_basis @ Exp_Para, with the
    parameters in 300W-LP's units. Vectors are (3V,) interleaved x0 y0 z0 x1 ..., float32."""

    mean: np.ndarray                       # (3V,)
    shape_basis: np.ndarray                # (3V, Ks)
    exp_basis: np.ndarray | None = None    # (3V, Ke)
    shape_sigma: np.ndarray | None = None  # (Ks,) standard deviation of each Shape_Para
    exp_sigma: np.ndarray | None = None    # (Ke,)
    triangles: np.ndarray | None = None    # (F, 3) int32, 0-based
    keypoints: np.ndarray | None = None    # (68,) int64, 0-based vertex ids
    source: str = ""

    def __post_init__(self):
        D = self.mean.shape[0] if self.mean.ndim == 1 else -1
        if D <= 0 or D % 3:
            raise ValueError(f"BFM basis ({self.source}): mean must be (3V,), got {self.mean.shape}")
        for key in ("shape_basis", "exp_basis"):
            value = getattr(self, key)
            if value is not None and (value.ndim != 2 or value.shape[0] != D):
                raise ValueError(f"BFM basis ({self.source}): {key} must be ({D}, K), got {value.shape}")
        for key, basis in (("shape_sigma", self.shape_basis), ("exp_sigma", self.exp_basis)):
            value = getattr(self, key)
            if value is not None and (basis is None or value.shape != (basis.shape[1],)):
                raise ValueError(f"BFM basis ({self.source}): {key} must have one value per component")
        V = D // 3
        if self.triangles is not None and (self.triangles.ndim != 2 or self.triangles.shape[1] != 3
                                           or self.triangles.min() < 0 or self.triangles.max() >= V):
            raise ValueError(f"BFM basis ({self.source}): triangles must be (F, 3) vertex ids in 0..{V - 1}")
        if self.keypoints is not None and (self.keypoints.min() < 0 or self.keypoints.max() >= V):
            raise ValueError(f"BFM basis ({self.source}): keypoints must be vertex ids in 0..{V - 1}")

    @property
    def num_vertices(self) -> int:
        return self.mean.shape[0] // 3

    @property
    def num_shape(self) -> int:
        return self.shape_basis.shape[1]

    @property
    def num_exp(self) -> int:
        return 0 if self.exp_basis is None else self.exp_basis.shape[1]

    @property
    def mean_shape(self) -> np.ndarray:
        """(V, 3) float32: the shape at zero parameters."""
        return self.mean.reshape(-1, 3)

    def save(self, path: str | Path) -> Path:
        """Write the compact npz (float32, uncompressed so it loads fast)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        arrays = {"format_version": np.array(FORMAT_VERSION), "source": np.array(self.source),
                  "mean": self.mean, "shape_basis": self.shape_basis}
        for key in ("exp_basis", "shape_sigma", "exp_sigma", "triangles", "keypoints"):
            if getattr(self, key) is not None:
                arrays[key] = getattr(self, key)
        with open(path, "wb") as fh:  # a file handle keeps numpy from appending ".npz"
            np.savez(fh, **arrays)
        return path


def _as_vector(value: np.ndarray, size: int, what: str) -> np.ndarray:
    value = np.asarray(value, dtype=np.float64)
    if value.ndim == 2 and value.shape[1] == 1 and value.shape[0] == size:  # (K, 1) as the .mat files store it
        value = value.reshape(-1)
    if value.shape[-1:] != (size,):
        got = value.shape[-1] if value.ndim else 1
        raise ValueError(f"{what} has {got} values; the basis has {size} components")
    return value


def dense_shape(shape_para: np.ndarray, exp_para: np.ndarray | None, basis: BFMBasis) -> np.ndarray:
    """(V, 3) float32 dense shape (or (B, V, 3) for (B, K) parameters) in the units and axes of
    `load_paper_mesh().mean_shape`. `shape_para` (199,) or (199, 1) as read from a 300W-LP
    `.mat`; `exp_para` (29,) likewise, or None for a neutral face. A basis without expression
    accepts only `exp_para=None` (silently dropping a real expression would corrupt targets)."""
    # float32 products: a float64 copy of a 159,645 x 199 basis would cost 250 MB per call, and the
    # float32 rounding (about 1e-3 BFM units) is far below a micrometre.
    shape = _as_vector(shape_para, basis.num_shape, "Shape_Para").astype(np.float32)
    flat = shape @ basis.shape_basis.T
    if exp_para is not None:
        if basis.exp_basis is None:
            raise ValueError(f"{basis.source}: this basis has no expression model; pass exp_para=None "
                             "or convert with --model-exp")
        exp = _as_vector(exp_para, basis.num_exp, "Exp_Para").astype(np.float32)
        flat = flat + exp @ basis.exp_basis.T
    flat = flat + basis.mean
    return flat.reshape(*flat.shape[:-1], -1, 3).astype(np.float32)


# --------------------------------------------------------------------------- reading .mat files

def _whos(path: Path) -> dict[str, tuple[int, ...]]:
    """Variable name -> shape of a MATLAB file, without loading it."""
    import scipy.io
    if not path.is_file():
        raise FileNotFoundError(f"BFM basis file missing: {path}")
    with open(path, "rb") as fh:
        head = fh.read(512)
    if b"MATLAB 7.3" in head or head[:8] == b"\x89HDF\r\n\x1a\n":
        raise ValueError(f"{path}: MATLAB v7.3 (HDF5) files are not supported; re-save it in MATLAB with "
                         "save(name, '-struct', ..., '-v7') or load/save with -v7")
    try:
        return {name: tuple(shape) for name, shape, _ in scipy.io.whosmat(str(path))}
    except Exception as exc:  # scipy raises several types on a corrupt header
        raise ValueError(f"{path}: not a readable MATLAB .mat file ({exc})") from exc


def _load_keys(path: Path, required: list[str], optional: list[str] = ()) -> dict[str, np.ndarray]:
    """The named variables of a .mat file (only those: the BFM texture bases are large), with an
    error naming the file and the key when a required one is missing or unreadable."""
    import scipy.io
    names = _whos(path)
    for key in required:
        if key not in names:
            found = ", ".join(sorted(names)) or "none"
            raise ValueError(f"{path}: key '{key}' missing (variables in the file: {found})")
    wanted = [k for k in list(required) + list(optional) if k in names]
    try:
        data = scipy.io.loadmat(str(path), variable_names=wanted)
    except Exception as exc:
        raise ValueError(f"{path}: cannot read {', '.join(wanted)} ({exc})") from exc
    for key in wanted:
        value = data.get(key)
        if not isinstance(value, np.ndarray) or value.dtype.kind not in "iuf":
            raise ValueError(f"{path}: key '{key}' is not a numeric array")
        if value.dtype.kind == "f" and not np.isfinite(value).all():
            raise ValueError(f"{path}: key '{key}' contains NaN or Inf")
    return {k: data[k] for k in wanted}


def _column(value: np.ndarray, path: Path, key: str, size: int | None = None) -> np.ndarray:
    """A (N, 1) / (1, N) / (N,) array as (N,), checking N when `size` is given."""
    if value.ndim > 2 or (value.ndim == 2 and 1 not in value.shape):
        raise ValueError(f"{path}: key '{key}' has shape {value.shape}, expected a vector")
    value = value.reshape(-1)
    if size is not None and value.size != size:
        raise ValueError(f"{path}: key '{key}' has {value.size} values, expected {size}")
    return value


def _matrix(value: np.ndarray, path: Path, key: str, rows: int, against: str) -> np.ndarray:
    if value.ndim != 2 or value.shape[0] != rows:
        raise ValueError(f"{path}: key '{key}' has shape {value.shape}, expected ({rows}, K) to match "
                         f"{against}")
    return value


def _one_based(value: np.ndarray, path: Path, key: str, num_vertices: int) -> np.ndarray:
    value = value.astype(np.int64)
    if value.size and (value.min() < 1 or value.max() > num_vertices):
        raise ValueError(f"{path}: key '{key}' has vertex ids {value.min()}..{value.max()}, expected "
                         f"MATLAB 1-based ids in 1..{num_vertices}")
    return value - 1


def _triangles(value: np.ndarray, path: Path, key: str, num_vertices: int) -> np.ndarray:
    # MATLAB files store (3, F); accept (F, 3) too. For F == 3 the MATLAB layout wins.
    if value.ndim != 2 or 3 not in value.shape:
        raise ValueError(f"{path}: key '{key}' has shape {value.shape}, expected (3, F) or (F, 3)")
    tri = value.T if value.shape[0] == 3 else value
    return np.ascontiguousarray(_one_based(tri, path, key, num_vertices), dtype=np.int32)


def read_expression(path: str | Path, num_vertices: int | None = None) -> dict[str, np.ndarray]:
    """`mu_exp` (3V,), `w_exp` (3V, Ke) and, when present, `sigma_exp` (Ke,) from 300W-LP's
    `Model_Exp.mat` or 3DDFA's `Model_Expression.mat`."""
    path = Path(path)
    data = _load_keys(path, ["mu_exp", "w_exp"], ["sigma_exp"])
    size = None if num_vertices is None else 3 * num_vertices
    mu = _column(data["mu_exp"], path, "mu_exp", size)
    w = _matrix(data["w_exp"], path, "w_exp", mu.size, f"'mu_exp' ({mu.size} values)")
    out = {"mu_exp": mu, "w_exp": w}
    if "sigma_exp" in data:
        out["sigma_exp"] = _column(data["sigma_exp"], path, "sigma_exp", w.shape[1])
    return out


def read_vertex_map(path: str | Path, num_source_vertices: int | None = None,
                    index_base: int | None = None) -> np.ndarray:
    """(V,) int64 0-based source vertex of each kept vertex, from a .mat with `map_tddfa_to_basel`
    (0-based) or `trimIndex` (1-based), or a .npy / whitespace text file (`index_base` required).
    `index_base` overrides the base the key implies."""
    path = Path(path)
    if path.suffix == ".mat":
        names = _whos(path)
        keys = [k for k in VERTEX_MAP_KEYS if k in names]
        if not keys:
            raise ValueError(f"{path}: no vertex map key ({' or '.join(VERTEX_MAP_KEYS)}); "
                             f"variables in the file: {', '.join(sorted(names)) or 'none'}")
        key = keys[0]
        raw = _column(_load_keys(path, [key])[key], path, key)
        base = VERTEX_MAP_KEYS[key] if index_base is None else index_base
    else:
        if index_base is None:
            raise ValueError(f"{path}: say whether the indices are 0- or 1-based (index_base)")
        if not path.is_file():
            raise FileNotFoundError(f"vertex map file missing: {path}")
        key = "indices"
        raw = np.load(path) if path.suffix == ".npy" else np.loadtxt(path)
        raw = _column(np.asarray(raw), path, key)
        base = index_base
    if base not in (0, 1):
        raise ValueError(f"index_base must be 0 or 1, got {base}")
    if raw.size == 0 or not np.allclose(raw, np.round(raw)):
        raise ValueError(f"{path}: key '{key}' is not a list of integer vertex ids")
    ids = np.round(raw).astype(np.int64) - base
    if ids.min() < 0:
        raise ValueError(f"{path}: key '{key}' has id {int(raw.min())}, impossible for {base}-based ids "
                         "(wrong index_base?)")
    if num_source_vertices is not None and ids.max() >= num_source_vertices:
        raise ValueError(f"{path}: key '{key}' has id {int(raw.max())} ({base}-based), but the model has "
                         f"{num_source_vertices} vertices")
    if np.unique(ids).size != ids.size:
        raise ValueError(f"{path}: key '{key}' lists a vertex more than once")
    return ids


def _coordinate_rows(vertex_ids: np.ndarray) -> np.ndarray:
    """Rows of a (3V, ...) interleaved array that belong to `vertex_ids`, in order."""
    return (3 * vertex_ids[:, None] + np.arange(3)).reshape(-1)


def _truncate(basis: np.ndarray, sigma: np.ndarray | None, keep: int | None, what: str):
    if keep is None:
        return basis, sigma
    if not 1 <= keep <= basis.shape[1]:
        raise ValueError(f"cannot keep {keep} {what} components of {basis.shape[1]}")
    return basis[:, :keep], None if sigma is None else sigma[:keep]


def _f32(value: np.ndarray | None) -> np.ndarray | None:
    return None if value is None else np.ascontiguousarray(value, dtype=np.float32)


def convert_300wlp(model_shape: str | Path, model_exp: str | Path | None = None,
                   shape_components: int | None = None, exp_components: int | None = None) -> BFMBasis:
    """The basis from 300W-LP's `Model_Shape.mat` (+ `Model_Exp.mat`), as 3DDFA uses them."""
    shape_path = Path(model_shape)
    data = _load_keys(shape_path, ["mu_shape", "w"], ["sigma", "tri", "keypoints"])
    mu = _column(data["mu_shape"], shape_path, "mu_shape")
    if mu.size % 3:
        raise ValueError(f"{shape_path}: key 'mu_shape' has {mu.size} values, not a multiple of 3")
    V = mu.size // 3
    w = _matrix(data["w"], shape_path, "w", mu.size, f"'mu_shape' ({mu.size} values)")
    sigma = _column(data["sigma"], shape_path, "sigma", w.shape[1]) if "sigma" in data else None
    tri = _triangles(data["tri"], shape_path, "tri", V) if "tri" in data else None
    keypoints = (_one_based(_column(data["keypoints"], shape_path, "keypoints"), shape_path, "keypoints", V)
                 if "keypoints" in data else None)
    w, sigma = _truncate(w, sigma, shape_components, "shape")
    sources = [str(shape_path)]
    exp = exp_basis = exp_sigma = None
    if model_exp is not None:
        exp = read_expression(model_exp, V)
        exp_basis, exp_sigma = _truncate(exp["w_exp"], exp.get("sigma_exp"), exp_components, "expression")
        mu = mu + exp["mu_exp"]
        sources.append(str(model_exp))
    else:
        log.warning("%s: no expression basis given (--model-exp); dense shapes will be neutral and their "
                    "mean lacks mu_exp", shape_path)
    return BFMBasis(_f32(mu), _f32(w), _f32(exp_basis), _f32(sigma), _f32(exp_sigma), tri, keypoints,
                    source=" + ".join(sources))


def convert_bfm2009(bfm2009: str | Path, model_exp: str | Path | None = None,
                    vertex_map: str | Path | None = None, index_base: int | None = None,
                    shape_components: int | None = None, exp_components: int | None = None) -> BFMBasis:
    """The basis from BFM 2009's `01_MorphableModel.mat` reduced to the 53,215 vertices with
    `vertex_map` (default: the bundled `map_tddfa_to_basel.mat`), plus the 3DDFA expression basis
    from `model_exp` when given (BFM 2009 has none)."""
    path = Path(bfm2009)
    data = _load_keys(path, ["shapeMU", "shapePC"], ["shapeEV"])
    mu_full = _column(data["shapeMU"], path, "shapeMU")
    if mu_full.size % 3:
        raise ValueError(f"{path}: key 'shapeMU' has {mu_full.size} values, not a multiple of 3")
    pc_full = _matrix(data["shapePC"], path, "shapePC", mu_full.size, f"'shapeMU' ({mu_full.size} values)")
    sigma = _column(data["shapeEV"], path, "shapeEV", pc_full.shape[1]) if "shapeEV" in data else None
    map_path = Path(vertex_map) if vertex_map is not None else DEFAULT_VERTEX_MAP
    ids = read_vertex_map(map_path, mu_full.size // 3, index_base)
    rows = _coordinate_rows(ids)
    mu, pc = mu_full[rows], pc_full[rows]
    pc, sigma = _truncate(pc, sigma, shape_components, "shape")
    sources = [f"{path} reduced by {map_path}"]
    exp_basis = exp_sigma = None
    if model_exp is not None:
        exp = read_expression(model_exp, ids.size)
        exp_basis, exp_sigma = _truncate(exp["w_exp"], exp.get("sigma_exp"), exp_components, "expression")
        mu = mu + exp["mu_exp"]
        sources.append(str(model_exp))
    else:
        log.warning("%s: no expression basis given (--model-exp); dense shapes will be neutral", path)
    return BFMBasis(_f32(mu), _f32(pc), _f32(exp_basis), _f32(sigma), _f32(exp_sigma), None, None,
                    source=" + ".join(sources))


# --------------------------------------------------------------------------- the converted file

def read_basis(path: str | Path) -> BFMBasis:
    """A basis written by `BFMBasis.save` / `nl3dmm convert-bfm`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"BFM basis file missing: {path} (make one with `nl3dmm convert-bfm`)")
    try:
        with np.load(path, allow_pickle=False) as npz:
            data = {key: npz[key] for key in npz.files}
    except (OSError, ValueError, EOFError) as exc:
        raise ValueError(f"{path}: not a readable .npz basis ({exc})") from exc
    for key in ("format_version", "mean", "shape_basis"):
        if key not in data:
            raise ValueError(f"{path}: key '{key}' missing; not a basis written by `nl3dmm convert-bfm`")
    if int(data["format_version"]) != FORMAT_VERSION:
        raise ValueError(f"{path}: basis format {int(data['format_version'])}, this version reads {FORMAT_VERSION}")
    return BFMBasis(data["mean"], data["shape_basis"], data.get("exp_basis"), data.get("shape_sigma"),
                    data.get("exp_sigma"), data.get("triangles"), data.get("keypoints"),
                    source=str(data["source"]) if "source" in data else str(path))


def load_basis(path: str | Path | None, num_vertices: int | None = None) -> BFMBasis | None:
    """The converted basis at `path`, or None (logged: "dense shapes unavailable: landmark and
    image losses only") when no path is given, so training runs on landmarks and images alone.
    A path that is given but unreadable is an error, not a silent fallback."""
    if path is None:
        log.warning(NO_BASIS_MESSAGE)
        return None
    basis = read_basis(path)
    if num_vertices is not None and basis.num_vertices != num_vertices:
        raise ValueError(f"{path}: basis has {basis.num_vertices} vertices, the face model {num_vertices}")
    return basis
