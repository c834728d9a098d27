"""Will a training step fit? An estimate made before the step allocates anything.

Method. Weights, gradients and Adam's two moments are counted from the parameters each
optimiser updates, plus the scratch copy Adam's step makes; on the CPU the process's resident
memory besides the weights (interpreter, libraries, data) is read from /proc. Activations are
measured: the stage's forward pass and loss run on micro-batches of PROBE_SIZES samples while
`saved_tensors_hooks` add up the bytes autograd keeps for the backward pass (each storage once,
parameters excluded); the difference gives bytes per sample, the rest is fixed. The backward
pass holds the saved tensors plus gradients of about the same size, hence BACKWARD_FACTOR. The
probe leaves no trace: random-number state and batch-norm statistics are put back, so a run is
bit-identical with or without it.

What it misses: allocator fragmentation and temporaries that custom autograd functions keep
outside `save_for_backward`; parameters a stage leaves without gradients (the shape decoder in
L0 without dense shapes) are counted anyway. It is a guard against what cannot fit at all, not
a tight bound: the README states its measured error on the quick configuration.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable

import torch
from torch import nn

from ..runtime import machine_memory

PROBE_SIZES = (2, 4)       # batch norm in training mode needs 2 samples or more
BACKWARD_FACTOR = 2.0      # saved activations + their gradients during backward
ADAM_STATES = 2            # exp_avg and exp_avg_sq, each the size of the parameters


class InsufficientMemory(RuntimeError):
    """The step would not fit in the device's memory."""


@dataclass(frozen=True)
class MemoryEstimate:
    process: int            # bytes the process holds besides tensors (interpreter, libraries, data): CPU only
    weights: int            # bytes of the parameters and buffers
    gradients: int
    optimizer_state: int
    optimizer_scratch: int  # Adam's step allocates a copy of sqrt(exp_avg_sq) (torch's foreach Adam)
    activations_fixed: int
    activations_per_sample: int
    micro_batch: int
    processes: int          # processes sharing this memory (the ranks of a node on the CPU)

    @property
    def activations(self) -> int:
        return int(BACKWARD_FACTOR * (self.activations_fixed + self.activations_per_sample * self.micro_batch))

    @property
    def per_process(self) -> int:
        # The activations are freed by the end of backward, before the optimiser's scratch exists.
        return (self.process + self.weights + self.gradients + self.optimizer_state
                + max(self.activations, self.optimizer_scratch))

    @property
    def total(self) -> int:
        return self.per_process * self.processes

    def describe(self) -> str:
        gib = lambda n: f"{n / 2**30:.2f} GiB"  # noqa: E731
        shared = f" x {self.processes} processes" if self.processes > 1 else ""
        return (f"{gib(self.total)} = ({gib(self.process)} process + {gib(self.weights)} weights + {gib(self.gradients)} gradients + "
                f"{gib(self.optimizer_state)} Adam state + max({gib(self.optimizer_scratch)} Adam scratch, {gib(self.activations)} activations for a micro-batch "
                f"of {self.micro_batch} at {self.activations_per_sample / 2**20:.1f} MiB per sample)){shared}")


def _bytes(tensors: Iterable[torch.Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def measure_activations(loss_of_batch: Callable[[int], torch.Tensor], modules: list[nn.Module]
                        ) -> tuple[int, int]:
    """(fixed bytes, bytes per sample) autograd saves for `loss_of_batch(n)`, measured at the
    PROBE_SIZES. `modules` are put back as they were (buffers such as batch-norm statistics)."""
    exclude = {p.untyped_storage().data_ptr() for m in modules for p in m.parameters()}
    buffers = [(b, b.detach().clone()) for m in modules for b in m.buffers()]
    devices = sorted({b.device.index for b, _ in buffers if b.device.type == "cuda"})
    saved = []
    try:
        with torch.random.fork_rng(devices=devices):
            for size in PROBE_SIZES:
                storages: dict[int, int] = {}

                def pack(tensor: torch.Tensor) -> torch.Tensor:
                    if tensor.layout != torch.strided:  # sparse constants (the mesh Laplacian): not per step
                        return tensor
                    storage = tensor.untyped_storage()
                    if storage.data_ptr() not in exclude:
                        storages[storage.data_ptr()] = storage.nbytes()
                    return tensor

                with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
                    loss = loss_of_batch(size)
                del loss  # frees the graph and its saved tensors
                saved.append(sum(storages.values()))
    finally:
        with torch.no_grad():
            for buffer, value in buffers:
                buffer.copy_(value)
    (n1, b1), (n2, b2) = zip(PROBE_SIZES, saved)
    per_sample = max(0, (b2 - b1) // (n2 - n1))
    return max(0, b1 - per_sample * n1), per_sample


def estimate_step_memory(modules: list[nn.Module], optimized: list[list[nn.Parameter]], activations: tuple[int, int],
                         micro_batch: int, processes: int = 1, resident: int | None = None) -> MemoryEstimate:
    """The estimate for `modules` (all that is resident), trained by optimisers over the
    parameter lists `optimized`, with measured (fixed, per-sample) activation bytes. `resident`
    (CPU: the process's resident bytes before the probe) adds what the process holds besides
    the weights: libraries, the data."""
    trainable = {id(p): p for m in modules for p in m.parameters() if p.requires_grad}
    state = sum(ADAM_STATES * _bytes(params) for params in optimized)
    scratch = max(_bytes(params) for params in optimized)
    weights = sum(_bytes(m.parameters()) + _bytes(m.buffers()) for m in modules)
    process = max(0, resident - weights) if resident is not None else 0
    return MemoryEstimate(process, weights, _bytes(trainable.values()), state, scratch, activations[0], activations[1],
                          micro_batch, processes)


def check_fits(estimate: MemoryEstimate, device: torch.device) -> str:
    """A one-line report of the estimate against the device's memory; InsufficientMemory when
    it does not fit."""
    limit, source = machine_memory(device)
    if limit is None:
        return f"step memory estimate {estimate.describe()}; the memory limit of this machine is unknown"
    if estimate.total > limit:
        raise InsufficientMemory(
            f"a training step needs about {estimate.describe()}, more than the {limit / 2**30:.2f} GiB of "
            f"{source}. Lower batch_size, raise accumulate (smaller micro-batches), or run on more processes")
    return f"step memory estimate {estimate.describe()}; limit {limit / 2**30:.2f} GiB ({source})"
