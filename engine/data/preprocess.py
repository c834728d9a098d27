"""`nl3dmm preprocess SRC OUT`: a 300W-LP-style tree (NAME.jpg beside NAME.mat, any depth) ->
a training store (store.py) of 224 x 224 crops, cameras, landmarks and pseudo textures.

Plan. The samples found under SRC are sorted and cut into shards of `shard_size` *source*
samples; shard i always holds the same sources, so a re-run knows which shards are done.
Each source gives `copies` crops (random offsets of up to `jitter` output pixels when
jitter > 0, drawn from a generator seeded by (seed, source number), so a shard's content
does not depend on which worker made it) and, with `flip`, the mirror of each.

Resuming. The manifest records the settings and a digest of the source list. A re-run with
the same settings keeps every shard folder that is whole (store.shard_problem) and lists the
same sources, deletes the rest and temporaries of killed runs, and builds what is missing.
Different settings in a used folder are an error, not a silent mix.

Parallelism. Whole shards go to worker processes ('spawn': the OpenMP runtime of the
renderer is not fork-safe once used), so no two processes ever write the same file; each
worker's renderer gets cpu_count // workers threads. Workers report per-sample progress
through a queue to the progress bar.

Errors. A sample whose label or image cannot be read (or whose crop fails) is reported with
its file name, counted, listed in the manifest's `skipped`, and the run goes on.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import queue
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from .crop import CROP_SIZE, FACE_BOX_SCALE, crop_face, flip_face
from .landmark_targets import AUTO, CHOICES, DESCRIPTION, landmark_target
from .pseudo_texture import DEPTH_TOLERANCE, PseudoTexture
from .samples import find_samples, read_sample
from .store import (MANIFEST, StoreError, new_manifest, read_manifest, read_shard_info, remove_temporaries,
                    shard_name, shard_problem, write_manifest, write_shard)

TEXTURE_BATCH = 16  # crops unwrapped per renderer call: amortises the UV raster, bounds memory


@dataclass(frozen=True)
class PreprocessSettings:
    shard_size: int = 500         # source samples per shard (a worker holds one shard in memory)
    flip: bool = False            # add the horizontal mirror of every crop
    copies: int = 1               # crops per source sample
    jitter: float = 0.0           # max |offset| of a crop's centre, output pixels (0: centred)
    seed: int = 0                 # of the jitter offsets
    crop_scale: float = FACE_BOX_SCALE
    image_size: int = CROP_SIZE
    compress: bool = False        # .npz shards (small, loaded to RAM) instead of .npy (mapped)
    depth_tolerance: float = DEPTH_TOLERANCE  # visibility slack of the pseudo textures
    basis: str | None = None      # converted BFM basis: unwrap with each label's dense shape, not the mean
    landmarks: str = AUTO         # landmark target convention (landmark_targets.py); "pt2d" only by name

    def __post_init__(self):
        if self.shard_size < 1 or self.copies < 1 or self.jitter < 0 or self.crop_scale <= 0:
            raise ValueError(f"bad preprocess settings: {self}")
        if self.landmarks not in CHOICES:
            raise ValueError(f"landmarks must be one of {CHOICES}, got {self.landmarks!r}")
        if self.image_size != CROP_SIZE:
            raise ValueError(f"the store format fixes image_size = {CROP_SIZE}")

    @property
    def records_per_source(self) -> int:
        return self.copies * (2 if self.flip else 1)


@dataclass
class ShardJob:
    index: int
    store: str
    root: str
    sources: list[tuple[int, str]]   # (source number, path relative to root, no suffix)
    settings: PreprocessSettings
    digest: str


@dataclass
class ShardResult:
    index: int
    count: int
    sources: int
    skipped: list[dict] = field(default_factory=list)
    landmarks: dict[str, int] = field(default_factory=dict)   # records per landmark convention
    seconds: float = 0.0


def _digest(settings: PreprocessSettings, sources: list[str]) -> str:
    text = json.dumps(asdict(settings), sort_keys=True) + "\n" + "\n".join(sources)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# Per-process state of a worker: the texture maker (loads the mesh once) and the progress queue.
_WORKER: dict = {}


def _init_worker(progress_queue, threads: int) -> None:
    import torch

    from ..render import set_num_threads
    torch.set_num_threads(threads)
    set_num_threads(threads)
    _WORKER["queue"] = progress_queue


def _texture_maker(depth_tolerance: float) -> PseudoTexture:
    makers = _WORKER.setdefault("texture", {})
    if depth_tolerance not in makers:
        makers[depth_tolerance] = PseudoTexture(depth_tolerance=depth_tolerance)
    return makers[depth_tolerance]


def _shape_maker(basis_path: str):
    """The dense-shape builder of a basis file (loaded once per worker), for the paper mesh."""
    makers = _WORKER.setdefault("shapes", {})
    if basis_path not in makers:
        from ..face.facemodel import load_paper_mesh
        from ..face.dense_shapes import DenseShapes
        makers[basis_path] = DenseShapes.from_file(basis_path, load_paper_mesh())
    return makers[basis_path]


def _paper_mesh():
    if "mesh" not in _WORKER:
        from ..face.facemodel import load_paper_mesh
        _WORKER["mesh"] = load_paper_mesh()
    return _WORKER["mesh"]


def _basis(basis_path: str | None):
    """The converted basis (loaded once per worker) for dense landmark targets, or None."""
    if basis_path is None:
        return None
    bases = _WORKER.setdefault("bases", {})
    if basis_path not in bases:
        from ..face.bfm import load_basis
        bases[basis_path] = load_basis(basis_path, num_vertices=_paper_mesh().num_vertices)
    return bases[basis_path]


def _label_shapes(records: list, basis_path: str) -> np.ndarray:
    """(n, V, 3) dense shapes of `records` ((crop, label) pairs), mirrored for flipped crops."""
    import torch

    shape_para = torch.from_numpy(np.array([np.ravel(label[1]) for _, label in records], np.float32))
    exp_para = torch.from_numpy(np.array([np.ravel(label[2]) for _, label in records], np.float32))
    flipped = torch.tensor([crop.flipped for crop, _ in records])
    with torch.no_grad():
        return _shape_maker(basis_path)(shape_para, exp_para, flipped).numpy()


def _report(kind: str, value) -> None:
    target = _WORKER.get("queue")
    if target is None:
        return
    if callable(target):
        target(kind, value)
    else:
        target.put((kind, value))


def _crops_of(stem: Path, number: int, settings: PreprocessSettings) -> tuple[list, tuple, str]:
    """The crops of one source, its label numbers (pose, shape, expression) and the landmark
    convention its crops carry. The photo itself is not returned: a shard holds up to
    `shard_size` sources in memory. The crop window is placed from the target landmarks, as
    evaluation places it from AFLW2000-3D's 3-D-consistent `pt3d_68`."""
    sample = read_sample(stem)
    landmarks, convention = landmark_target(sample, _paper_mesh(), settings.landmarks, _basis(settings.basis))
    rng = np.random.default_rng([settings.seed, number])
    crops = []
    for _ in range(settings.copies):
        offset = tuple(rng.uniform(-settings.jitter, settings.jitter, 2)) if settings.jitter > 0 else (0.0, 0.0)
        crop = crop_face(sample.image, sample.m, landmarks, settings.crop_scale, offset, settings.image_size)
        crops.append(crop)
        if settings.flip:
            crops.append(flip_face(crop))
    return crops, (sample.pose_para, sample.shape_para, sample.exp_para), convention


def build_shard(job: ShardJob) -> ShardResult:
    """Read, crop and unwrap the sources of one shard and write it (atomically)."""
    start = time.perf_counter()
    root = Path(job.root)
    records, skipped, names, conventions = [], [], [], []
    for number, relative in job.sources:
        stem = root / relative
        try:
            crops, label, convention = _crops_of(stem, number, job.settings)
        except Exception as exc:  # a bad sample must not end the run: name it and go on
            entry = {"sample": relative, "error": f"{type(exc).__name__}: {exc}"}
            skipped.append(entry)
            _report("skip", entry)
            continue
        for crop in crops:
            records.append((crop, label))
            names.append(relative)
            conventions.append(convention)
    n = len(records)
    images = np.zeros((n, job.settings.image_size, job.settings.image_size, 3), np.uint8)
    for i, (crop, _) in enumerate(records):
        images[i] = crop.image
    maker = _texture_maker(job.settings.depth_tolerance)
    texture = np.zeros((n,) + maker.texture_size + (3,), np.uint8)
    mask = np.zeros((n,) + maker.texture_size, bool)
    for lo in range(0, n, TEXTURE_BATCH):
        hi = min(lo + TEXTURE_BATCH, n)
        m64 = np.stack([records[i][0].m for i in range(lo, hi)])
        shapes = _label_shapes(records[lo:hi], job.settings.basis) if job.settings.basis else None
        texture[lo:hi], mask[lo:hi] = maker(images[lo:hi], m64, shapes)
        _report("done", hi - lo)
    arrays = {
        "image": images,
        "m": np.array([c.m for c, _ in records], np.float32).reshape(n, 8),
        "landmarks": np.array([c.landmarks for c, _ in records], np.float32).reshape(n, 68, 2),
        "texture": texture,
        "texture_mask": mask,
        "pose_para": np.array([label[0] for _, label in records], np.float32).reshape(n, 7),
        "shape_para": np.array([label[1] for _, label in records], np.float32).reshape(n, 199),
        "exp_para": np.array([label[2] for _, label in records], np.float32).reshape(n, 29),
        "flipped": np.array([c.flipped for c, _ in records], bool).reshape(n),
    }
    info = {"settings_digest": job.digest, "sources": [rel for _, rel in job.sources], "records": names,
            "boxes": [list(c.box) for c, _ in records], "landmark_conventions": conventions, "skipped": skipped}
    write_shard(job.store, job.index, arrays, info, compress=job.settings.compress)
    return ShardResult(job.index, n, len(job.sources), skipped, seconds=time.perf_counter() - start,
                       landmarks=_count(conventions))


def _count(conventions: list[str]) -> dict[str, int]:
    return {name: conventions.count(name) for name in sorted(set(conventions))}


def _unpaired_images(root: Path, stems: list[Path]) -> list[str]:
    paired = {s.with_suffix(".jpg") for s in stems}
    return sorted(str(p.relative_to(root)) for p in root.rglob("*.jpg") if p not in paired)


def _lock(out: Path) -> int:
    """Exclusive lock on the store folder itself (no lock file to leave behind)."""
    fd = os.open(out, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise StoreError(f"{out} is being written by another preprocess run") from None
    return fd


def _open_manifest(out: Path, settings: PreprocessSettings, digest: str, sources_info: dict) -> dict:
    if (out / MANIFEST).is_file():
        manifest = read_manifest(out)
        old = manifest.get("settings", {})
        new = {**asdict(settings), "digest": digest}
        if old != new:
            changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
            raise StoreError(f"{out} holds a store made with other settings or sources (differs in {changed}); "
                             "use a new output folder or delete this one")
        return manifest
    leftovers = [p.name for p in out.iterdir()]
    if leftovers:
        raise StoreError(f"{out} is not empty and has no {MANIFEST} (found {leftovers[:5]}): refusing to write into it")
    notes = {
        "shapes": (f"textures are unwrapped with each label's dense shape (Shape_Para, Exp_Para and the basis "
                   f"{settings.basis}; mirrored for flipped crops) posed by the crop's m; no `shape` field is "
                   "stored: training builds dense shapes from shape_para/exp_para with basis=")
        if settings.basis else
        "no dense ground-truth shapes (no BFM basis given): no `shape` field; "
        "textures are unwrapped with the mean shape of the paper mesh posed by each crop's m "
        "(a stand-in: they line up with the photo only as well as the mean face does)",
        "crop": f"square window centred on the 68 landmarks' bounding box, side = {settings.crop_scale} x "
                f"its larger side, resized to {settings.image_size} (nl3dmm.data.crop)",
        "landmarks": f"landmark targets: {settings.landmarks} "
                     + ("(per sample the first it has of pts_3d, pt3d_68, dense, mean)" if settings.landmarks == AUTO
                        else "") + "; " + "; ".join(f"{k} = {v}" for k, v in DESCRIPTION.items())
                     + ". counts.landmark_conventions says how many records use each",
        "flip": "flipped samples mirror the crop; m = camera.flip_m (the mirrored face), landmarks re-ordered "
                "with camera.IBUG68_FLIP" if settings.flip else "no flipped copies",
    }
    return new_manifest({**asdict(settings), "digest": digest}, sources_info, notes)


def landmark_counts(manifest: dict) -> dict[str, int]:
    """Records per landmark convention over the finished shards of a store's manifest."""
    total: dict[str, int] = {}
    for shard in manifest.get("shards", []):
        for name, count in shard.get("landmarks", {}).items():
            total[name] = total.get(name, 0) + count
    return dict(sorted(total.items()))


def _reusable_shard(out: Path, index: int, digest: str, sources: list, log: Callable[[str], None]
                    ) -> ShardResult | None:
    """Shard `index` of `out` when its folder is whole and was made from `sources` with the
    settings of `digest` (keep it); None when it must be (re)built (a leftover is named)."""
    folder = out / shard_name(index)
    if not folder.exists():
        return None
    problem = shard_problem(folder)
    info = read_shard_info(folder) if problem is None else {}
    if problem is None and info.get("settings_digest") == digest and info.get("sources") == sources:
        return ShardResult(index, info["count"], len(sources), info.get("skipped", []),
                           landmarks=_count(info.get("landmark_conventions", [])))
    log(f"rebuilding {folder.name}: {problem or 'made from other sources or settings'}")
    return None


def _record_kept(manifest: dict, out: Path, kept: list[ShardResult], shards: int, log: Callable[[str], None]) -> None:
    """Put the shards kept from an earlier run on record in a manifest marked incomplete."""
    for result in kept:
        _finish_entry(manifest, result)
    manifest["complete"] = False
    write_manifest(out, manifest)
    if kept:
        log(f"resuming: {len(kept)} of {shards} shards already complete")


def _finish_entry(manifest: dict, result: ShardResult) -> None:
    manifest["shards"] = [s for s in manifest["shards"] if s["index"] != result.index]
    manifest["shards"].append({"index": result.index, "name": shard_name(result.index), "count": result.count,
                               "sources": result.sources, "skipped": len(result.skipped),
                               "landmarks": result.landmarks})
    manifest["shards"].sort(key=lambda s: s["index"])
    manifest["skipped"] = [e for e in manifest["skipped"] if e.get("shard") != result.index]
    manifest["skipped"] += [{**e, "shard": result.index} for e in result.skipped]
    manifest["skipped"].sort(key=lambda e: (e["shard"], e["sample"]))


def preprocess(src: str | Path, out: str | Path, settings: PreprocessSettings = PreprocessSettings(),
               workers: int = 1, progress: bool = True, log: Callable[[str], None] = print,
               samples: Sequence[str] | None = None) -> dict:
    """Build (or finish building) the store `out` from the samples under `src` (all found, or
    the stems `samples` relative to `src`, e.g. from a file list); return its manifest. See
    the module docstring for the plan, resuming and error handling."""
    src, out = Path(src).resolve(), Path(out)
    if samples is None:
        stems = find_samples(src)
        unpaired = _unpaired_images(src, stems)
    else:
        stems, unpaired = sorted(src / Path(s).with_suffix("") if Path(s).suffix in (".jpg", ".mat") else src / s
                                 for s in samples), []
    if not stems:
        raise FileNotFoundError(f"no samples (NAME.jpg beside NAME.mat) under {src}")
    relative = [s.relative_to(src).as_posix() for s in stems]
    digest = _digest(settings, relative)
    sources_info = {"root": str(src), "samples": len(relative), "unpaired_images": len(unpaired),
                    "unpaired_examples": unpaired[:20], "digest": digest}
    out.mkdir(parents=True, exist_ok=True)
    lock = _lock(out)
    try:
        manifest = _open_manifest(out, settings, digest, sources_info)
        for path in remove_temporaries(out):
            log(f"removed {path.name} (left by an interrupted run)")
        k = settings.shard_size
        jobs, done = [], []
        for index in range((len(relative) + k - 1) // k):
            planned = list(enumerate(relative))[index * k:(index + 1) * k]
            kept = _reusable_shard(out, index, digest, [rel for _, rel in planned], log)
            if kept is not None:
                done.append(kept)
            else:
                jobs.append(ShardJob(index, str(out), str(src), planned, settings, digest))
        _record_kept(manifest, out, done, len(done) + len(jobs), log)
        _run_jobs(jobs, manifest, out, settings, workers, progress, log,
                  initial=sum(r.count for r in done))
        total = sum(s["count"] for s in manifest["shards"])
        manifest["counts"] = {"samples": total, "sources": len(relative), "skipped_sources": len(manifest["skipped"]),
                              "flipped": total // 2 if settings.flip else 0,
                              "shards": len(manifest["shards"]), "unpaired_images": len(unpaired),
                              "landmark_conventions": landmark_counts(manifest)}
        manifest["complete"] = True
        write_manifest(out, manifest)
    finally:
        os.close(lock)
    return manifest


def _run_jobs(jobs: list[ShardJob], manifest: dict, out: Path, settings: PreprocessSettings, workers: int,
              progress: bool, log: Callable[[str], None], initial: int,
              build: Callable = build_shard, desc: str = "preprocess") -> None:
    """Run shard jobs (anything with `.sources`, made into a ShardResult by `build`, a top-level
    function so that 'spawn' workers can import it) one by one or in worker processes, with a
    progress bar counting `settings.records_per_source` records per source."""
    from tqdm import tqdm

    expected = initial + sum(len(j.sources) for j in jobs) * settings.records_per_source
    bar = tqdm(total=expected, initial=initial, unit="img", desc=desc, disable=not progress,
               dynamic_ncols=True, smoothing=0.1)

    skipped = [0]

    def on_event(kind: str, value) -> None:
        if kind == "done":
            bar.update(value)
        else:  # a skipped sample: shrink the total so the rate and the ETA stay honest
            skipped[0] += 1
            bar.total -= settings.records_per_source
            bar.set_postfix(skipped=skipped[0], refresh=False)
            (bar.write if progress else log)(f"skipped {value['sample']}: {value['error']}")

    def finished(result: ShardResult) -> None:
        _finish_entry(manifest, result)
        write_manifest(out, manifest)  # every finished shard is on record at once

    try:
        if workers <= 1 or len(jobs) <= 1:
            _WORKER["queue"] = on_event
            try:
                for job in jobs:
                    finished(build(job))
            finally:
                _WORKER.pop("queue", None)
            return
        context = get_context("spawn")
        events = context.Queue()
        count = min(workers, len(jobs))
        threads = max(1, (os.cpu_count() or 1) // count)
        with ProcessPoolExecutor(count, mp_context=context, initializer=_init_worker,
                                 initargs=(events, threads)) as pool:
            pending = {pool.submit(build, job) for job in jobs}
            while pending:
                ready, pending = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
                _drain(events, on_event)
                for future in ready:
                    finished(future.result())
            _drain(events, on_event)
    finally:
        bar.close()


def _drain(events, on_event) -> None:
    while True:
        try:
            kind, value = events.get_nowait()
        except queue.Empty:
            return
        on_event(kind, value)
