"""The bundled default training store (nl3dmm/assets/default_data): it loads with no shared
data, holds the 17 real photos with jittered and flipped crops whose cameras fit their
landmarks, its pseudo textures are filled where visible, and it rebuilds exactly."""
from __future__ import annotations

import json

import numpy as np

from nl3dmm.face.camera import project_m
from nl3dmm.data.default_data import SAMPLES, SETTINGS, default_store
from nl3dmm.data.loader import BatchLoader, TrainingStore
from nl3dmm.data.preprocess import preprocess
from nl3dmm.data.store import open_shard
from nl3dmm.face.facemodel import load_paper_mesh


def test_bundled_default_store():
    store = TrainingStore(default_store())
    manifest = store.manifest
    assert len(store) == 17 * SETTINGS.records_per_source == 68
    assert manifest["counts"]["skipped_sources"] == 0 and manifest["complete"]
    assert all(len(shard["image"]) for shard in store.shards)
    infos = [json.loads((store.root / f"shard-{i:05d}" / "shard.json").read_text()) for i in range(len(store.shards))]
    sources = [name for info in infos for name in info["records"]]
    windows = {(name, tuple(box)) for info in infos for name, box in zip(info["records"], info["boxes"])}
    assert sorted(set(sources)) == sorted(SAMPLES)
    assert len(windows) == 34  # two jittered windows per photo (each stored plain and flipped)
    assert store.gather("flipped", np.arange(len(store))).sum() == 34
    mesh = load_paper_mesh()
    kp = mesh.mean_shape[mesh.keypoints].astype(np.float64)
    for i in range(len(store)):
        sample = store.sample(i)
        visible = sample["texture_mask"]
        assert visible.mean() > 0.25, f"sample {i}: {visible.mean():.2f} of the texture visible"
        assert sample["texture"][visible].mean() > 20 and (sample["texture"][~visible] == 0).all()
        assert sample["image"].std() > 20
        error = np.linalg.norm(project_m(kp, sample["m"].astype(np.float64), 224) - sample["landmarks"], axis=1)
        assert error[17:].mean() < 7.0, f"sample {i}: mean face {error[17:].mean():.1f} px off"
    batch = next(iter(BatchLoader(store, batch_size=8, device="cpu")))
    assert batch["image"].shape == (8, 3, 224, 224)


def test_default_store_is_reproducible(shared_data, tmp_path):
    """Rebuilding the first shard's photos from shared/data gives the bundled shard exactly."""
    first = SAMPLES[:SETTINGS.shard_size]
    preprocess(shared_data, tmp_path / "again", SETTINGS, progress=False, samples=first, log=lambda _: None)
    rebuilt, bundled = open_shard(tmp_path / "again" / "shard-00000"), open_shard(default_store() / "shard-00000")
    assert set(rebuilt) == set(bundled)
    for name in bundled:
        assert np.array_equal(rebuilt[name], bundled[name]), name
    # Fixed zip timestamps: the same arrays give the same file, so a rebuild does not churn git.
    assert (tmp_path / "again" / "shard-00000" / "arrays.npz").read_bytes() == \
        (default_store() / "shard-00000" / "arrays.npz").read_bytes()
