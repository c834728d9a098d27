"""Named training configurations and command-line overrides."""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Optional


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
    warmup: int = 0                    # linear warm-up steps, then cosine decay to lr_final
    lr_final: float = 0.1              # as a fraction of lr
    grad_clip: float = 10.0            # max global grad norm; 0 disables
    log_every: int = 10
    image_every: int = 200
    ckpt_every: int = 200
    keep_checkpoints: int = 2
    seed: int = 0
    device: str = "auto"               # "auto", "cpu", "cuda"
    amp: bool = True                   # bf16 autocast on CUDA (ignored on CPU)
    compile: bool = False              # torch.compile the encoder and decoders
    max_nonfinite: int = 5             # stop after this many non-finite losses in a row
    adversarial_weight: float = 0.1    # patchGAN generator term in finetune (0 disables)
    history: int = 1000                # discriminator history of fakes
    progress: bool = True
    dist_timeout: float = 1800.0       # seconds a collective waits for a silent rank before the job fails (torchrun)

    def stage_lr(self, stage: str) -> float:
        if self.lr is not None:
            return self.lr
        return 1e-3 if stage == "pretrain" else 2e-4


# The paper's settings, and a short CPU run for a fresh machine (the README's main job).
PRESETS: dict[str, dict] = {
    "cvpr18": dict(model="cvpr18", stage="both", steps=20000, batch_size=128),
    "cvpr18-finetune": dict(model="cvpr18", stage="finetune", batch_size=64),
    "tpami19": dict(model="tpami19", stage="both", steps=20000, batch_size=128),
    "quick": dict(model="cvpr18", stage="both", steps=20, batch_size=4, log_every=5, image_every=20,
                  ckpt_every=10, out="runs/quick"),
    "tiny": dict(model="cvpr18", face_model="surrey", stage="pretrain", steps=20, batch_size=4,
                 log_every=5, image_every=20, ckpt_every=10, out="runs/tiny", progress=False),
}


def make_config(preset: str = "cvpr18", **overrides) -> TrainConfig:
    if preset not in PRESETS:
        raise ValueError(f"unknown configuration {preset!r}; choose from {sorted(PRESETS)}")
    values = {**PRESETS[preset], **{k: v for k, v in overrides.items() if v is not None}}
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = set(values) - names
    if unknown:
        raise ValueError(f"unknown training option(s) {sorted(unknown)}")
    config = TrainConfig(**values)
    if config.stage not in ("pretrain", "finetune", "both"):
        raise ValueError(f"stage must be pretrain, finetune or both, got {config.stage!r}")
    if config.steps < 1 or config.batch_size < 1 or config.accumulate < 1:
        raise ValueError("steps, batch_size and accumulate must be >= 1")
    if not (config.dist_timeout > 0 and math.isfinite(config.dist_timeout)):
        raise ValueError(f"dist_timeout must be a positive number of seconds, got {config.dist_timeout}")
    return config


def split_names(text: str | None) -> list[str]:
    """`a,b, c` -> ["a", "b", "c"]: a command-line list of photo names (exclude=, --only)."""
    return [part.strip() for part in (text or "").split(",") if part.strip()]


def parse_override(text: str) -> tuple[str, object]:
    """`key=value` from the command line, typed by the field's default."""
    if "=" not in text:
        raise ValueError(f"override must be key=value, got {text!r}")
    key, raw = text.split("=", 1)
    fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    if key not in fields:
        raise ValueError(f"unknown training option {key!r}; options: {', '.join(sorted(fields))}")
    default = getattr(TrainConfig(), key)
    if isinstance(default, bool):
        if raw.lower() not in ("1", "0", "true", "false", "yes", "no"):
            raise ValueError(f"{key} must be true or false, got {raw!r}")
        return key, raw.lower() in ("1", "true", "yes")
    try:
        if isinstance(default, int):
            return key, int(raw)
        if isinstance(default, float) or key == "lr":
            return key, float(raw)
    except ValueError:
        kind = "an integer" if isinstance(default, int) else "a number"
        raise ValueError(f"{key} must be {kind}, got {raw!r}") from None
    return key, raw
