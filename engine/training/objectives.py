"""The two training objectives of the paper, as functions of a model output and a batch.

* L0 (pretraining, supervised by 300W-LP's fitted 3DMM): camera m, dense shape (when the
  batch has one) and the pseudo ground-truth UV texture on its visible texels.
* L (end to end): reconstruction of the input through the rendering layer, shape smoothness,
  albedo symmetry, the patchGAN term, and, in the encoder-only step, the landmark term.

Each returns (total, {term name: value}) so the loop can log every term.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..model import losses
from ..model.adversarial import lsgan_generator_loss
from ..face.camera import project_m
from ..model.networks import NonlinearFaceModel


def _texture_target(batch: dict[str, torch.Tensor], size: tuple[int, int]):
    """Pseudo texture and visibility resized to the decoder's texture size (area averaging;
    a texel counts as visible only if all of it was)."""
    target = batch["texture"].permute(0, 3, 1, 2)
    visible = batch["texture_mask"][:, None]
    if tuple(target.shape[2:]) != size:
        target = F.interpolate(target, size=size, mode="area")
        visible = (F.interpolate(visible, size=size, mode="area") > 0.999).float()
    return target.permute(0, 2, 3, 1), visible[:, 0]


def pretrain_loss(model: NonlinearFaceModel, out: dict[str, torch.Tensor],
                  batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    terms = {"m": losses.m_loss(out["m_normalized"], model.normalize_m(batch["m"]))}
    if "shape" in batch:
        terms["shape"] = losses.shape_loss(out["shape_normalized"], model.normalize_shape(batch["shape"]))
    if "texture" in batch:
        target, visible = _texture_target(batch, tuple(out["texture"].shape[1:3]))
        terms["texture"] = losses.texture_loss(out["texture"], target, visible)
    return sum(terms.values()), terms


def landmark_points(model: NonlinearFaceModel, out: dict[str, torch.Tensor], landmarks: torch.Tensor,
                    image_size: int) -> torch.Tensor:
    """(B, 68, 2) the model's landmark vertices projected by its m (undefined ids -> vertex 0,
    masked out of the loss by the caller)."""
    return project_m(out["vertices"][:, landmarks.clamp(min=0)], out["m"], image_size)


class FinetuneObjective:
    """L of the paper. Holds what the terms need besides the batch: the mesh Laplacian for
    smoothness, the landmark ids, the discriminator."""

    def __init__(self, model: NonlinearFaceModel, face_model, discriminator: torch.nn.Module | None,
                 adversarial_weight: float):
        self.laplacian = losses.uniform_laplacian(face_model.triangles, face_model.num_vertices)
        self.landmarks = torch.from_numpy(np.where(face_model.landmark_mask, face_model.landmarks, 0))
        self.landmark_mask = torch.from_numpy(face_model.landmark_mask)
        self.discriminator = discriminator
        self.adversarial_weight = adversarial_weight
        self.image_size = model.config.image_size

    def to(self, device: torch.device) -> "FinetuneObjective":
        self.laplacian = self.laplacian.to(device)
        self.landmarks, self.landmark_mask = self.landmarks.to(device), self.landmark_mask.to(device)
        return self

    def __call__(self, model: NonlinearFaceModel, out: dict[str, torch.Tensor], batch: dict[str, torch.Tensor],
                 with_landmarks: bool) -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor]:
        """Returns (total, terms, rendered image (B, H, W, 3) in [-1, 1] composited on the input)."""
        # The renderer works in float32 whatever the autocast dtype of the networks.
        rendered = model.render({"vertices": out["vertices"].float(), "m": out["m"].float(),
                                 "texture": out["texture"].float()}, background=batch["image_hwc"])
        terms = {
            "reconstruction": losses.reconstruction_loss(rendered["image"], batch["image_hwc"], rendered["mask"]),
            "smoothness": losses.smoothness_loss(out["shape_normalized"].float(), self.laplacian),
            "symmetry": losses.symmetry_loss(out.get("albedo", out["texture"]).float()),
        }
        if self.discriminator is not None and self.adversarial_weight > 0:
            scores = self.discriminator(rendered["image"].permute(0, 3, 1, 2))
            terms["adversarial"] = lsgan_generator_loss(scores, self.adversarial_weight)
        if with_landmarks:
            points = landmark_points(model, out, self.landmarks, self.image_size)
            terms["landmarks"] = losses.landmark_loss(points.float(), batch["landmarks"], self.landmark_mask)
        return sum(terms.values()), terms, rendered["image"]

