"""Deferred value checks: failures counted on the device, reported without a sync per op.

The ops check their inputs' values (no NaN/Inf, vertex indices and raster ids in range) in one
of two modes, the ops' `validate=` argument:

    "full"      checked on the host before the kernels run; the error names the argument at
                once. On CUDA each check is a device-to-host sync (about four per forward).
                The default for CPU tensors, where a "sync" costs nothing.
    "deferred"  each check is one reduction whose outcome (a 0-d bool on the device) is added
                to a small int32 counter per (op, argument) on the inputs' device: no sync, so
                a training step can be captured in a CUDA graph. check_pending() reads the
                counters once (one sync), clears them and raises ValueError naming every op
                argument that failed and how often. The default for CUDA tensors.

A deferred failure still never passes silently: on CUDA, every deferred op also copies the
counters to pinned host memory asynchronously and records an event; the next deferred op on
that device looks at the copy when that event has completed (a non-blocking query) and raises.
So without any check_pending() call an error surfaces a few ops later; with one per training
step (the intended use) it surfaces at that step. The kernels themselves mask out-of-range
indices, so a deferred bad index reads no memory out of bounds in the meantime.

Cost of "deferred" per checked tensor: one aminmax reduction (one read of the tensor) and two
or three tiny kernels; per op, one device-to-host copy of the counters (4 bytes per slot below)
and one event on CUDA.
"""
from __future__ import annotations

from typing import Optional

import torch

# (op, argument) slots and the problem each one reports.
SLOTS = {
    ("rasterize", "pos"): "contains NaN or Inf",
    ("rasterize", "tri"): "has a vertex index outside 0..V-1",
    ("interpolate", "attr"): "contains NaN or Inf",
    ("interpolate", "tri"): "has a vertex index outside 0..V-1",
    ("interpolate", "rast"): "holds NaN/Inf or ids that are not 0..F (was it made by rasterize with this tri?)",
    ("sample_texture", "tex"): "contains NaN or Inf",
    ("sample_texture", "uv"): "contains NaN or Inf",
    ("antialias", "color"): "contains NaN or Inf",
    ("antialias", "pos"): "contains NaN or Inf",
    ("antialias", "tri"): "has a vertex index outside 0..V-1",
    ("antialias", "rast"): "holds NaN/Inf or ids that are not 0..F (was it made by rasterize with this tri?)",
    ("antialias", "topology"): "holds an index outside -1..V-1",
    ("sample_texture", "uv_da"): "contains NaN or Inf",
    ("sample_texture", "mip"): "contains NaN or Inf",
    ("interpolate_derivatives", "attr"): "contains NaN or Inf",
    ("interpolate_derivatives", "tri"): "has a vertex index outside 0..V-1",
    ("interpolate_derivatives", "rast"): "holds NaN/Inf or ids that are not 0..F (was it made by rasterize with this tri?)",
    ("interpolate_derivatives", "pos"): "contains NaN or Inf",
    # The C++/CUDA kernels' own index checks (csrc/index_checks.h), for when validation was bypassed.
    ("kernel", "indices"): "met a vertex index, raster id or uv it could not use (the element was skipped)",
    # render_textured's own inputs (its texture is checked as sample_texture's).
    ("render_textured", "attr"): "contains NaN or Inf",
    ("render_textured", "tri"): "has a vertex index outside 0..V-1",
    ("render_textured", "background"): "contains NaN or Inf",
    ("render_textured", "mask"): "contains NaN or Inf",
}
_INDEX = {slot: i for i, slot in enumerate(SLOTS)}


class _Counters:
    """The failure counts of one device, and (on CUDA) their asynchronous host copy."""

    def __init__(self, device: torch.device) -> None:
        self.counts = torch.zeros(len(SLOTS), dtype=torch.int32, device=device)
        self.host: Optional[torch.Tensor] = None
        self.event = None
        if device.type == "cuda":
            self.host = torch.zeros(len(SLOTS), dtype=torch.int32, pin_memory=True)

    def publish(self) -> None:
        """Start copying the counts to the host; poll() looks at them once the copy is done."""
        if self.host is None or torch.cuda.is_current_stream_capturing():
            return
        self.host.copy_(self.counts, non_blocking=True)
        self.event = torch.cuda.Event()
        self.event.record()

    def poll(self) -> None:
        """Raise if a completed host copy shows failures; never waits for the device."""
        if self.event is None or torch.cuda.is_current_stream_capturing() or not self.event.query():
            return
        self.event = None
        if bool(self.host.any()):  # host memory: no device sync
            found = self.host.clone()
            self.clear()
            raise ValueError(_message(found, "an earlier deferred-validated call"))

    def clear(self) -> None:
        self.counts.zero_()
        if self.host is not None:
            self.host.zero_()
        self.event = None


_COUNTERS: dict[torch.device, _Counters] = {}


def _counters(device: torch.device) -> _Counters:
    if device not in _COUNTERS:
        _COUNTERS[device] = _Counters(device)
    return _COUNTERS[device]


def _message(counts: torch.Tensor, where: str) -> str:
    found = [f"{op}: {arg} {SLOTS[(op, arg)]} ({n} call{'s' if n != 1 else ''})"
             for (op, arg), n in zip(SLOTS, counts.tolist()) if n]
    return f"{where} had invalid inputs (validate='deferred'): " + "; ".join(found)


def begin(device: torch.device) -> None:
    """At the start of a deferred op: report what an earlier op's completed copy shows."""
    if device in _COUNTERS:
        _COUNTERS[device].poll()


def record(op: str, argument: str, bad: torch.Tensor) -> None:
    """Count a failed check: bad is a 0-d bool tensor on the inputs' device (not read here)."""
    counters = _counters(bad.device)
    counters.counts.narrow(0, _INDEX[(op, argument)], 1).add_(bad.reshape(1))


def end(device: torch.device) -> None:
    """At the end of a deferred op's checks: start the counts' trip to the host."""
    if device in _COUNTERS:
        _COUNTERS[device].publish()


def _indexed(device: torch.device) -> torch.device:
    """'cuda' -> 'cuda:<current>': counters are keyed by the tensors' own (indexed) device."""
    if device.type == "cuda" and device.index is None:
        return torch.device("cuda", torch.cuda.current_device())
    return device


def check_pending(device: Optional[torch.device | str] = None) -> None:
    """Report every deferred check that failed since the last call, then clear the counts.

    One device-to-host sync per device that has counters (or only `device`). Call it once per
    training step, for example after the optimizer step. Raises ValueError naming each op
    argument that failed and in how many calls.
    """
    devices = list(_COUNTERS) if device is None else [_indexed(torch.device(device))]
    problems = []
    for dev in devices:
        counters = _COUNTERS.get(dev)
        if counters is None:
            continue
        counts = counters.counts.to("cpu", copy=True)  # the one sync (a copy: clear() zeroes)
        counters.clear()
        if bool(counts.any()):
            problems.append(_message(counts, f"since the last check_pending(), rendering on {dev}"))
    if problems:
        raise ValueError("\n".join(problems))
