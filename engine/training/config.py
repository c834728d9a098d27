"""Named training configurations, command-line overrides and the rules every option obeys."""
from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from ..model.networks import CONFIGS
from ..runtime.devices import cuda_problem


@dataclass
class TrainConfig:
    model: str = "cvpr18"              # network configuration (networks.CONFIGS)
    face_model: str = "paper"          # "paper" (53,215 vertices) or "surrey" (3,448)
    stage: str = "pretrain"            # "pretrain" (L0), "finetune" (L) or "both"
    data: Optional[str] = None         # training store; None: the bundled default data
    exclude: Optional[str] = None      # comma-separated source photos not to train on (held out for evaluation)
    basis: Optional[str] = None        # converted BFM basis (nl3dmm convert-bfm): dense shapes for L0's shape loss
    out: str = "runs/cvpr18"
    steps: int = 1000                  # optimiser steps per stage
    batch_size: int = 128              # global batch (all ranks, all micro-batches)
    accumulate: int = 1                # micro-batches per step and rank
    lr: Optional[float] = None         # None: the paper's 0.001 (pretrain) / 0.0002 (finetune)
    beta1: float = 0.5
    warmup: int = 0                    # linear warm-up steps, then the lr_schedule
    lr_schedule: str = "cosine"        # "constant" (the authors') or "cosine" decay to lr_final
    lr_final: float = 0.1              # as a fraction of lr
    grad_clip: float = 10.0            # max global grad norm; 0 disables (the authors' code clips nothing)
    finetune_batch_size: int = 0       # global batch of the end-to-end stage; 0: batch_size (PAPER.md: 64)
    log_every: int = 10
    image_every: int = 200
    ckpt_every: int = 200
    keep_checkpoints: int = 2
    seed: int = 0
    device: str = "auto"               # "auto", "cpu", "cuda"
    amp: bool = True                   # bf16 autocast on CUDA (ignored on CPU)
    compile: bool = False              # torch.compile the encoder and decoders
    max_nonfinite: int = 5             # stop after this many non-finite losses in a row
    adversarial_weight: float = 0.1    # patchGAN generator term in finetune (0 disables; authors: 1)
    history: int = 1000                # discriminator history of fakes
    # The recipe (objectives.py; docs/FIDELITY.md says where each comes from)
    landmark_step: bool = True         # L0: odd steps update the encoder only, with the landmark term (authors)
    crop_shift: int = 0                # per-iteration random crop offsets 0..crop_shift px, m corrected (authors: 32)
    face_mask: bool = True             # composite the render only inside the label's face region
    finetune_label_weight: float = 0.0  # x the m (5) and shape (10) supervision kept in L (tpami19 code: 1)
    smoothness: str = "auto"           # "auto" (uv map for a UV shape decoder, else mesh), "mesh", "uv", "off"
    white_shading_weight: float = 10.0  # tpami19 regularisers (lighting models only; 0 disables)
    constant_albedo_weight: float = 5.0
    local_albedo_weight: float = 10.0
    progress: bool = True
    dist_timeout: float = 1800.0       # seconds a collective waits for a silent rank before the job fails (torchrun)

    def stage_lr(self, stage: str) -> float:
        if self.lr is not None:
            return self.lr
        return 1e-3 if stage == "pretrain" else 2e-4

    def stage_batch_size(self, stage: str) -> int:
        return self.finetune_batch_size if stage == "finetune" and self.finetune_batch_size else self.batch_size


# The paper's settings (PAPER.md and the authors' code; docs/FIDELITY.md row by row), and a
# short CPU run for a fresh machine (the README's main job).
PAPER_RECIPE = dict(lr_schedule="constant", grad_clip=0.0, finetune_batch_size=64, crop_shift=32,
                    adversarial_weight=1.0)
PRESETS: dict[str, dict] = {
    "cvpr18": dict(model="cvpr18", stage="both", steps=20000, batch_size=128, **PAPER_RECIPE),
    "cvpr18-finetune": dict(model="cvpr18", stage="finetune", batch_size=64, **PAPER_RECIPE),
    "tpami19": dict(model="tpami19", stage="both", steps=20000, batch_size=128, finetune_label_weight=1.0,
                    **PAPER_RECIPE),
    "quick": dict(model="cvpr18", stage="both", steps=20, batch_size=4, log_every=5, image_every=20,
                  ckpt_every=10, out="runs/quick"),
    "tiny": dict(model="cvpr18", face_model="surrey", stage="pretrain", steps=20, batch_size=4,
                 log_every=5, image_every=20, ckpt_every=10, out="runs/tiny", progress=False),
}


def make_config(preset: str = "cvpr18", **overrides) -> TrainConfig:
    """The named preset with `overrides` applied, every field checked (ValueError/TypeError
    naming the key), so a bad value stops the run before any model is built."""
    if preset not in PRESETS:
        raise ValueError(f"unknown configuration {preset!r}; choose from {sorted(PRESETS)}")
    values = {**PRESETS[preset], **{k: v for k, v in overrides.items() if v is not None}}
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = set(values) - names
    if unknown:
        raise ValueError(f"unknown training option(s) {sorted(unknown)}")
    config = TrainConfig(**values)
    validate(config)
    return config


def _at_least(low: float) -> Callable[[float], bool]:
    return lambda value: value >= low


def _finite_at_least(low: float) -> Callable[[float], bool]:
    return lambda value: math.isfinite(value) and value >= low


# Each numeric option's rule, stated once: (test, what the message says it must be).
RULES: dict[str, tuple[Callable[[float], bool], str]] = {
    "steps": (_at_least(1), ">= 1"),
    "batch_size": (_at_least(1), ">= 1"),
    "accumulate": (_at_least(1), ">= 1"),
    "lr": (lambda v: math.isfinite(v) and v > 0, "a finite number > 0"),
    "beta1": (lambda v: 0 <= v < 1, "in [0, 1)"),
    "warmup": (_at_least(0), ">= 0"),
    "lr_final": (lambda v: 0 <= v <= 1, "in [0, 1] (a fraction of lr)"),
    "grad_clip": (_finite_at_least(0), "a finite number >= 0 (0 disables clipping)"),
    "log_every": (_at_least(1), ">= 1"),
    "image_every": (_at_least(1), ">= 1"),
    "ckpt_every": (_at_least(1), ">= 1"),
    "keep_checkpoints": (_at_least(1), ">= 1"),
    "seed": (lambda v: 0 <= v < 2**32, "in [0, 2**32)"),
    "max_nonfinite": (_at_least(1), ">= 1"),
    "adversarial_weight": (_finite_at_least(0), "a finite number >= 0 (0 disables the patchGAN term)"),
    "history": (_at_least(0), ">= 0"),
    "dist_timeout": (lambda v: math.isfinite(v) and v > 0, "a positive number of seconds"),
}
STAGES = ("pretrain", "finetune", "both")
DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?")  # whole names only (fullmatch)


def validate(config: TrainConfig) -> None:
    """Check every field of `config`: its type, its range, the device, the output folder."""
    for field in dataclasses.fields(TrainConfig):
        value, kind = getattr(config, field.name), option_type(field.name)
        if value is None and field.default is None:
            continue
        accepted = (int, float) if kind is float else (kind,)  # an int is a fine float
        if not isinstance(value, accepted) or (isinstance(value, bool) and kind is not bool):
            raise TypeError(f"{field.name} must be {kind.__name__}, got {value!r} ({type(value).__name__})")
        if field.name in RULES:
            test, rule = RULES[field.name]
            if not test(value):
                raise ValueError(f"{field.name} must be {rule}, got {value!r}")
    if config.stage not in STAGES:
        raise ValueError(f"stage must be one of {', '.join(STAGES)}, got {config.stage!r}")
    if config.model not in CONFIGS:
        raise ValueError(f"model must be one of {sorted(CONFIGS)}, got {config.model!r}")
    check_device(config.device, "device")
    out = Path(config.out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"out={config.out} is a file, not a folder: choose a folder for the run")
    for folder in (out / "checkpoints", out / "tensorboard", out / "reconstructions"):
        if folder.exists() and not folder.is_dir():
            raise ValueError(f"out={config.out}: {folder} is a file; the run writes a folder there")


def check_device(name: str, option: str = "device") -> str:
    """`name` if it is auto, cpu, cuda or cuda:N and usable here; ValueError naming `option`."""
    if not isinstance(name, str) or not DEVICE.fullmatch(name):
        raise ValueError(f"{option} must be auto, cpu, cuda or cuda:N, got {name!r}")
    problem = cuda_problem(int(name.partition(":")[2] or 0)) if name.startswith("cuda") else None
    if problem is not None:
        raise ValueError(f"{option}={name}, but {problem}; use {option}=cpu or auto")
    return name


def resume_stage(config: TrainConfig, stages: list[str], state: dict) -> int:
    """Index in `stages` of the stage a checkpoint was written in; ValueError when this run's
    config cannot continue it (another stage, network or face model)."""
    where = state.get("path", "the checkpoint")
    saved = state["config"]
    for key in ("model", "face_model"):
        if saved.get(key) != getattr(config, key):
            raise ValueError(f"{where} was trained with {key}={saved.get(key)}, this run has "
                             f"{key}={getattr(config, key)}: resume with the same {key}, or choose another out=")
    if state["stage"] not in stages:
        raise ValueError(f"{where} was written in stage {state['stage']!r}, but this run's stage={config.stage} "
                         f"trains {stages}: resume with stage={state['stage']} or stage=both, or choose another out=")
    return stages.index(state["stage"])


def option_type(key: str) -> type:
    """bool, int, float or str: the type of TrainConfig field `key`, read from its default
    (`lr` defaults to None, meaning the paper's per-stage value, and is a float)."""
    default = getattr(TrainConfig(), key)
    if isinstance(default, (bool, int, float)):
        return type(default)
    return float if key == "lr" else str


def parse_override(text: str) -> tuple[str, object]:
    """`key=value` from the command line, typed by the field's default."""
    if "=" not in text:
        raise ValueError(f"override must be key=value, got {text!r}")
    key, raw = text.split("=", 1)
    fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    if key not in fields:
        raise ValueError(f"unknown training option {key!r}; options: {', '.join(sorted(fields))}")
    kind = option_type(key)
    if kind is bool:
        if raw.lower() not in ("1", "0", "true", "false", "yes", "no"):
            raise ValueError(f"{key} must be true or false, got {raw!r}")
        return key, raw.lower() in ("1", "true", "yes")
    try:
        return key, kind(raw)
    except ValueError:
        noun = {int: "an integer", float: "a number"}[kind]
        raise ValueError(f"{key} must be {noun}, got {raw!r}") from None
