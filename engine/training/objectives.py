"""The two training objectives of the paper, as functions of a model output and a batch.

* L0 (pretraining, supervised by 300W-LP's fitted 3DMM): camera m, dense shape (when the
  batch has one) and the pseudo ground-truth UV texture on its visible texels; with
  `landmark_step`, odd steps update only the encoder, with the landmark term added, as both
  author versions alternate.
* L (end to end): reconstruction of the input through the rendering layer (composited inside
  the label's face region), shape smoothness (UV map for a UV shape decoder, mesh Laplacian
  otherwise), albedo symmetry, for models with lighting (tpami19) white shading, constant
  albedo and local albedo smoothness, the m and shape supervision the TPAMI code keeps, the
  patchGAN term, and, in the encoder-only step, the landmark term.

Weights are the authors' (model/losses.py defaults; config fields where they can be changed).
`describe_terms` lists every term of both stages with its weight, whether it is on, and why
not when it is off; `nl3dmm train` prints it at the start of a run. docs/FIDELITY.md compares
each term with the paper and the authors' code.

Each objective returns (total, {term name: value}) so the loop can log every term.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..face.camera import image_to_clip, project_m, project_m_with_depth
from ..face.facemodel import FaceModel
from ..face.unwrap import rasterize_uv_space
from ..model import losses
from ..model.adversarial import FakeHistory, authors_discriminator_loss, lsgan_generator_loss
from ..model.networks import NonlinearFaceModel
from ..render import rasterize
from .config import TrainConfig

M_WEIGHT, SHAPE_WEIGHT = 5.0, 10.0          # the authors' m and shape supervision (losses.py defaults)
CONSTANT_ALBEDO_PAIRS = 20                  # pairs per image (the code's CONST_PIXELS_NUM)
# Stand-in for the authors' unpublished 3DMM_const_alb_mask.dat: skin texels, i.e. the mesh's
# texels farther than this from the UV position of a brow, eye or mouth landmark.
SKIN_MARGIN_TEXELS = 8.0
NON_SKIN_LANDMARKS = np.r_[17:27, 36:68]    # iBUG brows, eyes, mouth
SMOOTHNESS = ("auto", "mesh", "uv", "off")
MIN_FACE_FRACTION = 0.01                    # a label face mask smaller than this is not used


def _texture_target(batch: dict[str, torch.Tensor], size: tuple[int, int]):
    """Pseudo texture and visibility resized to the decoder's texture size (area averaging;
    a texel counts as visible only if all of it was)."""
    target = batch["texture"].permute(0, 3, 1, 2)
    visible = batch["texture_mask"][:, None]
    if tuple(target.shape[2:]) != size:
        target = F.interpolate(target, size=size, mode="area")
        visible = (F.interpolate(visible, size=size, mode="area") > 0.999).float()
    return target.permute(0, 2, 3, 1), visible[:, 0]


def landmark_points(model: NonlinearFaceModel, out: dict[str, torch.Tensor], landmarks: torch.Tensor,
                    image_size: int) -> torch.Tensor:
    """(B, 68, 2) the model's landmark vertices projected by its m (undefined ids -> vertex 0,
    masked out of the loss by the caller)."""
    return project_m(out["vertices"][:, landmarks.clamp(min=0)], out["m"], image_size)


class LandmarkTerm:
    """The 68-landmark term of both stages' encoder-only step."""

    def __init__(self, face_model: FaceModel, image_size: int):
        self.ids = torch.from_numpy(np.where(face_model.landmark_mask, face_model.landmarks, 0))
        self.mask = torch.from_numpy(face_model.landmark_mask)
        self.image_size = image_size

    def to(self, device: torch.device) -> "LandmarkTerm":
        self.ids, self.mask = self.ids.to(device), self.mask.to(device)
        return self

    def __call__(self, model: NonlinearFaceModel, out: dict[str, torch.Tensor],
                 batch: dict[str, torch.Tensor]) -> torch.Tensor:
        points = landmark_points(model, out, self.ids, self.image_size)
        return losses.landmark_loss(points.float(), batch["landmarks"], self.mask)


def pretrain_loss(model: NonlinearFaceModel, out: dict[str, torch.Tensor], batch: dict[str, torch.Tensor],
                  landmarks: LandmarkTerm | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """L0; with `landmarks` (the encoder-only step) the landmark term is added."""
    terms = {"m": losses.m_loss(out["m_normalized"], model.normalize_m(batch["m"]), M_WEIGHT)}
    if "shape" in batch:
        terms["shape"] = losses.shape_loss(out["shape_normalized"], model.normalize_shape(batch["shape"]),
                                           SHAPE_WEIGHT)
    if "texture" in batch:
        target, visible = _texture_target(batch, tuple(out["texture"].shape[1:3]))
        terms["texture"] = losses.texture_loss(out["texture"], target, visible)
    if landmarks is not None:
        terms["landmarks"] = landmarks(model, out, batch)
    return sum(terms.values()), terms


def skin_texels(face_model: FaceModel, size: tuple[int, int]) -> torch.Tensor:
    """(N, 2) int64 (row, column) texels of the `size` UV map that the constant-albedo pairs are
    drawn from: inside the mesh's UV footprint, away from brows, eyes and mouth."""
    uv = torch.from_numpy(face_model.uv.astype(np.float32))
    covered = (rasterize_uv_space(uv, torch.from_numpy(face_model.triangles), size)[0, ..., 3] > 0).numpy()
    rows, cols = np.nonzero(covered)
    keep = np.ones(len(rows), dtype=bool)
    if face_model.landmarks is not None:
        ids = face_model.landmarks[NON_SKIN_LANDMARKS]
        ids = ids[ids >= 0]
        uv = face_model.uv[ids].astype(np.float64)
        centres = np.stack([uv[:, 1] * size[0] - 0.5, uv[:, 0] * size[1] - 0.5], 1)
        distance = np.linalg.norm(np.stack([rows, cols], 1)[:, None] - centres[None], axis=-1).min(1)
        keep = distance > SKIN_MARGIN_TEXELS
    return torch.from_numpy(np.stack([rows[keep], cols[keep]], 1).astype(np.int64))


class FinetuneObjective:
    """L of the paper. Holds what the terms need besides the batch: the mesh Laplacian or the
    UV smoothness switch, the landmark term, the skin texels of the constant-albedo pairs, the
    mean shape for the face mask, the discriminator."""

    def __init__(self, model: NonlinearFaceModel, face_model: FaceModel, discriminator: torch.nn.Module | None,
                 config: TrainConfig):
        if config.smoothness not in SMOOTHNESS:
            raise ValueError(f"smoothness must be one of {SMOOTHNESS}, got {config.smoothness!r}")
        self.config = config
        self.smoothness = resolve_smoothness(config, model)
        if self.smoothness == "uv" and model.config.shape_decoder != "uv":
            raise ValueError("smoothness=uv needs a UV shape decoder (tpami19); use mesh for cvpr18")
        self.laplacian = losses.uniform_laplacian(face_model.triangles, face_model.num_vertices) \
            if self.smoothness == "mesh" else None
        self.landmarks = LandmarkTerm(face_model, model.config.image_size)
        self.lighting = model.config.lighting
        self.skin = skin_texels(face_model, model.config.texture_size) if self.lighting else None
        self.mean_shape = torch.from_numpy(face_model.mean_shape.astype(np.float32))
        self.triangles = torch.from_numpy(face_model.triangles.astype(np.int32))
        self.discriminator = discriminator
        self.adversarial_weight = config.adversarial_weight
        self.image_size = model.config.image_size

    def to(self, device: torch.device) -> "FinetuneObjective":
        if self.laplacian is not None:
            self.laplacian = self.laplacian.to(device)
        self.landmarks.to(device)
        self.mean_shape, self.triangles = self.mean_shape.to(device), self.triangles.to(device)
        if self.skin is not None:
            self.skin = self.skin.to(device)
        return self

    @torch.no_grad()
    def face_mask(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """(B, H, W) the label's face region: the label's shape (dense when the batch has one,
        else the mean shape) rasterized through the label's m. The authors composite inside
        300W-LP face masks they did not publish; this is the fitted face's own footprint."""
        m = batch["m"].float()
        shapes = batch["shape"].float() if "shape" in batch else self.mean_shape.expand(len(m), -1, -1)
        size = self.image_size
        clip = image_to_clip(project_m_with_depth(shapes, m, size), size, size)
        mask = (rasterize(clip, self.triangles, (size, size), cull_backfaces=True)[..., 3] > 0).float()
        # A label whose face covers almost nothing (labels in another model's units, e.g. the
        # Surrey model on a paper-mesh store) would silence the term: no mask for it instead.
        empty = mask.flatten(1).mean(1) < MIN_FACE_FRACTION
        return torch.where(empty[:, None, None], torch.ones_like(mask), mask)

    def _constant_albedo_pairs(self, batch_size: int) -> torch.Tensor:
        picks = torch.randint(0, len(self.skin), (batch_size, CONSTANT_ALBEDO_PAIRS, 2), device=self.skin.device)
        return self.skin[picks]  # (B, P, 2, 2)

    def __call__(self, model: NonlinearFaceModel, out: dict[str, torch.Tensor], batch: dict[str, torch.Tensor],
                 with_landmarks: bool) -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor]:
        """Returns (total, terms, rendered image (B, H, W, 3) in [-1, 1] composited on the input)."""
        config = self.config
        # The renderer works in float32 whatever the autocast dtype of the networks.
        face_mask = self.face_mask(batch) if config.face_mask else None
        rendered = model.render({"vertices": out["vertices"].float(), "m": out["m"].float(),
                                 "texture": out["texture"].float()}, background=batch["image_hwc"],
                                face_mask=face_mask)
        terms = {
            "reconstruction": losses.reconstruction_loss(rendered["image"], batch["image_hwc"], rendered["mask"]),
            "symmetry": losses.symmetry_loss(out.get("albedo", out["texture"]).float()),
        }
        if self.smoothness == "mesh":
            terms["smoothness"] = losses.smoothness_loss(out["shape_normalized"].float(), self.laplacian)
        elif self.smoothness == "uv":
            terms["smoothness"] = losses.uv_smoothness_loss(out["shape_uv"].float())
        if config.finetune_label_weight > 0:
            scale = config.finetune_label_weight
            terms["m"] = losses.m_loss(out["m_normalized"].float(), model.normalize_m(batch["m"]), M_WEIGHT * scale)
            if "shape" in batch:
                terms["shape"] = losses.shape_loss(out["shape_normalized"].float(),
                                                   model.normalize_shape(batch["shape"]), SHAPE_WEIGHT * scale)
        if self.lighting:
            albedo = out["albedo"].float()
            if config.white_shading_weight > 0:
                terms["white_shading"] = losses.white_shading_loss(out["shade"].float(), out["uv_mask"],
                                                                   weight=config.white_shading_weight)
            if config.constant_albedo_weight > 0:
                terms["constant_albedo"] = losses.constant_albedo_loss(
                    albedo, self._constant_albedo_pairs(len(albedo)), weight=config.constant_albedo_weight)
            if config.local_albedo_weight > 0 and "texture" in batch:
                target, visible = _texture_target(batch, tuple(albedo.shape[1:3]))
                terms["local_albedo"] = losses.local_albedo_smoothness_loss(albedo, target, visible,
                                                                           weight=config.local_albedo_weight)
        if self.discriminator is not None and self.adversarial_weight > 0:
            scores = self.discriminator(rendered["image"].permute(0, 3, 1, 2))
            terms["adversarial"] = lsgan_generator_loss(scores, self.adversarial_weight)
        if with_landmarks:
            terms["landmarks"] = self.landmarks(model, out, batch)
        return sum(terms.values()), terms, rendered["image"]


def discriminator_loss(discriminator: torch.nn.Module, real: torch.Tensor, fake: torch.Tensor,
                       history: FakeHistory) -> torch.Tensor:
    """The authors' D update: real images, this step's fakes and as many fakes drawn from the
    history (whose drawn slots the new fakes then take). Images (B, 3, H, W)."""
    past, slots = history.sample(fake)
    loss = authors_discriminator_loss(discriminator(real.float()), discriminator(fake.float()),
                                      discriminator(past.float()))
    history.push(fake, slots)
    return loss


def resolve_smoothness(config: TrainConfig, model: NonlinearFaceModel) -> str:
    if config.smoothness != "auto":
        return config.smoothness
    return "uv" if model.config.shape_decoder == "uv" else "mesh"


@dataclass(frozen=True)
class TermStatus:
    stage: str
    term: str
    weight: str
    active: bool
    reason: str


def describe_terms(config: TrainConfig, model: NonlinearFaceModel, stages: list[str], has_shapes: bool,
                   has_texture: bool, discriminator_on: bool, landmark_conventions: dict | None = None
                   ) -> list[TermStatus]:
    """Every loss term of the paper's L0 and L for this run: weight, on/off, and why."""
    rows: list[TermStatus] = []
    no_shape = "no dense shapes: pass basis= (nl3dmm convert-bfm; the BFM licence keeps the basis out of the package)"
    conventions = ", ".join(f"{k} {v}" for k, v in (landmark_conventions or {}).items()) or "as stored"
    if "pretrain" in stages:
        rows += [
            TermStatus("pretrain", "m", f"{M_WEIGHT:g} x l2 (normalised m)", True, "the label's camera"),
            TermStatus("pretrain", "shape", f"{SHAPE_WEIGHT:g} x l2 (normalised S)", has_shapes,
                       "dense shapes from the basis" if has_shapes else no_shape),
            TermStatus("pretrain", "texture", "1 x L1 / visible fraction", has_texture,
                       "pseudo ground-truth texture" if has_texture else "the data has no pseudo textures"),
            TermStatus("pretrain", "landmarks (encoder step)", "1 x sq. dist / 2 / 68 / B / 50", config.landmark_step,
                       f"targets: {conventions}" if config.landmark_step else "landmark_step=false"),
        ]
    if "finetune" in stages:
        smoothness = resolve_smoothness(config, model)
        lighting = model.config.lighting
        no_lighting = f"{model.config.name} has no lighting/albedo split (tpami19 has)"
        label = config.finetune_label_weight
        rows += [
            TermStatus("finetune", "reconstruction", "10 x L1 / (C x mask fraction)", True,
                       "inside the label's face region" if config.face_mask else "whole render mask (face_mask=false)"),
            TermStatus("finetune", "landmarks (encoder step)", "1 x sq. dist / 2 / 68 / B / 50", True,
                       f"targets: {conventions}"),
            TermStatus("finetune", "smoothness", "1000 x l2", smoothness != "off",
                       {"uv": "UV shape map (authors' tpami19)", "mesh": "mesh Laplacian (MLP shape decoder)",
                        "off": "smoothness=off"}[smoothness]),
            TermStatus("finetune", "symmetry", "1 x L1 of max(|A - flip A| - 0.05, 0)", True, "albedo"),
            TermStatus("finetune", "m", f"{M_WEIGHT * label:g} x l2", label > 0,
                       "kept in L as the TPAMI code does" if label > 0 else "finetune_label_weight=0 (CVPR'18 L)"),
            TermStatus("finetune", "shape", f"{SHAPE_WEIGHT * label:g} x l2", label > 0 and has_shapes,
                       no_shape if label > 0 and not has_shapes else
                       ("kept in L as the TPAMI code does" if label > 0 else "finetune_label_weight=0 (CVPR'18 L)")),
        ]
        for term, weight in (("white_shading", config.white_shading_weight),
                             ("constant_albedo", config.constant_albedo_weight),
                             ("local_albedo", config.local_albedo_weight)):
            on = lighting and weight > 0 and (term != "local_albedo" or has_texture)
            why = no_lighting if not lighting else (f"{term}_weight=0" if weight <= 0 else
                                                    "needs pseudo textures" if not on else "tpami19 regulariser")
            rows.append(TermStatus("finetune", term, f"{weight:g}", on, why))
        rows.append(TermStatus("finetune", "adversarial (patchGAN)", f"{config.adversarial_weight:g} x LSGAN",
                               discriminator_on, "D: authors' widths and loss" if discriminator_on
                               else "adversarial_weight=0"))
    return rows


def format_terms(rows: list[TermStatus]) -> str:
    lines = ["loss terms (stage | term | weight | on/off | why):"]
    for row in rows:
        lines.append(f"  {row.stage:<8} | {row.term:<24} | {row.weight:<38} | {'on ' if row.active else 'off'} "
                     f"| {row.reason}")
    return "\n".join(lines)
