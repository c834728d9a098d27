"""The training loop: pretraining on L0, then end to end on L, on one device or under torchrun.

    nl3dmm train --config quick                      # a few minutes on a CPU, bundled data
    torchrun --nproc_per_node=8 -m nl3dmm train --config cvpr18 data=/data/300wlp-store

The pieces it calls live in engine/training/: config (named configurations), batches (which
samples each rank sees; device transfer; per-step crop shifts), objectives (L0 and L),
run_lock (one writer per run folder), memory_estimate (refuse what cannot fit), interrupts
(Ctrl-C), visuals (the reconstruction grid); checkpoint files are engine/model/checkpoint.py.
"""
from __future__ import annotations

import contextlib
import datetime
import gc
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from ..face.dense_shapes import DenseShapes
from ..face.facemodel import load_face_model
from ..data.samples import split_names
from ..data.store import read_npz
from ..model.adversarial import FakeHistory, PatchDiscriminator
from ..model.checkpoint import load_latest, rng_state, save_checkpoint, set_rng_state
from ..model.networks import build_model, parameter_summary
from ..render import check_pending
from ..runtime import process_resident_bytes, resolve_device
from .batches import ArrayData, Schedule, TrainingData, crop_offsets, shift_crops, to_device
from .config import TrainConfig, resume_stage, validate
from .interrupts import TrainingInterrupted, interrupts_held
from .memory_estimate import MemoryEstimate, check_fits, estimate_step_memory, measure_activations
from .objectives import (FinetuneObjective, LandmarkTerm, describe_terms, discriminator_loss, format_terms,
                         pretrain_loss)
from .run_lock import RunLock
from .visuals import reconstruction_grid, save_png


class NonFiniteLoss(RuntimeError):
    pass


class StoreData:
    """A training store (engine/data) as TrainingData: the fields the objectives use."""

    FIELDS = ("image", "m", "landmarks", "texture", "texture_mask", "shape")
    LABELS = ("shape_para", "exp_para", "flipped")  # what dense shapes are built from (face.dense_shapes)

    def __init__(self, root: str | Path, exclude: list[str] | tuple[str, ...] = (), labels: bool = False):
        from ..data.loader import TrainingStore
        self.store = TrainingStore(root)
        self.fields = [f for f in self.FIELDS if f in self.store.fields]
        if labels:
            missing = [f for f in self.LABELS if f not in self.store.fields]
            if missing:
                raise ValueError(f"{root}: the store has no {missing} field(s), which dense shapes need")
            self.fields += list(self.LABELS)
        # Training sample i is store sample keep[i]: held-out photos simply are not in the range.
        self.keep = self.store.select_sources(exclude) if exclude else np.arange(len(self.store))
        self.excluded = len(self.store) - len(self.keep)

    def __len__(self) -> int:
        return len(self.keep)

    def get(self, indices: np.ndarray) -> dict[str, np.ndarray]:
        rows = self.keep[np.asarray(indices, dtype=np.int64)]
        return {f: self.store.gather(f, rows) for f in self.fields}


def open_training_data(path: str | None, exclude: str | None = None, labels: bool = False) -> TrainingData:
    """A training store folder, an .npz of arrays, or (None) the bundled default data; the
    samples of the source photos named in `exclude` (comma-separated) are left out; `labels`
    adds the fields dense shapes are built from (Shape_Para, Exp_Para, flipped)."""
    if path is not None and str(path).endswith(".npz"):
        if exclude:
            raise ValueError("exclude= needs a training store (its shards name each sample's source photo), "
                             f"not an .npz of arrays: {path}")
        data = ArrayData(**read_npz(path))
        missing = [f for f in ("shape_para", "exp_para") if labels and f not in data.arrays]
        if missing:
            raise ValueError(f"{path}: no {missing} arrays, which dense shapes (basis=) need")
        return data
    if path is None:
        from ..data import default_store
        path = default_store()
    return StoreData(path, split_names(exclude), labels)


def _lr_factor(step: int, config: TrainConfig) -> float:
    if step < config.warmup:
        return (step + 1) / config.warmup
    if config.lr_schedule == "constant":
        return 1.0
    if config.lr_schedule != "cosine":
        raise ValueError(f"lr_schedule must be constant or cosine, got {config.lr_schedule!r}")
    progress = (step - config.warmup) / max(1, config.steps - config.warmup)
    return config.lr_final + (1 - config.lr_final) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


def _adam(params, lr: float, config: TrainConfig, device: torch.device) -> torch.optim.Adam:
    # The fused kernel exists for CPU and CUDA: on 2 CPU cores it steps the 169M parameters of
    # cvpr18 ~8x faster than the per-tensor loop (a third of a pretraining step otherwise).
    return torch.optim.Adam(params, lr=lr, betas=(config.beta1, 0.999), fused=device.type in ("cpu", "cuda"))


@contextlib.contextmanager
def _weights_without_grads(params) -> Any:
    """Autograd skips these parameters' weight gradients inside the block: a step that does not
    update them would compute them only for the next zero_grad to throw away."""
    frozen = [p for p in params if p.requires_grad]
    for p in frozen:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in frozen:
            p.requires_grad_(True)


def _floats(terms: dict) -> dict[str, float]:
    return {k: float(v) for k, v in terms.items()}


@dataclass
class Run:
    """Where one training run happens and where it writes: what every stage needs besides the
    model and the data. Rank 0 (`main`) logs and writes; the other ranks only compute."""

    config: TrainConfig
    device: torch.device
    world: int
    rank: int
    say: Callable[[str], None]
    writer: Any = None                     # TensorBoard SummaryWriter, rank 0 only
    last_checkpoint: str | None = None     # the newest complete checkpoint: where a stopped run resumes

    @classmethod
    def start(cls, config: TrainConfig, log: Callable[[str], None]) -> "Run":
        """Pick the device and, under torchrun, join the process group (timeout dist_timeout)."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        for size in {config.batch_size, config.stage_batch_size("finetune")}:  # before anything is created in out/
            if size % (world * config.accumulate):
                raise ValueError(f"batch size {size} is not divisible by {world} ranks x "
                                 f"{config.accumulate} micro-batches")
        device = resolve_device(config.device)
        if world > 1 and not dist.is_initialized():
            # A rank that stops answering (stuck in data loading, stopped, lost) makes the others'
            # collectives fail after this long instead of waiting forever.
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo",
                                    timeout=datetime.timedelta(seconds=config.dist_timeout))
        if device.type == "cuda":
            torch.cuda.set_device(device)
        return cls(config, device, world, rank, log if rank == 0 else (lambda *_: None))

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def out(self) -> Path:
        return Path(self.config.out)

    @property
    def ckpt_dir(self) -> Path:
        return self.out / "checkpoints"

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    def together(self, action: Callable[[], None], on_rank0_only: bool = False) -> None:
        """Run `action` (on every rank, or on rank 0 only) and fail on every rank if it failed
        on any, so that no rank is left waiting in a collective for one that gave up."""
        error: Exception | None = None
        if self.main or not on_rank0_only:
            try:
                action()
            except (RuntimeError, ValueError) as exc:
                error = exc
        if self.world > 1:
            failed = torch.tensor([0 if error is None else 1 + self.rank])
            dist.all_reduce(failed, op=dist.ReduceOp.MAX)
            if error is None and int(failed):
                raise RuntimeError(f"rank {int(failed) - 1} could not start the run (its message says why)")
        if error is not None:
            raise error

    def resume_hint(self) -> str:
        if self.last_checkpoint is None:
            return f"interrupted before the first checkpoint: nothing saved in {self.ckpt_dir}; a new run starts over"
        return f"interrupted: resume from {self.last_checkpoint} with `nl3dmm train ... out={self.out} --resume`"


class Trainer:
    """The networks, the data and the run: `stage()` trains one stage from top to bottom."""

    def __init__(self, run: Run, data: TrainingData, face_model, model: torch.nn.Module,
                 discriminator: torch.nn.Module | None, history: FakeHistory,
                 shape_targets: DenseShapes | None):
        self.run, self.config = run, run.config
        self.data, self.face_model, self.model = data, face_model, model
        self.discriminator, self.history, self.shape_targets = discriminator, history, shape_targets
        self.landmark_term = LandmarkTerm(face_model, model.config.image_size).to(run.device)

    def not_stepped(self, encoder_step: bool) -> list[torch.nn.Parameter]:
        """Parameters a generator step leaves alone: the discriminator's, and in an encoder-only
        step the decoders'. Under DDP the decoders keep their gradients: its reducer expects every
        parameter it was built with in every backward."""
        params = list(self.discriminator.parameters()) if self.discriminator is not None else []
        if encoder_step and self.run.world == 1:
            params += [p for name, p in self.model.named_parameters() if not name.startswith("encoder.")]
        return params

    # -- pieces of a step -------------------------------------------------------------------
    def batch(self, indices: np.ndarray, step: int | None = None) -> dict[str, torch.Tensor]:
        batch = to_device(self.data.get(indices), self.run.device)
        if step is not None and self.config.crop_shift:  # the authors' fresh crop offsets every iteration, m corrected
            batch = shift_crops(batch, crop_offsets(indices, step, self.config.seed, self.config.crop_shift))
        if self.shape_targets is not None:
            batch["shape"] = self.shape_targets(batch["shape_para"], batch["exp_para"], batch.get("flipped"))
        return batch

    def autocast(self):
        device = self.run.device
        return torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda" and self.config.amp)

    def objective(self, stage: str) -> FinetuneObjective | None:
        if stage != "finetune":
            return None
        return FinetuneObjective(self.model, self.face_model, self.discriminator, self.config).to(self.run.device)

    def optimizers(self, stage: str, lr: float) -> dict[str, torch.optim.Adam]:
        device = self.run.device
        optimizers = {"model": _adam(self.model.parameters(), lr, self.config, device)}
        if stage == "pretrain" and self.config.landmark_step:
            optimizers["encoder"] = _adam(self.model.encoder.parameters(), lr, self.config, device)
        if stage == "finetune":
            optimizers["encoder"] = _adam(self.model.encoder.parameters(), lr, self.config, device)
            if self.discriminator is not None:
                optimizers["discriminator"] = _adam(self.discriminator.parameters(), lr, self.config, device)
        return optimizers

    def step(self, net: torch.nn.Module, opt: torch.optim.Adam, loss_fn, micro_batches, step: int
             ) -> tuple[bool, dict, dict, dict]:
        """Accumulate gradients over the micro-batches, then step `opt` unless the loss is not
        finite on some rank (then every rank skips, so replicas stay identical)."""
        world, device = self.run.world, self.run.device
        opt.zero_grad(set_to_none=True)
        terms_sum: dict[str, float] = {}
        total = torch.zeros((), device=device)
        out = batch = None
        for i, indices in enumerate(micro_batches):
            batch = self.batch(indices, step)
            # Only the last micro-batch's backward all-reduces the accumulated gradients.
            sync = net.no_sync() if (world > 1 and i < len(micro_batches) - 1) else contextlib.nullcontext()
            with sync:
                with self.autocast():
                    out = net(batch["image"])
                loss, terms = loss_fn(out, batch)
                (loss / len(micro_batches)).backward()
            total = total + loss.detach() / len(micro_batches)
            for k, v in terms.items():
                terms_sum[k] = terms_sum.get(k, 0.0) + v.detach() / len(micro_batches)
        finite = torch.isfinite(total).float()
        if world > 1:
            dist.all_reduce(finite, op=dist.ReduceOp.MIN)
        # The step's one host sync: a non-finite step must be skipped before opt.step().
        ok = bool(finite.item())
        # The renderer's deferred input checks (the default on CUDA) are read here, next to that
        # sync, so a NaN or a bad index in this step's renders stops the run at this step.
        check_pending(device)
        if ok:
            if self.config.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_([p for g in opt.param_groups for p in g["params"]],
                                               self.config.grad_clip)
            opt.step()
        else:
            opt.zero_grad(set_to_none=True)
        return ok, {**terms_sum, "total": total}, out, batch

    def discriminator_step(self, opt: torch.optim.Adam, real: torch.Tensor, rendered: torch.Tensor) -> torch.Tensor:
        disc = self.discriminator
        opt.zero_grad(set_to_none=True)
        d_loss = discriminator_loss(disc, real, rendered.permute(0, 3, 1, 2), self.history)
        d_loss.backward()
        if self.run.world > 1:
            # D sees real and fake batches in two forwards (separate batch-norm statistics),
            # which DDP's one-forward-one-backward contract does not allow: average by hand.
            for p in disc.parameters():
                if p.grad is not None:
                    dist.all_reduce(p.grad)
                    p.grad /= self.run.world
        opt.step()
        return d_loss.detach()

    def finetune_step(self, net, optimizers, objective: FinetuneObjective, micro, step: int
                      ) -> tuple[bool, dict, dict, dict]:
        """L's full step, the discriminator's step, then the encoder-only step with landmarks."""
        rendered = {}

        def full(o, b):
            loss, terms, image = objective(self.model, o, b, with_landmarks=False)
            rendered["fake"] = image.detach()
            return loss, terms
        with _weights_without_grads(self.not_stepped(encoder_step=False)):
            ok, terms, out, batch = self.step(net, optimizers["model"], full, micro, step)
        if ok and self.discriminator is not None:
            terms["discriminator"] = self.discriminator_step(optimizers["discriminator"], batch["image"],
                                                             rendered["fake"])
        with _weights_without_grads(self.not_stepped(encoder_step=True)):
            ok_b, terms_b, _, _ = self.step(net, optimizers["encoder"],
                                            lambda o, b: objective(self.model, o, b, with_landmarks=True)[:2],
                                            micro, step)
        terms["landmarks"] = terms_b["landmarks"]
        return ok and ok_b, terms, out, batch

    # -- what rank 0 writes -------------------------------------------------------------------
    def log(self, stage: str, done: int, terms: dict, optimizers: dict, rate: float) -> None:
        writer, device = self.run.writer, self.run.device
        for k, v in _floats(terms).items():
            writer.add_scalar(f"{stage}/{k}", v, done)
        writer.add_scalar(f"{stage}/lr", optimizers["model"].param_groups[0]["lr"], done)
        writer.add_scalar(f"{stage}/images_per_second", rate, done)
        if device.type == "cuda":
            writer.add_scalar(f"{stage}/gpu_memory_gib", torch.cuda.max_memory_allocated(device) / 2**30, done)

    def save_images(self, stage: str, done: int, out: dict, batch: dict) -> None:
        picture = reconstruction_grid(self.model, out, batch)
        with interrupts_held():  # a PNG is never left half written
            save_png(picture, self.run.out / "reconstructions" / f"{stage}-{done:08d}.png")
            self.run.writer.add_image(f"{stage}/reconstructions", picture, done, dataformats="HWC")

    def save_checkpoint(self, stage: str, stage_index: int, done: int, optimizers: dict) -> None:
        state = {
            "step": done, "stage": stage, "model": self.model.state_dict(),
            "discriminator": self.discriminator.state_dict() if self.discriminator is not None else None,
            "optimizers": {k: o.state_dict() for k, o in optimizers.items()},
            "history": self.history.images, "rng": rng_state(), "config": vars(self.config),
        }
        with interrupts_held():  # Ctrl-C waits until the checkpoint is complete and recorded as the resume point
            path = save_checkpoint(state, self.run.ckpt_dir, stage_index * self.config.steps + done,
                                   self.config.keep_checkpoints)
            self.run.last_checkpoint = f"{path} ({stage} step {done})"

    # -- memory ---------------------------------------------------------------------------------
    def memory_estimate(self, stage: str) -> MemoryEstimate:
        """What one step of `stage` needs on this device (memory_estimate.py): measured on small
        probe batches, before the real step allocates anything."""
        objective = self.objective(stage)

        def loss_of_batch(size: int) -> torch.Tensor:
            batch = self.batch(np.arange(size) % len(self.data))
            with self.autocast():
                out = self.model(batch["image"])
            if objective is None:
                return pretrain_loss(self.model, out, batch)[0]
            return objective(self.model, out, batch, with_landmarks=True)[0]

        resident = process_resident_bytes() if self.run.device.type == "cpu" else None  # before the probe
        modules = [m for m in (self.model, self.discriminator) if m is not None]
        activations = measure_activations(loss_of_batch, modules)
        optimized = [list(p.parameters()) for p in ([self.model] if stage == "pretrain" else
                                                    [self.model, self.model.encoder, *modules[1:]])]
        micro = self.config.stage_batch_size(stage) // (self.run.world * self.config.accumulate)
        # Ranks of one node share its RAM; each GPU is a process's own.
        sharing = int(os.environ.get("LOCAL_WORLD_SIZE", "1")) if self.run.device.type == "cpu" else 1
        return estimate_step_memory(modules, optimized, activations, micro, sharing, resident)

    # -- one stage, top to bottom ---------------------------------------------------------------
    def stage(self, stage: str, stage_index: int, first_step: int, state: dict | None) -> dict:
        run, config = self.run, self.config
        lr = config.stage_lr(stage)
        # L0 leaves a branch unused when the data has no dense shapes or no pseudo textures; DDP must be told.
        net = DistributedDataParallel(self.model, find_unused_parameters=stage == "pretrain") \
            if run.world > 1 else self.model
        optimizers = self.optimizers(stage, lr)
        objective = self.objective(stage)
        batch_size = config.stage_batch_size(stage)
        schedule = Schedule(len(self.data), batch_size, config.seed)
        if state is not None and state["stage"] == stage:
            for name, opt in optimizers.items():
                opt.load_state_dict(state["optimizers"][name])
            set_rng_state(state["rng"])
        progress = None
        if run.main and config.progress:
            from tqdm import tqdm
            progress = tqdm(total=config.steps, initial=first_step, desc=stage, unit="step", dynamic_ncols=True)
        bad_in_row, skipped, seen = 0, 0, 0
        losses_seen: list[float] = []
        last = {}
        t0 = time.perf_counter()
        try:
            for step in range(first_step, config.steps):
                for opt in optimizers.values():  # the lr is a pure function of the step: resuming needs no state
                    for group in opt.param_groups:
                        group["lr"] = lr * _lr_factor(step, config)
                micro = schedule.rank_micro_batches(step, run.rank, run.world, config.accumulate)
                if stage == "pretrain" and config.landmark_step and step % 2 == 1:
                    # the authors' alternation: odd steps update the encoder only, on L0 plus landmarks
                    with _weights_without_grads(self.not_stepped(encoder_step=True)):
                        ok, terms, out, batch = self.step(
                            net, optimizers["encoder"],
                            lambda o, b: pretrain_loss(self.model, o, b, self.landmark_term), micro, step)
                elif stage == "pretrain":
                    ok, terms, out, batch = self.step(net, optimizers["model"],
                                                      lambda o, b: pretrain_loss(self.model, o, b), micro, step)
                else:
                    ok, terms, out, batch = self.finetune_step(net, optimizers, objective, micro, step)

                seen += batch_size
                losses_seen.append(terms["total"])
                if ok:
                    bad_in_row, last = 0, terms
                else:
                    bad_in_row += 1
                    skipped += 1
                    terms = _floats(terms)
                    run.say(f"warning: non-finite loss at {stage} step {step} ({terms}); step skipped")
                    if bad_in_row >= config.max_nonfinite:
                        raise NonFiniteLoss(f"{bad_in_row} non-finite losses in a row at {stage} step {step}: "
                                            f"last terms {terms}. Lower the learning rate or check the data.")

                done = step + 1
                rate = seen / max(time.perf_counter() - t0, 1e-9)
                logging = done % config.log_every == 0 or done == config.steps
                if progress is not None:
                    progress.update(1)
                    if logging:  # reading the loss waits for the device: only at log steps
                        progress.set_postfix(loss=f"{float(terms['total']):.4g}", img_s=f"{rate:.1f}")
                if run.main and logging:
                    self.log(stage, done, terms, optimizers, rate)
                    if progress is None:  # no bar (progress=false, e.g. a log file): one line per log step
                        run.say(f"{stage} step {done}/{config.steps}: loss {float(terms['total']):.4g}, "
                                f"{rate:.2f} images/s")
                if run.main and (done % config.image_every == 0 or done == config.steps):
                    self.save_images(stage, done, out, batch)
                if done % config.ckpt_every == 0 or done == config.steps:
                    if run.main:
                        self.save_checkpoint(stage, stage_index, done, optimizers)
                    run.barrier()
        finally:
            if progress is not None:
                progress.close()
        elapsed = time.perf_counter() - t0
        last = _floats(last)
        result = {"steps": config.steps - first_step, "seconds": round(elapsed, 2), "skipped": skipped,
                  "images_per_second": round(seen / max(elapsed, 1e-9), 2), "final": last,
                  "loss_history": [float(v) for v in losses_seen]}
        run.say(f"{stage}: {result['steps']} steps in {elapsed:.1f} s ({result['images_per_second']} images/s), "
                f"final loss {last.get('total', float('nan')):.5g}, skipped {skipped}")
        return result


def train(config: TrainConfig, data: TrainingData | None = None, resume: bool = False, log=print) -> dict:
    """Run the configured stage(s); returns a summary dict. Under torchrun (WORLD_SIZE > 1)
    each process trains its share of every global batch with DDP; rank 0 logs and saves.

    Rank 0 holds an exclusive lock on `config.out` for the whole run (run_lock.py). Ctrl-C
    raises TrainingInterrupted, whose message names the checkpoint to resume from. Restarted by
    torchrun (--max-restarts), a run resumes from its newest checkpoint by itself."""
    validate(config)
    run = Run.start(config, log)
    lock = RunLock(run.out, run.say) if run.main else None
    try:
        run.together(lock.acquire if lock is not None else (lambda: None), on_rank0_only=True)
        summary = _train(run, data, resume)
    except KeyboardInterrupt:
        raise TrainingInterrupted(run.resume_hint()) from None
    finally:
        if run.writer is not None:
            run.writer.close()
        if lock is not None:
            lock.release()
    if run.world > 1:
        # Freeing DDP-held objects before tearing down gloo avoids an abort at exit (TOOLCHAIN.md).
        gc.collect()
        dist.barrier()
        dist.destroy_process_group()
    return summary


def _train(run: Run, data: TrainingData | None, resume: bool) -> dict:
    config, say = run.config, run.say
    restarts = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))
    if restarts > 0 and not resume:  # torchrun restarted the group after a failure: carry on
        say(f"torchrun restart {restarts}: resuming from the newest checkpoint in {run.ckpt_dir}")
        resume = True
    state = load_latest(run.ckpt_dir, log=say) if resume else None
    if not resume and list(run.ckpt_dir.glob("checkpoint-*.pt")):
        raise FileExistsError(f"{run.ckpt_dir} already holds checkpoints: pass --resume to continue that run, "
                              "or choose another out=")
    if resume and state is None:
        say(f"no checkpoint in {run.ckpt_dir}: starting from scratch")

    torch.manual_seed(config.seed)  # identical initial weights on every rank
    np.random.seed(config.seed)
    data = data if data is not None else open_training_data(config.data, config.exclude, bool(config.basis))
    face_model = load_face_model(config.face_model)
    shape_targets = None
    if config.basis:
        shape_targets = DenseShapes.from_file(config.basis, face_model).to(run.device)
    model = build_model(config.model, face_model).to(run.device).to(memory_format=torch.channels_last)
    if config.compile:  # the networks only (the renderer's ops stay eager); compiling the
        # forward methods keeps the state_dict keys, so checkpoints work with or without it
        for part in (model.encoder, model.shape_decoder, model.texture_decoder):
            part.forward = torch.compile(part.forward)
    stages = ["pretrain", "finetune"] if config.stage == "both" else [config.stage]
    discriminator = None
    if "finetune" in stages and config.adversarial_weight > 0:
        discriminator = PatchDiscriminator().to(run.device)
    say(parameter_summary(model))
    held_out = f" ({data.excluded} held out: {config.exclude})" if getattr(data, "excluded", 0) else ""
    say(f"training on {run.device} x {run.world} process(es), {len(data)} samples{held_out}, stages {stages}")
    fields = getattr(data, "fields", getattr(data, "arrays", {}))
    if shape_targets is not None:
        say(f"dense shapes from {config.basis}: L0 includes the shape loss (flipped crops get the mirrored face)")
    elif "shape" not in fields:
        say("dense shapes unavailable: landmark and image losses only (L0 uses m and the pseudo texture); "
            "pass basis= (nl3dmm convert-bfm) for the shape loss")
    store = getattr(data, "store", None)  # a training store's manifest says which landmark targets it holds
    conventions = store.manifest.get("counts", {}).get("landmark_conventions") if store is not None else None
    say(format_terms(describe_terms(config, model, stages, shape_targets is not None or "shape" in fields,
                                    "texture" in fields, discriminator is not None, conventions)))

    history = FakeHistory(config.history)
    start_stage, start_step = 0, 0
    if state is not None:
        start_stage, start_step = resume_stage(config, stages, state), state["step"]
        model.load_state_dict(state["model"])
        if discriminator is not None and state.get("discriminator") is not None:
            discriminator.load_state_dict(state["discriminator"])
        history.images = list(state.get("history", []))
        run.last_checkpoint = f"{state['path']} ({state['stage']} step {start_step})"
        say(f"resumed from {state['path']} ({state['stage']} step {start_step})")
    trainer = Trainer(run, data, face_model, model, discriminator, history, shape_targets)

    def check_memory() -> None:  # before the first real step allocates anything
        for stage in stages[start_stage:]:
            say(f"{stage}: {check_fits(trainer.memory_estimate(stage), run.device)}")
    run.together(check_memory)

    if run.main:
        from torch.utils.tensorboard import SummaryWriter
        run.writer = SummaryWriter(str(run.out / "tensorboard"))
    summary: dict = {"out": str(run.out), "stages": {}}
    for stage_index, stage in enumerate(stages):
        if stage_index < start_stage:
            continue
        first = start_step if stage_index == start_stage else 0
        summary["stages"][stage] = trainer.stage(stage, stage_index, first,
                                                 state if stage_index == start_stage else None)
        state = None
    return summary
