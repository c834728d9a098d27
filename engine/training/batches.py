"""Which samples each rank sees at each step, and getting them onto the device.

The order is a function of (seed, epoch) only: every rank computes the same permutation and
takes its own slice of each global batch, so a resumed run (any number of ranks) sees exactly
the samples an uninterrupted one would have, with no sampler state to save.

Training data is anything with `__len__` and `get(indices) -> dict of numpy arrays`:
    image    (B, 224, 224, 3) uint8
    m        (B, 8) float32 camera in the 224 crop
    landmarks (B, 68, 2) float32, corner-frame pixels of the 224 crop
    texture  (B, Ht, Wt, 3) uint8 pseudo ground-truth UV texture (optional)
    texture_mask (B, Ht, Wt) bool/uint8 visible texels (with texture)
    shape    (B, Q, 3) float32 dense ground-truth shape (optional)
"""
from __future__ import annotations

from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F


class TrainingData(Protocol):
    def __len__(self) -> int: ...

    def get(self, indices: np.ndarray) -> dict[str, np.ndarray]: ...


class ArrayData:
    """Training data held in memory as arrays of equal length (tests, small sets)."""

    def __init__(self, **arrays: np.ndarray):
        lengths = {k: len(v) for k, v in arrays.items()}
        if len(set(lengths.values())) != 1:
            raise ValueError(f"arrays of unequal length: {lengths}")
        self.arrays = arrays

    def __len__(self) -> int:
        return len(next(iter(self.arrays.values())))

    def get(self, indices: np.ndarray) -> dict[str, np.ndarray]:
        return {k: v[indices] for k, v in self.arrays.items()}


class Schedule:
    """Global-batch indices per step: epochs are seeded permutations, batches run across
    epoch boundaries without dropping samples."""

    def __init__(self, size: int, global_batch: int, seed: int):
        if size == 0:
            raise ValueError("the training data is empty")
        self.size, self.global_batch, self.seed = size, global_batch, seed
        self._cache: dict[int, np.ndarray] = {}

    def _epoch(self, epoch: int) -> np.ndarray:
        if epoch not in self._cache:
            self._cache = {epoch: np.random.default_rng([self.seed, epoch]).permutation(self.size)}
        return self._cache[epoch]

    def global_indices(self, step: int) -> np.ndarray:
        start = step * self.global_batch
        positions = np.arange(start, start + self.global_batch)
        out = np.empty(self.global_batch, dtype=np.int64)
        for epoch in np.unique(positions // self.size):
            pick = positions // self.size == epoch
            out[pick] = self._epoch(int(epoch))[positions[pick] % self.size]
        return out

    def rank_micro_batches(self, step: int, rank: int, world: int, accumulate: int) -> list[np.ndarray]:
        """This rank's micro-batches of the step's global batch."""
        per_rank = self.global_batch // world
        mine = self.global_indices(step)[rank * per_rank:(rank + 1) * per_rank]
        return np.array_split(mine, accumulate)


def to_device(arrays: dict[str, np.ndarray], device: torch.device) -> dict[str, torch.Tensor]:
    """uint8 images/textures -> float in [-1, 1]; images channels-first in channels_last memory
    (the encoder's fast layout); copies are non-blocking from pinned memory on CUDA."""
    pin = device.type == "cuda"
    out: dict[str, torch.Tensor] = {}
    for key, value in arrays.items():
        t = torch.from_numpy(np.ascontiguousarray(value))
        if pin:
            t = t.pin_memory()
        t = t.to(device, non_blocking=True)
        if key in ("image", "texture"):
            t = t.float().div_(127.5).sub_(1.0)
        elif key == "texture_mask":
            t = t.float()
        elif t.dtype == torch.float64:
            t = t.float()
        out[key] = t
    out["image_hwc"] = out["image"]
    out["image"] = out["image"].permute(0, 3, 1, 2).contiguous(memory_format=torch.channels_last)
    return out


def crop_offsets(indices: np.ndarray, step: int, seed: int, crop_shift: int) -> np.ndarray:
    """(B, 2) int64 (dx, dy) in [-crop_shift // 2, crop_shift - crop_shift // 2]: the authors'
    per-iteration offsets 0..crop_shift around the centred window, fresh every step. Each is a
    function of (seed, step, sample index) only, so resumed runs and any number of ranks draw
    the same offsets for the same sample at the same step."""
    if crop_shift < 0:
        raise ValueError(f"crop_shift must be >= 0, got {crop_shift}")
    offsets = np.stack([np.random.default_rng([seed, step, int(i)]).integers(0, crop_shift + 1, 2)
                        for i in np.asarray(indices).reshape(-1)]) if len(indices) else np.zeros((0, 2), np.int64)
    return offsets.astype(np.int64) - crop_shift // 2


def shift_crops(batch: dict[str, torch.Tensor], offsets: np.ndarray | torch.Tensor,
                fill: float = -1.0) -> dict[str, torch.Tensor]:
    """Move each sample's 224 window by (dx, dy) pixels (right, down), on the batch's device:
    the image is re-gathered (pixels from outside the crop are `fill`, black in [-1, 1], like
    the zero padding of the stored crops), the landmarks move by (-dx, -dy) and m's
    translation is corrected so the same model points project onto the same image content:
    u -= dx, v += dy (v points up; camera.py). UV-space fields are unchanged."""
    image = batch["image_hwc"]
    B, H, W, C = image.shape
    offsets = torch.as_tensor(offsets, device=image.device, dtype=torch.long).reshape(B, 2)
    pad = int(offsets.abs().max()) if B else 0
    if pad == 0:
        return batch
    padded = F.pad(image.permute(0, 3, 1, 2), (pad, pad, pad, pad), value=fill)
    rows = pad + offsets[:, 1, None] + torch.arange(H, device=image.device)   # (B, H)
    cols = pad + offsets[:, 0, None] + torch.arange(W, device=image.device)   # (B, W)
    index = torch.arange(B, device=image.device)[:, None, None]
    moved = padded.permute(0, 2, 3, 1)[index, rows[:, :, None], cols[:, None, :]]  # (B, H, W, C)
    out = dict(batch)
    out["image_hwc"] = moved
    out["image"] = moved.permute(0, 3, 1, 2).contiguous(memory_format=torch.channels_last)
    delta = offsets.to(batch["m"].dtype)
    m = batch["m"].clone()
    m[:, 6] -= delta[:, 0]
    m[:, 7] += delta[:, 1]
    out["m"] = m
    if "landmarks" in batch:
        out["landmarks"] = batch["landmarks"] - delta[:, None, :].to(batch["landmarks"].dtype)
    return out
