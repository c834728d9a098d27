"""The bundled default dataset: a small training store made from the 17 real labelled samples
of the project's shared data (16 AFLW2000-3D photos and one 300W-LP photo), shipped in
nl3dmm/assets/default_data so training runs on a fresh machine with no download.

Augmentation: each photo gives `COPIES` crops whose centres are offset at random by up to
`JITTER` output pixels (the authors' random-crop range around the centre, m corrected), and
the mirror of each crop. The offsets come from a fixed seed, so `build_default_data`
regenerates the same store (byte for byte with the same JPEG decoder and renderer build).
Shards are compressed (.npz) to keep the package small; the loader reads them into memory.
"""
from __future__ import annotations

from pathlib import Path

from ..face.facemodel import ASSETS
from .preprocess import PreprocessSettings, preprocess

DEFAULT_DATA_DIR = ASSETS / "default_data"
SAMPLES = ["face3d/IBUG_image_008_1_0"] + [
    f"prnet/aflw2000/image{n:05d}" for n in
    (50, 81, 251, 430, 475, 514, 516, 1038, 1322, 2283, 2420, 2545, 2616, 3324, 3614, 4331)]
COPIES = 2
JITTER = 16.0
SEED = 2018
SETTINGS = PreprocessSettings(shard_size=6, flip=True, copies=COPIES, jitter=JITTER, seed=SEED, compress=True)


def default_store() -> Path:
    """Folder of the bundled default training store (open it with loader.TrainingStore)."""
    if not (DEFAULT_DATA_DIR / "manifest.json").is_file():
        raise FileNotFoundError(f"the bundled default dataset is missing from {DEFAULT_DATA_DIR}; "
                                "rebuild it with `nl3dmm build-default-data`")
    return DEFAULT_DATA_DIR


def build_default_data(shared_data: str | Path, out: str | Path = DEFAULT_DATA_DIR, progress: bool = True) -> dict:
    """(Re)build the default store from `shared_data` (the project's shared/data folder) into
    `out`, which must be empty, missing, or a default store of the same settings (resumed).
    Returns the manifest."""
    shared_data = Path(shared_data)
    missing = [s for s in SAMPLES if not (shared_data / f"{s}.jpg").is_file() or not (shared_data / f"{s}.mat").is_file()]
    if missing:
        raise FileNotFoundError(f"{shared_data} lacks {len(missing)} of the default samples, e.g. {missing[0]}.jpg/.mat")
    manifest = preprocess(shared_data, out, SETTINGS, workers=1, progress=progress, samples=SAMPLES)
    (Path(out) / "README.md").write_text(README.format(count=manifest["counts"]["samples"], copies=COPIES,
                                                       jitter=JITTER, seed=SEED, shard_size=SETTINGS.shard_size))
    return manifest


README = """# Default training data (generated; do not edit)

A small nl3dmm training store (format: `nl3dmm/data/store.py`; read it with
`nl3dmm.data.loader.TrainingStore(nl3dmm.data.default_store())`) so that training runs on a
fresh machine with no download. {count} samples from 17 real labelled photos:

* 16 AFLW2000-3D images with their original labels (`image00050` ... `image04331`, copied by
  the project from YadiraF/PRNet `TestImages/AFLW2000/`, MIT-licensed repository), and
* one 300W-LP image and label (`IBUG_image_008_1_0`, from YadiraF/face3d `examples/Data/`).

Each photo gives {copies} crops of 224 x 224 around its landmarks, their centres offset at random
by up to {jitter:g} output pixels (seed {seed}; camera m corrected), and the horizontal mirror of
each; pseudo ground-truth UV textures are unwrapped with the mean face posed by m (no dense
shapes: the BFM bases are not available). Landmark targets are 3-D-consistent: `pt3d_68` for the
AFLW2000-3D photos, the mean face's landmark vertices posed by the label for the 300W-LP photo
(not its `pt2d`, which follows the visible jaw outline; see nl3dmm/data/landmark_targets.py).
Shards of {shard_size} photos, compressed (.npz).

Regenerate (byte-identical with the same JPEG decoder and renderer build):

    nl3dmm build-default-data --force          # reads ../shared/data beside the repository

`manifest.json` records the settings, the sources and what every field means; `sources.root`
is the folder it was built from on the builder's machine.

## Licence and terms

The images and labels come from AFLW2000-3D and 300W-LP (Zhu et al., "Face Alignment Across
Large Poses: A 3D Solution", CVPR 2016), built on AFLW and 300-W/iBUG images: **research use
only**. The textures are unwrapped with the BFM 2009-derived mean face of the Nonlinear-3DMM
authors (academic, non-commercial use). Do not redistribute this folder in a product.
"""
