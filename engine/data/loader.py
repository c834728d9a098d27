"""Reading a training store (store.py) for training.

* `TrainingStore`: the manifest and every shard's arrays, memory-mapped (compressed shards
  are read into memory); global sample index <-> (shard, row); `gather` copies a set of
  samples of one field into a caller's buffer, one `np.take` per shard over sorted rows, so
  the reads go through each mapped file in order.
* `StoreDataset`: a torch map-style Dataset of single samples (uint8 / float32 tensors as
  stored), with `__getitems__` so a torch DataLoader fetches whole batches with `gather`.
* `ShardBatchSampler`: batches of indices, shuffled either globally or shard by shard (every
  batch then comes from one or two shards: fewer files touched per batch on a cold cache).
* `BatchLoader`: the fast path. A background thread gathers the next batches into pinned
  host buffers (when CUDA is available); the consumer's thread copies them to the device
  without blocking and converts there: images to float (B, 3, 224, 224) in [-1, 1],
  textures to float (B, 192, 224, 3) in [-1, 1] (the texture decoder's layout).
"""
from __future__ import annotations

import queue
import threading
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from ..runtime import resolve_device
from .store import StoreError, open_shard, read_manifest, shard_name

# Fields scaled from uint8 [0, 255] to float [-1, 1] on the device.
UINT8_TO_SIGNED = ("image", "texture")
DEFAULT_FIELDS = ("image", "m", "landmarks", "texture", "texture_mask")


class TrainingStore:
    """A store opened for reading. `require_complete` refuses stores whose build has not
    finished (their manifest says so); the shards listed are readable either way."""

    def __init__(self, root: str | Path, require_complete: bool = True, mmap: bool = True):
        self.root = Path(root)
        self.manifest = read_manifest(self.root)
        if require_complete and not self.manifest.get("complete"):
            raise StoreError(f"{self.root}: the store is incomplete (its build was interrupted: run the same "
                             "preprocess command again to finish it)")
        self.shards: list[dict[str, np.ndarray]] = []
        for entry in self.manifest["shards"]:
            if entry["count"] == 0:
                continue  # every source of the shard was skipped
            arrays = open_shard(self.root / entry.get("name", shard_name(entry["index"])), mmap=mmap)
            lengths = {len(a) for a in arrays.values()}
            if lengths != {entry["count"]}:
                raise StoreError(f"{self.root / entry['name']}: arrays of lengths {sorted(lengths)}, manifest says "
                                 f"{entry['count']}")
            self.shards.append(arrays)
        if not self.shards:
            raise StoreError(f"{self.root}: the store holds no samples")
        self.counts = np.array([len(s["image"]) for s in self.shards], np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(self.counts)])
        self.fields = [name for name in self.shards[0] if all(name in s for s in self.shards)]

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def locate(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(shard number, row in the shard) of global sample `indices`."""
        indices = np.asarray(indices, dtype=np.int64)
        if indices.size and (indices.min() < 0 or indices.max() >= len(self)):
            raise IndexError(f"sample index out of range 0..{len(self) - 1}")
        shard = np.searchsorted(self.offsets, indices, side="right") - 1
        return shard, indices - self.offsets[shard]

    def field_spec(self, name: str) -> tuple[np.dtype, tuple[int, ...]]:
        if name not in self.fields:
            raise KeyError(f"{self.root}: no field '{name}' (has {self.fields})")
        array = self.shards[0][name]
        return array.dtype, array.shape[1:]

    def gather(self, name: str, indices: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Field `name` of samples `indices` (any order), as a (len(indices), ...) array in that
        order; into `out` when given. Sorted indices read each shard file front to back."""
        indices = np.asarray(indices, dtype=np.int64)
        dtype, shape = self.field_spec(name)
        if out is None:
            out = np.empty((len(indices),) + shape, dtype)
        order = np.argsort(indices, kind="stable")
        shard, row = self.locate(indices[order])
        if np.array_equal(order, np.arange(len(order))):
            target = out
        else:
            target = np.empty_like(out)
        bounds = np.flatnonzero(np.diff(shard)) + 1
        for lo, hi in zip(np.r_[0, bounds], np.r_[bounds, len(shard)]):
            if hi > lo:
                np.take(self.shards[shard[lo]][name], row[lo:hi], axis=0, out=target[lo:hi])
        if target is not out:
            out[order] = target
        return out

    def sources(self) -> list[str]:
        """The source photo of every sample, in sample order (each shard's `records`): the unit
        to hold out, since the crops and flips of one photo are not independent samples."""
        from .store import read_shard_info
        records: list[str] = []
        for entry in self.manifest["shards"]:
            name = entry.get("name", shard_name(entry["index"]))
            info = read_shard_info(self.root / name)
            if len(info.get("records", [])) != entry["count"]:
                raise StoreError(f"{self.root / name}: shard.json lacks one record per sample")
            records.extend(info["records"])
        return records

    def faces(self, records: list[str] | None = None) -> np.ndarray:
        """The face each sample shows, named by the first source photo whose label has the same
        Shape_Para and Exp_Para. 300W-LP stores each synthesized view of a photo as its own
        record with the parameters of the original, so a held-out face must take all its views
        along. Without parameter fields, the source photo. `records`: `sources()`, when the
        caller has it already."""
        sources = np.array(self.sources() if records is None else records)
        if not {"shape_para", "exp_para"} <= set(self.fields):
            return sources
        every = np.arange(len(self))
        keys = np.concatenate([self.gather("shape_para", every), self.gather("exp_para", every)], 1)
        _, first, inverse = np.unique(keys, axis=0, return_index=True, return_inverse=True)
        return sources[first][inverse.reshape(-1)]

    def select_sources(self, exclude: Sequence[str] = ()) -> np.ndarray:
        """Indices of the samples whose face is not shown by any source photo in `exclude`. A
        name matches a record exactly or by its last path part (`image00050` matches
        `prnet/aflw2000/image00050`); every view of a matched face goes (see `faces`). A name
        that matches nothing is an error, so a typo cannot silently train on a test photo."""
        records = self.sources()
        faces = self.faces(records)
        keep = np.ones(len(records), dtype=bool)
        for name in exclude:
            hit = np.array([r == name or r.rsplit("/", 1)[-1] == name for r in records], dtype=bool)
            if not hit.any():
                raise ValueError(f"{self.root}: no source photo named {name!r} to exclude "
                                 f"(records look like {records[0]!r})")
            keep &= ~np.isin(faces, faces[hit])
        if not keep.any():
            raise ValueError(f"{self.root}: excluding {list(exclude)} leaves no samples")
        return np.flatnonzero(keep)

    def sample(self, index: int) -> dict[str, np.ndarray]:
        shard, row = self.locate(np.array([index]))
        return {name: np.array(a[row[0]]) for name, a in self.shards[shard[0]].items()}


class StoreDataset(Dataset):
    """Single samples as tensors, dtypes as stored (uint8 images/textures, float32 numbers).
    `__getitems__` lets torch's DataLoader fetch a whole batch of indices with one gather
    per field (pass `collate_fn=lambda batch: batch` with it, or rely on the default)."""

    def __init__(self, store: TrainingStore | str | Path, fields: Sequence[str] = DEFAULT_FIELDS):
        self.store = store if isinstance(store, TrainingStore) else TrainingStore(store)
        self.fields = list(fields)
        for name in self.fields:
            self.store.field_spec(name)

    def __len__(self) -> int:
        return len(self.store)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        sample = self.store.sample(int(index))
        return {name: torch.from_numpy(sample[name]) for name in self.fields}

    def __getitems__(self, indices: Sequence[int]) -> dict[str, torch.Tensor]:
        indices = np.asarray(indices, dtype=np.int64)
        batch = {name: torch.from_numpy(self.store.gather(name, indices)) for name in self.fields}
        batch["index"] = torch.from_numpy(indices)
        return batch


class ShardBatchSampler(Sampler):
    """Index batches over a store. `shuffle="global"`: one permutation of all samples;
    `"shard"`: shards in random order, each permuted within, cut into batches, batch order
    shuffled (batches span at most two shards); `"none"`: in order. Call `set_epoch` for a new
    order each epoch (the order is a function of (seed, epoch) only)."""

    def __init__(self, shard_counts: Sequence[int], batch_size: int, shuffle: str = "shard",
                 drop_last: bool = True, seed: int = 0):
        if shuffle not in ("global", "shard", "none"):
            raise ValueError(f"shuffle must be 'global', 'shard' or 'none', got {shuffle!r}")
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        self.counts = np.asarray(shard_counts, dtype=np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(self.counts)])
        self.batch_size, self.shuffle, self.drop_last, self.seed = batch_size, shuffle, drop_last, seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        total = int(self.offsets[-1])
        return total // self.batch_size if self.drop_last else -(-total // self.batch_size)

    def order(self) -> np.ndarray:
        rng = np.random.default_rng([self.seed, self.epoch])
        total = int(self.offsets[-1])
        if self.shuffle == "none":
            return np.arange(total)
        if self.shuffle == "global":
            return rng.permutation(total)
        return np.concatenate([self.offsets[s] + rng.permutation(self.counts[s])
                               for s in rng.permutation(len(self.counts))])

    def __iter__(self) -> Iterator[np.ndarray]:
        order = self.order()
        n = len(self) * self.batch_size if self.drop_last else len(order)
        batches = [order[i:i + self.batch_size] for i in range(0, n, self.batch_size)]
        if self.shuffle == "shard":
            rng = np.random.default_rng([self.seed, self.epoch, 1])
            batches = [batches[i] for i in rng.permutation(len(batches))]
        return iter(batches)


def to_device_batch(host: dict[str, torch.Tensor], device: torch.device, copy: bool) -> dict[str, torch.Tensor]:
    """Host batch (as stored) -> device batch: uint8 images/textures to float [-1, 1] (images
    channels-first), everything else as is. `copy` forces fresh tensors on the CPU, where
    `.to` would return the (reused) host buffers themselves."""
    out = {}
    for name, tensor in host.items():
        moved = tensor.to(device, non_blocking=True)
        if name in UINT8_TO_SIGNED:
            if name == "image":
                moved = moved.permute(0, 3, 1, 2)
            moved = moved.to(torch.float32, memory_format=torch.contiguous_format).div_(127.5).sub_(1.0)  # 0 -> -1, 255 -> 1 exactly
        elif copy and moved.data_ptr() == tensor.data_ptr():
            moved = moved.clone()
        out[name] = moved
    return out


class BatchLoader:
    """Batches of a store on `device`, gathered ahead of use by a background thread.

    Each item is a dict: `image` (B, 3, 224, 224) float32 in [-1, 1], `texture`
    (B, 192, 224, 3) float32 in [-1, 1], the other requested fields as stored (m,
    landmarks, ... float32; texture_mask, flipped bool) and `index` (B,) int64.
    `prefetch` batches are gathered ahead into a ring of host buffers, pinned when the
    device is CUDA so the copies run asynchronously.
    """

    def __init__(self, store: TrainingStore | str | Path, batch_size: int = 64,
                 fields: Sequence[str] = DEFAULT_FIELDS, device: str | torch.device | None = None,
                 shuffle: str = "shard", drop_last: bool = True, seed: int = 0, prefetch: int = 2,
                 pin_memory: bool | None = None):
        self.store = store if isinstance(store, TrainingStore) else TrainingStore(store)
        self.fields = list(fields)
        for name in self.fields:
            self.store.field_spec(name)
        self.device = resolve_device(device)
        self.sampler = ShardBatchSampler(self.store.counts, batch_size, shuffle, drop_last, seed)
        self.batch_size = batch_size
        self.prefetch = max(1, prefetch)
        self.pin_memory = (self.device.type == "cuda") if pin_memory is None else pin_memory
        self._buffers: list[dict[str, torch.Tensor]] = []

    def __len__(self) -> int:
        return len(self.sampler)

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)

    def _buffer(self) -> dict[str, torch.Tensor]:
        buffer = {}
        for name in self.fields:
            dtype, shape = self.store.field_spec(name)
            buffer[name] = torch.empty((self.batch_size,) + shape, dtype=torch.from_numpy(np.empty(0, dtype)).dtype,
                                       pin_memory=self.pin_memory)
        buffer["index"] = torch.empty(self.batch_size, dtype=torch.int64, pin_memory=self.pin_memory)
        return buffer

    def gather_into(self, buffer: dict[str, torch.Tensor], indices: np.ndarray) -> dict[str, torch.Tensor]:
        """Fill the first len(indices) rows of a host buffer; return views of them. Indices are
        sorted first: the batch is a set, and sorted rows read the shard files in order."""
        indices = np.sort(indices)
        n = len(indices)
        for name in self.fields:
            self.store.gather(name, indices, out=buffer[name][:n].numpy())
        buffer["index"][:n] = torch.from_numpy(indices)
        return {name: tensor[:n] for name, tensor in buffer.items()}

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        batches = list(self.sampler)
        slots = self.prefetch + 1  # one more than in flight: the consumer holds one
        if len(self._buffers) < slots:
            self._buffers += [self._buffer() for _ in range(slots - len(self._buffers))]
        ready: queue.Queue = queue.Queue(maxsize=self.prefetch)
        free: queue.Queue = queue.Queue()
        for slot in range(slots):
            free.put((slot, None))
        stop = threading.Event()

        def produce() -> None:
            try:
                for indices in batches:
                    slot, event = free.get()
                    if stop.is_set():
                        return
                    if event is not None:
                        event.synchronize()  # the device copy out of this buffer has finished
                    ready.put((slot, self.gather_into(self._buffers[slot], indices)))
                ready.put(None)
            except BaseException as exc:  # surface gather errors in the consumer's thread
                ready.put(exc)

        thread = threading.Thread(target=produce, name="nl3dmm-batch-gather", daemon=True)
        thread.start()
        cuda = self.device.type == "cuda"
        try:
            while True:
                item = ready.get()
                if item is None:
                    return
                if isinstance(item, BaseException):
                    raise item
                slot, host = item
                batch = to_device_batch(host, self.device, copy=not cuda)
                event = None
                if cuda:
                    event = torch.cuda.Event()
                    event.record()
                free.put((slot, event))
                yield batch
        finally:
            # Stopped early (break, error): unblock the producer wherever it waits, then join.
            stop.set()
            while True:
                try:
                    ready.get_nowait()
                except queue.Empty:
                    break
            free.put((0, None))
            thread.join()
