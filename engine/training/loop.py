"""The training loop: pretraining on L0, then end to end on L, on one device or under torchrun.

    nl3dmm train --config quick                      # a few minutes on a CPU, bundled data
    torchrun --nproc_per_node=8 -m nl3dmm train --config cvpr18 data=/data/300wlp-store

The pieces it calls live in engine/training/: config (named configurations), batches (which
samples each rank sees; device transfer), objectives (L0 and L), checkpoint (atomic files),
visuals (the reconstruction grid).
"""
from __future__ import annotations

import contextlib
import gc
import math
import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from ..model.adversarial import FakeHistory, PatchDiscriminator
from ..face.facemodel import load_face_model
from ..model.networks import build_model, parameter_summary
from .batches import ArrayData, Schedule, TrainingData, crop_offsets, shift_crops, to_device
from ..model.checkpoint import load_latest, rng_state, save_checkpoint, set_rng_state
from .config import TrainConfig, resume_stage, validate
from .objectives import (FinetuneObjective, LandmarkTerm, describe_terms, discriminator_loss, format_terms,
                         pretrain_loss)
from ..face.dense_shapes import DenseShapes
from ..data.samples import split_names
from ..data.store import read_npz
from .visuals import reconstruction_grid, save_png


class NonFiniteLoss(RuntimeError):
    pass


class StoreData:
    """A training store (engine/data) as TrainingData: the fields the objectives use."""

    FIELDS = ("image", "m", "landmarks", "texture", "texture_mask", "shape")
    LABELS = ("shape_para", "exp_para", "flipped")  # what dense shapes are built from (training.shape_targets)

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
    return torch.optim.Adam(params, lr=lr, betas=(config.beta1, 0.999), fused=device.type == "cuda")


def _floats(terms: dict) -> dict[str, float]:
    return {k: float(v) for k, v in terms.items()}


def train(config: TrainConfig, data: TrainingData | None = None, resume: bool = False, log=print) -> dict:
    """Run the configured stage(s); returns a summary dict. Under torchrun (WORLD_SIZE > 1)
    each process trains its share of every global batch with DDP; rank 0 logs and saves."""
    validate(config)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    use_cuda = config.device == "cuda" or (config.device == "auto" and torch.cuda.is_available())
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0"))) if use_cuda else torch.device("cpu")
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo")
    if use_cuda:
        torch.cuda.set_device(device)
    main = rank == 0
    say = log if main else (lambda *_: None)
    for size in {config.batch_size, config.stage_batch_size("finetune")}:
        if size % (world * config.accumulate):
            raise ValueError(f"batch size {size} is not divisible by {world} ranks x "
                             f"{config.accumulate} micro-batches")
    out = Path(config.out)
    ckpt_dir = out / "checkpoints"
    state = load_latest(ckpt_dir, log=say) if resume else None
    if not resume and list(ckpt_dir.glob("checkpoint-*.pt")):
        raise FileExistsError(f"{ckpt_dir} already holds checkpoints: pass --resume to continue that run, "
                              "or choose another out=")
    if resume and state is None:
        say(f"no checkpoint in {ckpt_dir}: starting from scratch")

    torch.manual_seed(config.seed)  # identical initial weights on every rank
    np.random.seed(config.seed)
    data = data if data is not None else open_training_data(config.data, config.exclude, bool(config.basis))
    face_model = load_face_model(config.face_model)
    shape_targets = None
    if config.basis:
        shape_targets = DenseShapes.from_file(config.basis, face_model).to(device)
    model = build_model(config.model, face_model).to(device).to(memory_format=torch.channels_last)
    if config.compile:  # the networks only (the renderer's ops stay eager); compiling the
        # forward methods keeps the state_dict keys, so checkpoints work with or without it
        for part in (model.encoder, model.shape_decoder, model.texture_decoder):
            part.forward = torch.compile(part.forward)
    stages = ["pretrain", "finetune"] if config.stage == "both" else [config.stage]
    discriminator = None
    if "finetune" in stages and config.adversarial_weight > 0:
        discriminator = PatchDiscriminator().to(device)
    say(parameter_summary(model))
    held_out = f" ({data.excluded} held out: {config.exclude})" if getattr(data, "excluded", 0) else ""
    say(f"training on {device} x {world} process(es), {len(data)} samples{held_out}, stages {stages}")
    if shape_targets is not None:
        say(f"dense shapes from {config.basis}: L0 includes the shape loss (flipped crops get the mirrored face)")
    elif "shape" not in getattr(data, "fields", getattr(data, "arrays", {})):
        say("dense shapes unavailable: landmark and image losses only (L0 uses m and the pseudo texture); "
            "pass basis= (nl3dmm convert-bfm) for the shape loss")
    fields = getattr(data, "fields", getattr(data, "arrays", {}))
    store = getattr(data, "store", None)  # a training store's manifest says which landmark targets it holds
    conventions = store.manifest.get("counts", {}).get("landmark_conventions") if store is not None else None
    say(format_terms(describe_terms(config, model, stages, shape_targets is not None or "shape" in fields,
                                    "texture" in fields, discriminator is not None, conventions)))
    writer = None
    if main:
        from torch.utils.tensorboard import SummaryWriter
        writer = SummaryWriter(str(out / "tensorboard"))

    history = FakeHistory(config.history)
    summary: dict = {"out": str(out), "stages": {}}
    start_stage, start_step = 0, 0
    if state is not None:
        start_stage, start_step = resume_stage(config, stages, state), state["step"]
        model.load_state_dict(state["model"])
        if discriminator is not None and state.get("discriminator") is not None:
            discriminator.load_state_dict(state["discriminator"])
        history.images = list(state.get("history", []))
        say(f"resumed from {state['path']} ({state['stage']} step {start_step})")

    for stage_index, stage in enumerate(stages):
        if stage_index < start_stage:
            continue
        first = start_step if stage_index == start_stage else 0
        schedule = Schedule(len(data), config.stage_batch_size(stage), config.seed)
        summary["stages"][stage] = _run_stage(
            stage, stage_index, first, config, model, discriminator, history, data, schedule, face_model, device,
            world, rank, writer, say, state if stage_index == start_stage else None, ckpt_dir, shape_targets)
        state = None
    if writer is not None:
        writer.close()
    if world > 1:
        # Freeing DDP-held objects before tearing down gloo avoids an abort at exit (TOOLCHAIN.md).
        del model, discriminator
        gc.collect()
        dist.barrier()
        dist.destroy_process_group()
    return summary


def _run_stage(stage, stage_index, first_step, config, model, discriminator, history, data, schedule, face_model,
               device, world, rank, writer, say, state, ckpt_dir, shape_targets=None) -> dict:
    main = rank == 0
    lr = config.stage_lr(stage)
    core = model
    # L0 leaves a branch unused when the data has no dense shapes or no pseudo textures; DDP must be told.
    net = DistributedDataParallel(model, find_unused_parameters=stage == "pretrain") if world > 1 else model
    optimizers = {"model": _adam(model.parameters(), lr, config, device)}
    disc = None
    batch_size = config.stage_batch_size(stage)
    landmark_term = LandmarkTerm(face_model, core.config.image_size).to(device)
    if stage == "pretrain" and config.landmark_step:
        optimizers["encoder"] = _adam(model.encoder.parameters(), lr, config, device)
    if stage == "finetune":
        optimizers["encoder"] = _adam(model.encoder.parameters(), lr, config, device)
        objective = FinetuneObjective(core, face_model, discriminator, config).to(device)
        if discriminator is not None:
            optimizers["discriminator"] = _adam(discriminator.parameters(), lr, config, device)
            disc = discriminator
    if state is not None and state["stage"] == stage:
        for name, opt in optimizers.items():
            opt.load_state_dict(state["optimizers"][name])
        set_rng_state(state["rng"])

    def set_lr(step: int) -> None:  # a pure function of the step, so resuming needs no state
        for opt in optimizers.values():
            for group in opt.param_groups:
                group["lr"] = lr * _lr_factor(step, config)

    amp = device.type == "cuda" and config.amp
    autocast = lambda: torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp)  # noqa: E731
    progress = None
    if main and config.progress:
        from tqdm import tqdm
        progress = tqdm(total=config.steps, initial=first_step, desc=stage, unit="step", dynamic_ncols=True)
    bad_in_row, skipped, seen = 0, 0, 0
    losses_seen: list[float] = []
    t0 = time.perf_counter()
    last = {}

    def step_on(loss_fn, params_opt: str, micro_batches, step: int) -> tuple[bool, dict, dict, dict]:
        """Accumulate gradients over the micro-batches, then step `params_opt` unless the loss
        is not finite on some rank (then every rank skips, so replicas stay identical)."""
        opt = optimizers[params_opt]
        opt.zero_grad(set_to_none=True)
        terms_sum: dict[str, float] = {}
        total = torch.zeros((), device=device)
        out = batch = None
        for i, indices in enumerate(micro_batches):
            batch = to_device(data.get(indices), device)
            if config.crop_shift:  # the authors' fresh crop offsets every iteration, m corrected
                batch = shift_crops(batch, crop_offsets(indices, step, config.seed, config.crop_shift))
            if shape_targets is not None:
                batch["shape"] = shape_targets(batch["shape_para"], batch["exp_para"], batch.get("flipped"))
            # Only the last micro-batch's backward all-reduces the accumulated gradients.
            sync = net.no_sync() if (world > 1 and i < len(micro_batches) - 1) else contextlib.nullcontext()
            with sync:
                with autocast():
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
        if ok:
            if config.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_([p for g in opt.param_groups for p in g["params"]], config.grad_clip)
            opt.step()
        else:
            opt.zero_grad(set_to_none=True)
        return ok, {**terms_sum, "total": total}, out, batch

    for step in range(first_step, config.steps):
        set_lr(step)
        micro = schedule.rank_micro_batches(step, rank, world, config.accumulate)
        if stage == "pretrain":
            if config.landmark_step and step % 2 == 1:  # the authors' alternation: odd steps update the
                # encoder only, on L0 plus the landmark term
                ok, terms, out, batch = step_on(lambda o, b: pretrain_loss(core, o, b, landmark_term), "encoder",
                                                micro, step)
            else:
                ok, terms, out, batch = step_on(lambda o, b: pretrain_loss(core, o, b), "model", micro, step)
        else:
            rendered_holder = {}

            def full(o, b):
                loss, terms, rendered = objective(core, o, b, with_landmarks=False)
                rendered_holder["fake"] = rendered.detach()
                return loss, terms
            ok, terms, out, batch = step_on(full, "model", micro, step)
            if ok and disc is not None:
                optimizers["discriminator"].zero_grad(set_to_none=True)
                d_loss = discriminator_loss(disc, batch["image"], rendered_holder["fake"].permute(0, 3, 1, 2), history)
                d_loss.backward()
                if world > 1:
                    # D sees real and fake batches in two forwards (separate batch-norm
                    # statistics), which DDP's one-forward-one-backward contract does not allow:
                    # average its gradients by hand instead.
                    for p in disc.parameters():
                        if p.grad is not None:
                            dist.all_reduce(p.grad)
                            p.grad /= world
                optimizers["discriminator"].step()
                terms["discriminator"] = d_loss.detach()
            ok_b, terms_b, _, _ = step_on(lambda o, b: objective(core, o, b, with_landmarks=True)[:2],
                                          "encoder", micro, step)
            ok = ok and ok_b
            terms["landmarks"] = terms_b["landmarks"]
        seen += batch_size
        losses_seen.append(terms["total"])
        if ok:
            bad_in_row = 0
            last = terms
        else:
            bad_in_row += 1
            skipped += 1
            terms = _floats(terms)
            say(f"warning: non-finite loss at {stage} step {step} ({terms}); step skipped")
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
        if main and logging:
            for k, v in _floats(terms).items():
                writer.add_scalar(f"{stage}/{k}", v, done)
            writer.add_scalar(f"{stage}/lr", optimizers["model"].param_groups[0]["lr"], done)
            writer.add_scalar(f"{stage}/images_per_second", rate, done)
            if device.type == "cuda":
                writer.add_scalar(f"{stage}/gpu_memory_gib", torch.cuda.max_memory_allocated(device) / 2**30, done)
        if main and (done % config.image_every == 0 or done == config.steps):
            picture = reconstruction_grid(core, out, batch)
            save_png(picture, Path(config.out) / "reconstructions" / f"{stage}-{done:08d}.png")
            writer.add_image(f"{stage}/reconstructions", picture, done, dataformats="HWC")
        if done % config.ckpt_every == 0 or done == config.steps:
            if main:
                save_checkpoint({
                    "step": done, "stage": stage, "model": core.state_dict(),
                    "discriminator": discriminator.state_dict() if discriminator is not None else None,
                    "optimizers": {k: o.state_dict() for k, o in optimizers.items()},
                    "history": history.images, "rng": rng_state(), "config": vars(config),
                }, ckpt_dir, stage_index * config.steps + done, config.keep_checkpoints)
            if world > 1:
                dist.barrier()
    if progress is not None:
        progress.close()
    elapsed = time.perf_counter() - t0
    last = _floats(last)
    result = {"steps": config.steps - first_step, "seconds": round(elapsed, 2), "skipped": skipped,
              "images_per_second": round(seen / max(elapsed, 1e-9), 2), "final": last,
              "loss_history": [float(v) for v in losses_seen]}
    say(f"{stage}: {result['steps']} steps in {elapsed:.1f} s ({result['images_per_second']} images/s), "
        f"final loss {last.get('total', float('nan')):.5g}, skipped {skipped}")
    return result

