"""The store loader: batches with the documented shapes, dtypes and ranges; every sample once
per epoch; shard-local shuffling; torch DataLoader interop."""
from __future__ import annotations

import json
import time

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from nl3dmm.data.loader import BatchLoader, ShardBatchSampler, StoreDataset, TrainingStore
from nl3dmm.data.store import FIELDS, write_shard

ALL_FIELDS = [name for name, f in FIELDS.items() if not f.optional]


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    """A store of random samples in three shards of unequal size (7 + 5 + 9), with a dense
    `shape` field as a store made with the BFM bases would have."""
    root = tmp_path_factory.mktemp("synthetic")
    rng = np.random.default_rng(0)
    counts, entries = [7, 5, 9], []
    for index, n in enumerate(counts):
        arrays = {}
        for name in ALL_FIELDS:
            f = FIELDS[name]
            if f.dtype == "uint8":
                arrays[name] = rng.integers(0, 256, (n,) + f.shape, dtype=np.uint8)
            elif f.dtype == "bool":
                arrays[name] = rng.random((n,) + f.shape) < 0.5
            else:
                arrays[name] = rng.standard_normal((n,) + f.shape).astype(np.float32)
        arrays["image"][:, 0, 0] = [0, 255, 128]  # the extremes map to exactly -1 and 1
        arrays["shape"] = rng.standard_normal((n, 30)).astype(np.float32)
        write_shard(root, index, arrays, {})
        entries.append({"index": index, "name": f"shard-{index:05d}", "count": n})
    manifest = {"format": "nl3dmm-training-store", "version": 1, "complete": True, "shards": entries}
    (root / "manifest.json").write_text(json.dumps(manifest))
    return root


def test_store_gathers_in_any_order(synthetic):
    store = TrainingStore(synthetic)
    assert len(store) == 21 and store.fields[-1] == "shape"
    order = np.array([20, 3, 7, 7, 0, 12, 11])  # across shards, repeated, unsorted
    images = store.gather("image", order)
    for row, index in enumerate(order):
        shard, local = store.locate(np.array([index]))
        assert np.array_equal(images[row], store.shards[shard[0]]["image"][local[0]])
        assert np.array_equal(store.sample(int(index))["shape"], store.gather("shape", [index])[0])
    with pytest.raises(IndexError):
        store.gather("m", [21])
    with pytest.raises(KeyError, match="no field 'albedo'"):
        store.gather("albedo", [0])


def test_batches_have_the_documented_layout(synthetic):
    store = TrainingStore(synthetic)
    loader = BatchLoader(store, batch_size=4, fields=ALL_FIELDS + ["shape"], device="cpu", shuffle="global", seed=3)
    assert len(loader) == 5  # 21 // 4, last partial batch dropped
    seen = []
    for batch in loader:
        index = batch["index"].numpy()
        seen += list(index)
        assert batch["image"].shape == (4, 3, 224, 224) and batch["image"].dtype == torch.float32
        assert batch["texture"].shape == (4, 192, 224, 3) and batch["texture"].dtype == torch.float32
        assert batch["image"].is_contiguous()
        for name in ("image", "texture"):
            assert batch[name].min() >= -1 and batch[name].max() <= 1
        expected = torch.from_numpy(store.gather("image", index)).permute(0, 3, 1, 2).float() / 127.5 - 1
        assert torch.allclose(batch["image"], expected, atol=1e-6)
        assert (batch["image"][:, :2, 0, 0] == torch.tensor([-1.0, 1.0])).all()  # exact ends
        texture = torch.from_numpy(store.gather("texture", index)).float() / 127.5 - 1
        assert torch.allclose(batch["texture"], texture, atol=1e-6)
        for name in ("m", "landmarks", "texture_mask", "flipped", "shape", "pose_para"):
            assert batch[name].dtype == torch.from_numpy(store.gather(name, index[:1])).dtype
            assert np.array_equal(batch[name].numpy(), store.gather(name, index)), name
    assert len(seen) == 20 and len(set(seen)) == 20
    # Batches handed out earlier are not overwritten by later gathers (host buffers are reused).
    batches = list(BatchLoader(store, batch_size=4, device="cpu", shuffle="none", prefetch=1))
    for batch in batches:
        assert torch.equal(batch["m"], torch.from_numpy(store.gather("m", batch["index"].numpy())))


def test_epochs_cover_everything_and_shard_mode_stays_local(synthetic):
    store = TrainingStore(synthetic)
    sampler = ShardBatchSampler(store.counts, batch_size=4, shuffle="shard", drop_last=False, seed=1)
    first = list(sampler)
    assert sorted(np.concatenate(first)) == list(range(21))
    for batch in first:
        assert len(np.unique(store.locate(batch)[0])) <= 2
    assert [b.tolist() for b in sampler] == [b.tolist() for b in first]  # same epoch, same order
    sampler.set_epoch(1)
    assert [b.tolist() for b in sampler] != [b.tolist() for b in first]
    loader = BatchLoader(store, batch_size=5, device="cpu", drop_last=False)
    assert sorted(torch.cat([b["index"] for b in loader]).tolist()) == list(range(21))


def test_stopping_early_does_not_hang(synthetic):
    loader = BatchLoader(synthetic, batch_size=2, device="cpu", prefetch=1)
    start = time.perf_counter()
    for _ in range(3):
        for i, _ in enumerate(loader):
            if i == 1:
                break
    assert time.perf_counter() - start < 3.0


def test_dataset_works_with_torch_dataloader(synthetic):
    dataset = StoreDataset(synthetic, fields=["image", "m"])
    assert dataset[5]["image"].shape == (224, 224, 3) and dataset[5]["image"].dtype == torch.uint8
    sampler = ShardBatchSampler(dataset.store.counts, batch_size=6, shuffle="none", drop_last=False)
    loader = DataLoader(dataset, batch_sampler=sampler, collate_fn=lambda batch: batch)
    batches = list(loader)
    assert [len(b["index"]) for b in batches] == [6, 6, 6, 3]
    assert torch.equal(batches[1]["image"][0], dataset[6]["image"])
    assert torch.equal(batches[3]["m"][2], dataset[20]["m"])
