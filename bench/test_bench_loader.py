"""pytest-benchmark suite of the training-store loader on a synthetic store (the real field
layout, random contents; 2 shards x 256 samples, about 160 MB in a temp folder).

    pytest bench/test_bench_loader.py --benchmark-json=bench/results/<name>.json
    pytest bench/test_bench_loader.py --benchmark-disable          # run once (CI)

Ids read `<what>[B<batch>-<fields>]`; images/s = batch / median time. Per-core rates and the
16-core extrapolation: `python bench/loader_throughput.py` (pins itself to one core).
"""
from __future__ import annotations

import pytest
import torch

from loader_throughput import synthetic_store
from nl3dmm.data.loader import DEFAULT_FIELDS, BatchLoader, TrainingStore

FIELD_SETS = {"all": list(DEFAULT_FIELDS), "image": ["image", "m", "landmarks"]}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = synthetic_store(tmp_path_factory.mktemp("loader-bench") / "store", shards=2, per_shard=256)
    opened = TrainingStore(root)
    for shard in opened.shards:  # warm page cache: time the loader, not the first disk read
        for array in shard.values():
            array.sum()
    return opened


@pytest.mark.parametrize("fields", list(FIELD_SETS))
@pytest.mark.parametrize("batch", [64], ids=lambda b: f"B{b}")
def test_gather(benchmark, store, fields, batch):
    """Host work of one batch (what the CPU does per batch when training on a GPU)."""
    loader = BatchLoader(store, batch, FIELD_SETS[fields], device="cpu", shuffle="global")
    buffer = loader._buffer()
    batches = iter(loader.sampler)
    out = benchmark.pedantic(lambda: loader.gather_into(buffer, next(batches)), rounds=6, iterations=1,
                             warmup_rounds=1)
    assert out["image"].shape == (batch, 224, 224, 3)
    benchmark.extra_info["images_per_batch"] = batch


@pytest.mark.parametrize("fields", list(FIELD_SETS))
@pytest.mark.parametrize("batch", [64], ids=lambda b: f"B{b}")
def test_batch_to_cpu_float(benchmark, store, fields, batch):
    """One batch from the full BatchLoader on device='cpu' (gather + float conversion)."""
    loader = BatchLoader(store, batch, FIELD_SETS[fields], device="cpu", shuffle="global", prefetch=1)

    def epoch_of_four():
        for k, item in enumerate(loader):
            if k == 3:
                return item

    item = benchmark.pedantic(epoch_of_four, rounds=3, iterations=1, warmup_rounds=1)
    assert item["image"].dtype == torch.float32 and item["image"].shape == (batch, 3, 224, 224)
    benchmark.extra_info["images_per_round"] = 4 * batch
