"""A trained model from a checkpoint, and its predictions on 224 x 224 face crops.

`load_trained` reads a checkpoint weights-only (nothing in the file can run: see checkpoint.py),
rebuilds the network named in its training config for the face model it was trained with,
loads the weights and switches to eval mode (BatchNorm uses its running statistics, so a
prediction does not depend on the rest of the batch).

`predict` takes crops made like the training crops (`nl3dmm.data.crop`; uint8 RGB) and
returns numpy arrays: the camera m of the crop, the vertices, the UV texture, the codes, and
the 68 iBUG landmarks — the landmark vertices projected with m into the crop's corner frame
(`nl3dmm.face.camera`), which is the standard way a 3DMM regressor produces 2-D landmarks.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..face.facemodel import FaceModel, load_face_model
from ..face.camera import project_m
from .networks import CONFIGS, NonlinearFaceModel, build_model
from .checkpoint import CheckpointError, read_checkpoint

CROP_SIZE = 224


def load_trained(ckpt_path: str | Path, device: str | torch.device = "cpu") -> tuple[NonlinearFaceModel, FaceModel, dict]:
    """(model in eval mode on `device`, its FaceModel, the training config dict) of a checkpoint
    written by `nl3dmm train`. FileNotFoundError / CheckpointError / ValueError say what is wrong."""
    path = Path(ckpt_path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint file missing: {path}")
    # Weights-only: CheckpointError for garbage, truncation or a foreign dict, and
    # UnsafeCheckpointError, before anything in the file runs, for pickled objects.
    state = read_checkpoint(path)
    config = state["config"]
    network = config.get("model", "cvpr18")
    if network not in CONFIGS:
        raise ValueError(f"checkpoint {path} names network {network!r}, which this version does not know "
                         f"(known: {sorted(CONFIGS)})")
    face_model = load_face_model(config.get("face_model", "paper"))
    model = build_model(network, face_model)
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as exc:  # shape or key mismatch: weights of another network / face model
        raise CheckpointError(f"checkpoint {path}: weights do not fit network {network!r} with face model "
                              f"{config.get('face_model', 'paper')!r}: {str(exc).splitlines()[0]}") from exc
    model.to(device).eval()
    return model, face_model, config


def images_to_tensor(images224: np.ndarray, device: torch.device) -> torch.Tensor:
    """(B, 224, 224, 3) uint8 -> (B, 3, 224, 224) float in [-1, 1], the loader's exact scaling."""
    images = np.asarray(images224)
    if images.ndim == 3:
        images = images[None]
    if images.ndim != 4 or images.shape[1:] != (CROP_SIZE, CROP_SIZE, 3) or images.dtype != np.uint8:
        raise ValueError(f"images must be (B, {CROP_SIZE}, {CROP_SIZE}, 3) uint8, got {images.shape} {images.dtype}")
    tensor = torch.from_numpy(np.ascontiguousarray(images)).to(device)
    return tensor.permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


@torch.no_grad()
def predict(model: NonlinearFaceModel, images224: np.ndarray, face_model: FaceModel | None = None) -> dict[str, np.ndarray]:
    """Predictions for (B, 224, 224, 3) uint8 crops, as numpy float32 arrays:

    * `m` (B, 8): camera of the crop; `shape_code`, `texture_code` (B, 160);
    * `vertices` (B, V, 3); `texture` (B, Ht, Wt, 3) in [-1, 1];
    * `landmarks` (B, 68, 2): crop corner frame; NaN where the face model has no such point;
    * `landmark_mask` (68,) bool: which of the 68 the model defines (all, for the paper mesh).

    `face_model` only supplies the landmark vertex ids (default: the bundled model the network
    was built for)."""
    face_model = face_model if face_model is not None else _face_model_of(model)
    device = next(model.parameters()).device
    out = model(images_to_tensor(images224, device))
    mask = face_model.landmark_mask
    ids = torch.as_tensor(np.where(mask, face_model.landmarks, 0) if face_model.landmarks is not None
                          else np.zeros(68, dtype=np.int64), device=device)
    points = project_m(out["vertices"][:, ids], out["m"], CROP_SIZE)
    points[:, torch.as_tensor(~mask, device=device)] = float("nan")
    result = {key: out[key].float().cpu().numpy() for key in ("m", "shape_code", "texture_code", "vertices", "texture")}
    result["landmarks"] = points.float().cpu().numpy()
    result["landmark_mask"] = mask.copy()
    return result


def _face_model_of(model: NonlinearFaceModel) -> FaceModel:
    """The bundled FaceModel a network was built for, found by its vertex count (the network
    keeps only the name, which differs from load_face_model's keys)."""
    vertices = model.uv.shape[0]
    for key in ("surrey", "paper"):
        candidate = load_face_model(key)
        if candidate.num_vertices == vertices:
            return candidate
    raise ValueError(f"no bundled face model has {vertices} vertices; pass face_model= to predict")
