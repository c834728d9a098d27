"""`nl3dmm profile SRC_STORE OUT_STORE --views N --max-yaw 90`: a training store -> a store of
new large-pose views of its faces (profile_views.py draws them), in the same format.

Each source sample (a record of SRC_STORE: a crop, its m, its pseudo texture) gives `views`
views at sampled poses, plus, with `keep_source` (the default), a copy of itself, so OUT_STORE
trains on its own. A view keeps its source's record name, Shape_Para and Exp_Para: holding a
photo out (`exclude=`) takes its views along.

Plan, resuming, parallelism and errors as in `preprocess` (preprocess.py): source samples are
cut into shards of `shard_size`; shard i always holds the same sources; a re-run keeps every
whole shard of the same settings and sources and builds the rest; whole shards go to 'spawn'
worker processes; the poses of a source come from a generator seeded by (seed, source index),
so a shard's content does not depend on which worker made it. A source that cannot be profiled
is reported, listed in the manifest's `skipped`, and the run goes on.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from .preprocess import ShardResult, _WORKER, _lock, _record_kept, _report, _reusable_shard, _run_jobs
from .profile_views import GRAZING_DEGREES, FaceProfiler, sample_poses
from .store import (FIELDS, MANIFEST, REQUIRED_FIELDS, StoreError, new_manifest, read_manifest, remove_temporaries,
                    write_manifest, write_shard)


STORED_FIELDS = REQUIRED_FIELDS + ["landmark_visible"]


@dataclass(frozen=True)
class ProfileSettings:
    views: int = 10               # new views per source sample
    max_yaw: float = 90.0         # degrees: |yaw| of the views spans [0, max_yaw]
    max_pitch: float = 10.0       # degrees: pitch = the source's +- up to this
    max_roll: float = 10.0        # degrees: roll = the source's +- up to this
    scale_jitter: float = 0.1     # window side x U(1 - a, 1 + a)
    shift_jitter: float = 8.0     # window centre +- up to this many output pixels each way
    mirror: bool = False          # never-seen texels mirrored from the other side count as known
    keep_source: bool = True      # copy every source sample into the output too
    shard_size: int = 50          # source samples per shard
    seed: int = 0
    compress: bool = False        # .npz shards (small, loaded to RAM) instead of .npy (mapped)

    def __post_init__(self):
        if self.views < 1 or self.shard_size < 1:
            raise ValueError(f"views and shard_size must be >= 1, got {self.views} and {self.shard_size}")
        if not 0 <= self.max_yaw <= 90 or not 0 <= self.max_pitch <= 90 or not 0 <= self.max_roll <= 180:
            raise ValueError(f"max_yaw must be in [0, 90], max_pitch in [0, 90], max_roll in [0, 180] degrees, got "
                             f"{self.max_yaw}, {self.max_pitch}, {self.max_roll}")
        if not 0 <= self.scale_jitter < 1 or self.shift_jitter < 0:
            raise ValueError(f"scale_jitter must be in [0, 1) and shift_jitter >= 0, got {self.scale_jitter}, "
                             f"{self.shift_jitter}")

    @property
    def records_per_source(self) -> int:
        return self.views + int(self.keep_source)


@dataclass
class ProfileJob:
    index: int
    store: str
    src: str
    sources: list[int]            # source sample indices of SRC_STORE
    settings: ProfileSettings
    digest: str


def _source_store(path: str):
    """The source store and its record names, opened once per worker process."""
    cache = _WORKER.setdefault("profile_sources", {})
    if path not in cache:
        from .loader import TrainingStore
        store = TrainingStore(path)
        cache[path] = (store, store.sources())
    return cache[path]


def _profiler(mirror: bool) -> FaceProfiler:
    cache = _WORKER.setdefault("profilers", {})
    if mirror not in cache:
        cache[mirror] = FaceProfiler(mirror=mirror)
    return cache[mirror]


def _records_of(index: int, sample: dict, settings: ProfileSettings, profiler: FaceProfiler) -> tuple[list, list]:
    """The records (field dicts) of one source sample and their descriptions for shard.json."""
    rng = np.random.default_rng([settings.seed, index])
    poses = sample_poses(sample["m"], settings.views, rng, settings.max_yaw, settings.max_pitch, settings.max_roll,
                         settings.scale_jitter, settings.shift_jitter)
    views = profiler(sample["image"], sample["m"], sample["texture"], sample["texture_mask"], poses)
    records, notes = [], []
    if settings.keep_source:
        copy = {name: sample[name] for name in REQUIRED_FIELDS}
        copy["landmark_visible"] = profiler.landmark_visibility(sample["m"], sample["image"].shape[0])
        records.append(copy)
        notes.append({"view": 0})
    for k, pose in enumerate(poses):
        records.append({"image": views.image[k], "m": views.m[k], "landmarks": views.landmarks[k],
                        "texture": views.texture[k], "texture_mask": views.texture_mask[k],
                        "pose_para": views.pose_para[k], "shape_para": sample["shape_para"],
                        "exp_para": sample["exp_para"], "flipped": sample["flipped"],
                        "landmark_visible": views.landmark_visible[k]})
        notes.append({"view": k + 1, "yaw_deg": round(float(np.rad2deg(pose.yaw)), 2),
                      "filled": round(float(views.filled[k]), 4)})
    return records, notes


def build_profile_shard(job: ProfileJob) -> ShardResult:
    """Profile the source samples of one shard and write it (atomically)."""
    start = time.perf_counter()
    store, names = _source_store(job.src)
    profiler = _profiler(job.settings.mirror)
    records, described, skipped = [], [], []
    for index in job.sources:
        try:
            made, notes = _records_of(index, store.sample(index), job.settings, profiler)
        except Exception as exc:  # one bad sample must not end the run: name it and go on
            entry = {"sample": f"{names[index]} (#{index})", "error": f"{type(exc).__name__}: {exc}"}
            skipped.append(entry)
            _report("skip", entry)
            continue
        records += made
        described += [{"record": names[index], "source_index": index, **note} for note in notes]
        _report("done", len(made))
    arrays = {name: np.array([r[name] for r in records], FIELDS[name].dtype).reshape(
        (len(records),) + FIELDS[name].shape) for name in STORED_FIELDS}
    info = {"settings_digest": job.digest, "sources": job.sources, "records": [d["record"] for d in described],
            "views": described, "skipped": skipped}
    write_shard(job.store, job.index, arrays, info, compress=job.settings.compress)
    return ShardResult(job.index, len(records), len(job.sources), skipped, time.perf_counter() - start)


def _digest(settings: ProfileSettings, source_manifest: dict, count: int) -> str:
    text = json.dumps(asdict(settings), sort_keys=True) + "\n" + json.dumps(source_manifest.get("settings", {}),
                                                                           sort_keys=True) + f"\n{count}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _notes(settings: ProfileSettings, src: Path) -> dict:
    unseen = ("mirrored: never-seen texels whose mirror texel (UV column flip) was seen are copied from it and "
              "count as known in texture_mask; the rest are filled from the nearest seen texel for drawing only "
              "and are false in texture_mask") if settings.mirror else \
             ("masked: never-seen texels are drawn with the mirror texel's colour (else the nearest seen "
              "texel's) so the image has no holes, and are false in texture_mask, so the texture loss never "
              "trains on them; the image itself (and so the reconstruction loss) does show them")
    return {
        "profile": f"views of the samples of {src}: the face turned in 3-D and re-rendered with its own pseudo "
                   "texture by nl3dmm's renderer over its own crop, warped (nl3dmm.data.profile_views)",
        "unseen_regions": unseen + f"; texels seen more obliquely than {GRAZING_DEGREES:g} degrees count as "
                                   "never seen. shard.json 'views' gives each view's share of face pixels drawn "
                                   "from never-seen texels ('filled')",
        "geometry": "the paper mesh's mean shape posed by each sample's m (the geometry the source store's pseudo "
                    "textures were unwrapped with); m, landmarks and landmark_visible of a view are exact for "
                    "it; shape_para / exp_para / flipped are the source label's",
        "pose_para": "of a view: its own angles, translation and scale in its own 224 x 224 frame "
                     "(pose_para_to_m(pose_para) == m); of a source copy: as in the source store",
        "texture": "of a view: the source's pseudo texture on texels both known (see unseen_regions) and "
                   "visible in the view; 0 elsewhere",
        "poses": f"|yaw| stratified over [0, {settings.max_yaw:g}] degrees on the side the source faces; pitch and "
                 f"roll the source's +- {settings.max_pitch:g} / {settings.max_roll:g} degrees; window side x "
                 f"U(1 +- {settings.scale_jitter:g}), centre +- {settings.shift_jitter:g} px; seed {settings.seed}",
        "records": "shard.json 'views': per record its source record and index, view number (0 = the source "
                   "copied unchanged), yaw in degrees and 'filled'",
    }


def _check_source(src: Path) -> tuple[dict, int]:
    from .loader import TrainingStore
    store = TrainingStore(src)
    if store.manifest.get("settings", {}).get("basis"):
        raise StoreError(f"{src} was unwrapped with dense shapes (basis=); profile renders the mean shape only, "
                         "so its views would not match those textures: profile a store made without --basis")
    missing = [name for name in REQUIRED_FIELDS if name not in store.fields]
    if missing:
        raise StoreError(f"{src}: the store lacks fields {missing}, which profiling needs")
    return store.manifest, len(store)


def profile(src: str | Path, out: str | Path, settings: ProfileSettings = ProfileSettings(), workers: int = 1,
            progress: bool = True, log: Callable[[str], None] = print) -> dict:
    """Build (or finish building) the store `out` of views of the samples of the store `src`;
    return its manifest. See the module docstring."""
    src, out = Path(src).resolve(), Path(out)
    if out.resolve() == src:
        raise ValueError(f"the output store must be a new folder, not the source {src}")
    source_manifest, count = _check_source(src)
    digest = _digest(settings, source_manifest, count)
    out.mkdir(parents=True, exist_ok=True)
    lock = _lock(out)
    try:
        if (out / MANIFEST).is_file():
            manifest = read_manifest(out)
            if manifest.get("settings") != {**asdict(settings), "digest": digest}:
                raise StoreError(f"{out} holds a store made with other settings or sources; use a new output folder "
                                 "or delete this one")
        elif any(out.iterdir()):
            raise StoreError(f"{out} is not empty and has no {MANIFEST}: refusing to write into it")
        else:
            manifest = new_manifest({**asdict(settings), "digest": digest},
                                    {"root": str(src), "samples": count, "kind": "training store",
                                     "source_settings": source_manifest.get("settings", {})},
                                    _notes(settings, src))
        for path in remove_temporaries(out):
            log(f"removed {path.name} (left by an interrupted run)")
        k = settings.shard_size
        jobs, done = [], []
        for index in range((count + k - 1) // k):
            planned = list(range(index * k, min((index + 1) * k, count)))
            kept = _reusable_shard(out, index, digest, planned, log)
            if kept is not None:
                done.append(kept)
            else:
                jobs.append(ProfileJob(index, str(out), str(src), planned, settings, digest))
        _record_kept(manifest, out, done, len(done) + len(jobs), log)
        _run_jobs(jobs, manifest, out, settings, workers, progress, log, initial=sum(r.count for r in done),
                  build=build_profile_shard, desc="profile")
        total = sum(s["count"] for s in manifest["shards"])
        manifest["counts"] = {"samples": total, "sources": count, "skipped_sources": len(manifest["skipped"]),
                              "views": total - (count - len(manifest["skipped"])) * int(settings.keep_source),
                              "shards": len(manifest["shards"])}
        manifest["complete"] = True
        write_manifest(out, manifest)
    finally:
        os.close(lock)
    return manifest
