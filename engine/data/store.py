"""The training store: a folder of shards of fixed-size arrays plus a `manifest.json`.

Layout:

    OUT/manifest.json          what the store holds (see `new_manifest`), written atomically
    OUT/shard-00000/shard.json this shard's count, fields, sources and skipped files
    OUT/shard-00000/<field>.npy one array per field, first axis = sample (memory-mappable)
    OUT/shard-00000/arrays.npz  instead of the .npy files in compressed stores (loaded to RAM)

Fields (per sample; `FIELDS` has the same table in code, and every manifest repeats it):

    image         uint8 (224, 224, 3)   RGB crop (crop.py's rule)
    m             float32 (8,)          camera of the crop, `[X Y Z 1] @ m.reshape(4, 2)` (camera.py)
    landmarks     float32 (68, 2)       iBUG-68 points in the crop's corner frame (x right, y down)
    texture       uint8 (192, 224, 3)   pseudo ground-truth UV texture (unwrap.py), 0 where not visible
    texture_mask  bool (192, 224)       texels of `texture` seen in the crop
    pose_para     float32 (7,)          the label's Pose_Para (photo frame, before the crop)
    shape_para    float32 (199,)        the label's Shape_Para (BFM identity coefficients)
    exp_para      float32 (29,)         the label's Exp_Para (expression coefficients)
    flipped       bool ()               sample is the horizontal mirror of its source
    landmark_visible bool (68,)         optional: landmark vertex not self-occluded (profiled stores)
    shape         float32 (Q * 3,)      optional dense ground-truth shape, when bases were given

Writes are atomic: a shard is written into a hidden temporary folder and renamed into place
after its `shard.json`, so a folder named `shard-NNNNN` is always complete. The manifest is
replaced with `os.replace`. A killed run leaves at most `.tmp-*` folders, which the next run
removes.
"""
from __future__ import annotations

import json
import os
import shutil
import uuid
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

STORE_FORMAT = "nl3dmm-training-store"
STORE_VERSION = 1
MANIFEST = "manifest.json"
SHARD_INFO = "shard.json"
COMPRESSED_ARRAYS = "arrays.npz"
TEMP_PREFIX = ".tmp-"


@dataclass(frozen=True)
class Field:
    dtype: str
    shape: tuple[int, ...]   # per sample; -1 = fixed per store but model-dependent
    meaning: str
    optional: bool = False


FIELDS: dict[str, Field] = {
    "image": Field("uint8", (224, 224, 3), "RGB face crop (square around the 68 landmarks, see nl3dmm.data.crop)"),
    "m": Field("float32", (8,), "camera of the crop: [u v] = [X Y Z 1] @ m.reshape(4, 2), v up from the "
               "bottom edge (nl3dmm.face.camera); not normalised"),
    "landmarks": Field("float32", (68, 2), "iBUG-68 landmarks in the crop's corner frame (x right, y down, "
                       "pixel (r, c) covers [c, c+1) x [r, r+1)); the convention (3-D-consistent or not) "
                       "is in notes.landmarks and counts.landmark_conventions"),
    "texture": Field("uint8", (192, 224, 3), "pseudo ground-truth UV texture: the crop unwrapped into the "
                     "authors' 192 x 224 UV map by nl3dmm.face.unwrap.unwrap_texture; 0 where not visible"),
    "texture_mask": Field("bool", (192, 224), "texels of `texture` that are visible in the crop"),
    "pose_para": Field("float32", (7,), "the label's Pose_Para (pitch, yaw, roll, tx, ty, tz, scale) in the "
                       "source photo's frame"),
    "shape_para": Field("float32", (199,), "the label's Shape_Para (BFM 2009 identity coefficients, raw units)"),
    "exp_para": Field("float32", (29,), "the label's Exp_Para (expression coefficients, 3DDFA basis)"),
    "flipped": Field("bool", (), "this sample is the horizontal mirror of its source photo (m, landmarks and "
                     "texture are those of the mirrored face; shape_para/exp_para are the source's)"),
    "landmark_visible": Field("bool", (68,), "landmark vertex i is the surface seen at its pixel (not hidden by "
                              "the face itself); written by `nl3dmm profile`", optional=True),
    "shape": Field("float32", (-1,), "dense ground-truth shape, x0 y0 z0 x1 ... (Q * 3), BFM units", optional=True),
}
REQUIRED_FIELDS = [name for name, field in FIELDS.items() if not field.optional]


class StoreError(ValueError):
    """A store folder that is not usable as it is; the message names the path."""


def shard_name(index: int) -> str:
    return f"shard-{index:05d}"


def _check_arrays(arrays: dict[str, np.ndarray]) -> int:
    missing = [name for name in REQUIRED_FIELDS if name not in arrays]
    if missing:
        raise StoreError(f"shard arrays miss required fields {missing}")
    unknown = sorted(set(arrays) - set(FIELDS))
    if unknown:
        raise StoreError(f"unknown shard fields {unknown} (known: {sorted(FIELDS)})")
    count = len(arrays["image"])
    for name, array in arrays.items():
        field = FIELDS[name]
        if array.dtype != np.dtype(field.dtype):
            raise StoreError(f"field '{name}' has dtype {array.dtype}, expected {field.dtype}")
        expected = (count,) + field.shape
        if len(array.shape) != len(expected) or any(e not in (-1, a) for e, a in zip(expected, array.shape)):
            raise StoreError(f"field '{name}' has shape {array.shape}, expected {expected} (-1: any)")
    return count


def _write_json(path: Path, data: dict) -> None:
    """Atomic JSON write: temp file in the same folder, fsync, rename over `path`."""
    temp = path.with_name(f"{TEMP_PREFIX}{path.name}.{uuid.uuid4().hex[:8]}")
    with open(temp, "w") as handle:
        json.dump(data, handle, indent=1)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temp, path)


def _write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Like np.savez_compressed (np.load reads it), but with fixed member timestamps, so equal
    arrays give equal bytes: a regenerated store does not churn in version control."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, array in arrays.items():
            member = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            member.compress_type = zipfile.ZIP_DEFLATED
            with archive.open(member, "w", force_zip64=True) as handle:
                np.lib.format.write_array(handle, np.ascontiguousarray(array), allow_pickle=False)


def write_shard(store: str | Path, index: int, arrays: dict[str, np.ndarray], info: dict,
                compress: bool = False) -> Path:
    """Write shard `index` of `store` atomically and return its folder. `info` (JSON-able: the
    sources, skipped files, ...) goes into `shard.json` beside the count and the fields."""
    store = Path(store)
    count = _check_arrays(arrays)
    final = store / shard_name(index)
    temp = store / f"{TEMP_PREFIX}{shard_name(index)}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    temp.mkdir(parents=True)
    try:
        if compress:
            _write_npz(temp / COMPRESSED_ARRAYS, arrays)
        else:
            for name, array in arrays.items():
                np.save(temp / f"{name}.npy", np.ascontiguousarray(array), allow_pickle=False)
        meta = {"index": index, "count": count, "compressed": compress,
                "fields": {name: {"dtype": str(a.dtype), "shape": list(a.shape[1:])} for name, a in arrays.items()},
                **info}
        _write_json(temp / SHARD_INFO, meta)
        if final.exists():  # an invalid leftover the caller decided to replace
            shutil.rmtree(final)
        os.rename(temp, final)  # the commit point: the shard exists whole or not at all
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise
    return final


def read_shard_info(folder: str | Path) -> dict:
    path = Path(folder) / SHARD_INFO
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise StoreError(f"{path}: unreadable shard description ({exc})") from exc


def _npy_header(path: Path) -> tuple[tuple[int, ...], np.dtype]:
    with open(path, "rb") as handle:
        version = np.lib.format.read_magic(handle)
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _, dtype = read(handle)
    return shape, dtype


def shard_problem(folder: str | Path) -> str | None:
    """Why shard `folder` is not complete and consistent (None when it is): its `shard.json`
    must read, and every field's array must exist with `count` samples of the right dtype.
    Reads array headers only."""
    folder = Path(folder)
    if not folder.is_dir():
        return f"{folder} is missing"
    try:
        info = read_shard_info(folder)
    except StoreError as exc:
        return str(exc)
    count, fields = info.get("count"), info.get("fields", {})
    if not isinstance(count, int) or set(REQUIRED_FIELDS) - set(fields):
        return f"{folder / SHARD_INFO}: no count or missing fields"
    if info.get("compressed"):
        path = folder / COMPRESSED_ARRAYS
        try:
            with np.load(path) as archive:
                names = {name.removesuffix(".npy") for name in archive.files}
        except (OSError, ValueError) as exc:
            return f"{path}: unreadable ({exc})"
        return None if names == set(fields) else f"{path}: holds {sorted(names)}, shard.json lists {sorted(fields)}"
    for name, spec in fields.items():
        path = folder / f"{name}.npy"
        try:
            shape, dtype = _npy_header(path)
        except (OSError, ValueError) as exc:
            return f"{path}: unreadable ({exc})"
        if shape[:1] != (count,) or list(shape[1:]) != spec["shape"] or str(dtype) != spec["dtype"]:
            return f"{path}: shape {shape} dtype {dtype}, shard.json says ({count}, {spec['shape']}) {spec['dtype']}"
        expected_bytes = int(np.prod(shape)) * dtype.itemsize
        if path.stat().st_size < expected_bytes:
            return f"{path}: truncated ({path.stat().st_size} bytes for {expected_bytes} of data)"
    return None


def read_npz(path: str | Path) -> dict[str, np.ndarray]:
    """Every array of an `.npz` archive (no pickled objects). The errors say what the file is
    not: missing, not a zip archive at all (the wrong file, or truncated), or a damaged one."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing")
    if not zipfile.is_zipfile(path):
        raise ValueError(f"{path} is not an .npz archive (no zip directory: another kind of file, or truncated)")
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {name: archive[name] for name in archive.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise ValueError(f"{path}: damaged .npz archive ({type(exc).__name__}: {exc})") from exc


def open_shard(folder: str | Path, mmap: bool = True) -> dict[str, np.ndarray]:
    """The arrays of a shard: memory-mapped read-only `.npy` files, or a compressed shard read
    into memory (compressed arrays cannot be mapped)."""
    folder = Path(folder)
    info = read_shard_info(folder)
    if info.get("compressed"):
        with np.load(folder / COMPRESSED_ARRAYS) as archive:
            return {name: archive[name] for name in info["fields"]}
    return {name: np.load(folder / f"{name}.npy", mmap_mode="r" if mmap else None, allow_pickle=False)
            for name in info["fields"]}


def fields_description() -> dict[str, dict]:
    return {name: {"dtype": f.dtype, "shape": list(f.shape), "meaning": f.meaning, "optional": f.optional}
            for name, f in FIELDS.items()}


def new_manifest(settings: dict, sources: dict, notes: dict | None = None) -> dict:
    """The manifest of a store being built. `settings` (crop, flips, shard size, ...) decide
    whether a later run may resume into the same folder; `sources` describes where the samples
    came from. Shard entries and counts are filled in as shards complete."""
    return {
        "format": STORE_FORMAT,
        "version": STORE_VERSION,
        "complete": False,
        "settings": settings,
        "sources": sources,
        "fields": fields_description(),
        "notes": notes or {},
        "shards": [],
        "counts": {},
        "skipped": [],
    }


def write_manifest(store: str | Path, manifest: dict) -> None:
    _write_json(Path(store) / MANIFEST, manifest)


def read_manifest(store: str | Path) -> dict:
    path = Path(store) / MANIFEST
    if not path.is_file():
        raise StoreError(f"{path} is missing: not a training store (or its build never started)")
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise StoreError(f"{path}: unreadable manifest ({exc})") from exc
    if manifest.get("format") != STORE_FORMAT:
        raise StoreError(f"{path}: format {manifest.get('format')!r}, expected {STORE_FORMAT!r}")
    if manifest.get("version") != STORE_VERSION:
        raise StoreError(f"{path}: store version {manifest.get('version')}, this code reads {STORE_VERSION}")
    return manifest


def remove_temporaries(store: str | Path) -> list[Path]:
    """Delete what a killed writer left behind (`.tmp-*` files and folders); return them."""
    removed = []
    for path in Path(store).glob(f"{TEMP_PREFIX}*"):
        shutil.rmtree(path) if path.is_dir() else path.unlink()
        removed.append(path)
    return removed
