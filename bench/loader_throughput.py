"""Images per second of the training-store loader, per CPU core.

    python bench/loader_throughput.py                    # synthetic store in a temp folder
    python bench/loader_throughput.py --store OUT        # an existing store (e.g. from preprocess)

What is timed (each `--repeats` times over `--batches` batches of `--batch-size`; the store is
read once first, so these are warm page-cache rates):

* gather: host work per batch of the BatchLoader (sorted indices, one np.take per shard and
  field into a reusable buffer). On a GPU node this is all the CPU does per batch: the copy to
  the GPU is DMA from pinned memory and the uint8 -> float conversion runs on the GPU.
* gather+convert: the whole BatchLoader with device="cpu" (adds the float conversion on the
  CPU, in the consumer thread): the rate of a CPU-only machine like ours.

The process is pinned to one core (os.sched_setaffinity) with one torch thread, so the numbers
are per core; the extrapolation to N cores assumes linear scaling, which memory bandwidth caps
(the printout says by how much a field set needs).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from nl3dmm.data.loader import DEFAULT_FIELDS, BatchLoader, TrainingStore
from nl3dmm.data.store import FIELDS, write_shard


def synthetic_store(root: Path, shards: int = 4, per_shard: int = 512, seed: int = 0) -> Path:
    """A store of random samples with the real field layout (no textures computed)."""
    rng = np.random.default_rng(seed)
    entries = []
    for index in range(shards):
        arrays = {}
        for name, f in FIELDS.items():
            if f.optional:
                continue
            shape = (per_shard,) + f.shape
            if f.dtype == "uint8":
                arrays[name] = rng.integers(0, 256, shape, dtype=np.uint8)
            elif f.dtype == "bool":
                arrays[name] = rng.random(shape) < 0.6
            else:
                arrays[name] = rng.standard_normal(shape).astype(np.float32)
        write_shard(root, index, arrays, {"synthetic": True})
        entries.append({"index": index, "name": f"shard-{index:05d}", "count": per_shard})
    manifest = {"format": "nl3dmm-training-store", "version": 1, "complete": True, "shards": entries,
                "notes": {"synthetic": "random arrays for benchmarks"}}
    (root / "manifest.json").write_text(json.dumps(manifest))
    return root


def bytes_per_sample(store: TrainingStore, fields) -> int:
    return sum(int(np.prod(store.field_spec(f)[1])) * store.field_spec(f)[0].itemsize for f in fields)


def time_gather(store: TrainingStore, fields, batch_size: int, batches: int, repeats: int) -> list[float]:
    loader = BatchLoader(store, batch_size, fields, device="cpu", shuffle="global")
    buffer = loader._buffer()
    order = list(loader.sampler)
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        for k in range(batches):
            loader.gather_into(buffer, order[k % len(order)])
        rates.append(batches * batch_size / (time.perf_counter() - start))
    return rates


def time_loader(store: TrainingStore, fields, batch_size: int, batches: int, repeats: int) -> list[float]:
    loader = BatchLoader(store, batch_size, fields, device="cpu", shuffle="global")
    rates = []
    for epoch in range(repeats):
        loader.set_epoch(epoch)
        start, seen = time.perf_counter(), 0
        for k, batch in enumerate(loader):
            seen += len(batch["index"])
            if k + 1 == batches:
                break
        rates.append(seen / (time.perf_counter() - start))
    return rates


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", help="an existing store (default: a synthetic one in a temp folder)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--batches", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--cores", type=int, default=16, help="node size for the extrapolation")
    parser.add_argument("--target", type=float, default=5000.0, help="images/s the node must sustain")
    args = parser.parse_args(argv)

    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as temp:
        root = Path(args.store) if args.store else synthetic_store(Path(temp) / "store")
        store = TrainingStore(root)
        for shard in store.shards:  # warm the page cache: these are warm-cache rates
            for array in shard.values():
                np.asarray(array).sum()
        print(f"store {root}: {len(store)} samples in {len(store.shards)} shards; batch {args.batch_size}, "
              f"{args.batches} batches x {args.repeats} repeats, 1 core, 1 torch thread "
              f"({os.cpu_count()} logical CPUs on this machine)")
        sets = {"all default fields": list(DEFAULT_FIELDS), "image + m + landmarks": ["image", "m", "landmarks"]}
        for label, fields in sets.items():
            size = bytes_per_sample(store, fields)
            for what, timer in (("gather", time_gather), ("gather+convert", time_loader)):
                rates = timer(store, fields, args.batch_size, args.batches, args.repeats)
                median = statistics.median(rates)
                print(f"{label:>22} | {what:>14}: median {median:8.0f} img/s/core (min {min(rates):.0f}, "
                      f"max {max(rates):.0f}; {size / 1024:.0f} KiB/sample = {median * size / 2**30:.2f} GiB/s)")
                if what == "gather":
                    need = args.target / median
                    print(f"{'':>22} | {'':>14}  x {args.cores} cores if linear: {median * args.cores:,.0f} img/s; "
                          f"{args.target:,.0f} img/s needs {need:.2f} core(s) and "
                          f"{args.target * size / 2**30:.2f} GiB/s of memory (or disk, cold) bandwidth")
    return 0


if __name__ == "__main__":
    sys.exit(main())
