"""`nl3dmm reconstruct`: photos -> 3-D faces with a trained checkpoint.

Per image, into `OUT/<image stem>/`:
* `mesh.obj`, `mesh.mtl`, `mesh_texture.png`: the shape in the face model's own axes and units
  (x to the subject's left, y up; BFM units for the paper mesh, millimetres for Surrey) with the
  predicted UV texture (`mesh_export.py`);
* `overlay.png`: the textured render composited over the photo, at the photo's size;
* `landmarks.json`, `landmarks.npy`: the 68 iBUG landmarks (projected landmark vertices) in the
  photo's corner frame (x right, y down, pixel (r, c) covers [c, c+1) x [r, r+1)); points the
  face model does not define are null / NaN;
* `params.npz`: `m` (camera of the 224 crop), `m_image` (camera of the photo), `shape_code`,
  `texture_code`, `crop_window` (top, left, side in photo pixels), `landmark_mask`.

Where the face is. No face detector ships in our dependencies, so the crop comes from, in order:
`--box x0,y0,x1,y1` (read as the box of the face's landmarks, brow to chin); `--landmarks FILE`
(.pts, iBUG 1-based, or .mat with pt3d_68 / pt2d / pts_2d / pts_3d); a `.pts` or `.mat` of the
same stem beside the image; else the largest centred square (right for photos that are already
face crops, wrong for faces elsewhere: the report says which rule each image used).

Inputs. Grayscale, palette and RGBA images are converted to RGB (the alpha is dropped); EXIF
orientation is ignored (pixels as stored, which is what landmark files refer to). Images
smaller than 32 px or larger than 16,384 px on a side are refused (before decoding), and so is a
`--box` wholly outside the image. Every failure (missing file, not an image, too small,
bad landmarks) is reported for that file and the rest of the batch is still processed.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.io as sio
import torch
from PIL import Image

from ..face.camera import matlab_to_image
from ..face.rendering import render_face
from ..face.facemodel import FaceModel
from .inference_crop import (Window, crop_to_window, require_box_overlaps, to_source_m, to_source_points,
                             window_centre_square, window_from_box, window_from_landmarks)
from ..face.mesh_export import texture_to_uint8, write_textured_obj
from ..model.inference import load_trained, predict
from ..model.networks import NonlinearFaceModel
from ..constants import MAX_RESOLUTION

MIN_SIDE = 32
MAX_SIDE = MAX_RESOLUTION  # the overlay is rendered at the photo's size
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp")


class ImageTooLarge(ValueError):
    """Refused before decoding: the photo is larger than reconstruct can render an overlay of."""


@dataclass
class PreparedImage:
    path: Path
    image: np.ndarray        # (H, W, 3) uint8 RGB
    window: Window
    crop: np.ndarray         # (224, 224, 3) uint8
    crop_rule: str           # how the window was chosen
    notes: list[str] = field(default_factory=list)


@dataclass
class ReconstructionReport:
    written: dict[str, Path] = field(default_factory=dict)   # input -> its output folder
    failed: dict[str, str] = field(default_factory=dict)     # input -> why
    notes: dict[str, list[str]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.failed


def expand_inputs(paths: list[str | Path]) -> list[Path]:
    """Files as given (even non-images: they fail later, by name) and the image files of folders
    (sorted, not recursive; the .mat/.pts beside them are not inputs)."""
    found: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found.extend(sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES))
        else:
            found.append(path)
    return found


def read_rgb(path: Path) -> tuple[np.ndarray, list[str]]:
    """(H, W, 3) uint8 RGB and notes on conversions; clear errors for missing, non-image, tiny."""
    if not path.exists():
        raise FileNotFoundError(f"no such file: {path}")
    if not path.is_file():
        raise ValueError(f"not a file: {path}")
    notes = []
    try:
        with Image.open(path) as image:  # reads the header only: the size is known before decoding
            if max(image.size) > MAX_SIDE:
                raise ImageTooLarge(f"image too large: {path} is {image.size[0]} x {image.size[1]} px; at most "
                                    f"{MAX_SIDE} px on a side (the renderer's largest overlay) are accepted")
            image.load()
            if image.mode not in ("RGB",):
                notes.append(f"{image.mode} image converted to RGB"
                             + (" (grayscale replicated to 3 channels)" if image.mode in ("L", "LA", "I", "I;16", "1") else ""))
            if image.mode in ("I", "I;16"):  # 16-bit grayscale: scale to 8 bits before converting
                image = Image.fromarray((np.asarray(image, dtype=np.float64) / max(np.asarray(image).max(), 1) * 255)
                                        .astype(np.uint8))
            rgb = np.asarray(image.convert("RGB"))
    except ImageTooLarge:
        raise
    except Image.DecompressionBombError as exc:  # PIL's own pixel-count limit, met before ours
        raise ImageTooLarge(f"image too large: {path}: {exc}") from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise ValueError(f"not a readable image: {path} ({type(exc).__name__}: {exc})") from exc
    if min(rgb.shape[:2]) < MIN_SIDE:
        raise ValueError(f"image too small: {path} is {rgb.shape[1]} x {rgb.shape[0]} px; at least {MIN_SIDE} px "
                         "on each side are needed for a face crop")
    return rgb, notes


def read_landmark_file(path: str | Path) -> np.ndarray:
    """(N, 2) corner-frame points of an iBUG .pts file or a .mat label (1-based MATLAB pixels)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"landmark file missing: {path}")
    if path.suffix.lower() == ".pts":
        text = path.read_text(errors="replace")
        if "{" not in text or "}" not in text:
            raise ValueError(f"{path}: not an iBUG .pts file (no {{ ... }} block)")
        body = text[text.index("{") + 1:text.rindex("}")]
        try:
            points = np.array([[float(v) for v in line.split()[:2]] for line in body.splitlines() if line.strip()])
        except ValueError as exc:
            raise ValueError(f"{path}: unreadable point ({exc})") from exc
    elif path.suffix.lower() == ".mat":
        try:
            label = sio.loadmat(path)
        except Exception as exc:  # scipy raises many types on corrupt files
            raise ValueError(f"{path}: unreadable .mat ({type(exc).__name__}: {exc})") from exc
        for key in ("pt3d_68", "pt2d", "pts_2d", "pts_3d"):
            if key in label:
                value = np.asarray(label[key], dtype=np.float64)
                points = value.T if value.shape[0] in (2, 3) and value.shape[1] > 3 else value
                break
        else:
            raise ValueError(f"{path}: no landmarks (looked for pt3d_68, pt2d, pts_2d, pts_3d)")
    else:
        raise ValueError(f"{path}: landmarks must be a .pts or .mat file")
    if points.ndim != 2 or points.shape[1] < 2 or len(points) < 2:
        raise ValueError(f"{path}: expected at least 2 points of (x, y), got shape {points.shape}")
    points = points[:, :2]
    points = points[(points > 0).all(1)]  # AFLW's pt2d marks missing points with -1
    if len(points) < 2 or not np.isfinite(points).all():
        raise ValueError(f"{path}: fewer than 2 valid landmarks")
    return matlab_to_image(points)


def choose_window(path: Path, image: np.ndarray, box: tuple[float, ...] | None,
                  landmarks: str | Path | None) -> tuple[Window, str]:
    if box is not None:
        require_box_overlaps(box, *image.shape[:2])
        return window_from_box(box), f"box {','.join(f'{v:g}' for v in box)}"
    if landmarks is not None:
        return window_from_landmarks(read_landmark_file(landmarks)), f"landmarks {landmarks}"
    for suffix in (".pts", ".mat"):
        beside = path.with_suffix(suffix)
        if beside.is_file():
            return window_from_landmarks(read_landmark_file(beside)), f"landmarks {beside.name} beside the image"
    return window_centre_square(*image.shape[:2]), "centre square (no box or landmarks given)"


def prepare(path: Path, box: tuple[float, ...] | None = None, landmarks: str | Path | None = None) -> PreparedImage:
    image, notes = read_rgb(path)
    window, rule = choose_window(path, image, box, landmarks)
    return PreparedImage(path, image, window, crop_to_window(image, window), rule, notes)


@torch.no_grad()
def render_overlay(model: NonlinearFaceModel, prediction: dict[str, np.ndarray], index: int,
                   item: PreparedImage) -> np.ndarray:
    """(H, W, 3) uint8: the textured render drawn in the photo's own frame over the photo."""
    height, width = item.image.shape[:2]
    device = model.triangles.device
    m_image = torch.as_tensor(to_source_m(prediction["m"][index], item.window, height), dtype=torch.float32)
    background = torch.from_numpy(np.array(item.image, dtype=np.float32)).to(device)[None] / 127.5 - 1.0
    out = render_face(torch.as_tensor(prediction["vertices"][index:index + 1], device=device), m_image[None].to(device),
                      torch.as_tensor(prediction["texture"][index:index + 1], device=device), model.triangles,
                      model.uv, (height, width), background)
    return texture_to_uint8(out["image"][0].cpu().numpy())


def write_outputs(folder: Path, item: PreparedImage, prediction: dict[str, np.ndarray], index: int,
                  model: NonlinearFaceModel, face_model: FaceModel) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    write_textured_obj(folder / "mesh.obj", prediction["vertices"][index], face_model.triangles, face_model.uv,
                       texture_to_uint8(prediction["texture"][index]))
    Image.fromarray(render_overlay(model, prediction, index, item)).save(folder / "overlay.png")
    mask = prediction["landmark_mask"]
    points = to_source_points(prediction["landmarks"][index], item.window)
    points[~mask] = np.nan
    np.save(folder / "landmarks.npy", points)
    (folder / "landmarks.json").write_text(json.dumps({
        "image": str(item.path), "image_size": [int(item.image.shape[1]), int(item.image.shape[0])],
        "frame": "corner frame of the photo: x right, y down, pixel (r, c) covers [c, c+1) x [r, r+1)",
        "order": "iBUG 68 (0-based); null where the face model defines no such point",
        "landmarks": [[float(x), float(y)] if ok else None for (x, y), ok in zip(points, mask)],
        "crop_window": dict(zip(("top", "left", "side"), map(int, item.window))), "crop_rule": item.crop_rule,
        "notes": item.notes}, indent=1))
    np.savez(folder / "params.npz", m=prediction["m"][index],
             m_image=to_source_m(prediction["m"][index], item.window, item.image.shape[0]),
             shape_code=prediction["shape_code"][index], texture_code=prediction["texture_code"][index],
             crop_window=np.array(item.window), landmark_mask=mask)


def _folder_for(out: Path, stem: str, taken: set[str]) -> Path:
    name, k = stem, 2
    while name in taken:  # two inputs with the same stem (from different folders) keep both results
        name, k = f"{stem}-{k}", k + 1
    taken.add(name)
    return out / name


def reconstruct(paths: list[str | Path], ckpt: str | Path, out: str | Path, box: tuple[float, ...] | None = None,
                landmarks: str | Path | None = None, batch: int = 8, device: str | torch.device = "cpu",
                progress: bool = True, log=print) -> ReconstructionReport:
    """Reconstruct every input; per-file failures land in the report, never stop the batch."""
    from tqdm import tqdm

    inputs = expand_inputs(paths)
    if not inputs:
        raise FileNotFoundError(f"no input images in {', '.join(map(str, paths))}")
    if landmarks is not None and len(inputs) > 1:
        raise ValueError("--landmarks describes one image; give one image, or put NAME.pts / NAME.mat beside each")
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    model, face_model, _ = load_trained(ckpt, device)
    out = Path(out)
    report, taken = ReconstructionReport(), set()
    bar = tqdm(total=len(inputs), desc="reconstruct", unit="img", disable=not progress)
    for start in range(0, len(inputs), batch):
        ready: list[PreparedImage] = []
        for path in inputs[start:start + batch]:
            try:
                ready.append(prepare(path, box, landmarks))
            except (OSError, ValueError) as exc:
                report.failed[str(path)] = str(exc)
                bar.update(1)
        if not ready:
            continue
        prediction = predict(model, np.stack([item.crop for item in ready]), face_model)
        for index, item in enumerate(ready):
            folder = _folder_for(out, item.path.stem, taken)
            try:
                write_outputs(folder, item, prediction, index, model, face_model)
                report.written[str(item.path)] = folder
                report.notes[str(item.path)] = [f"crop: {item.crop_rule}"] + item.notes
            except (OSError, ValueError) as exc:  # e.g. a full disk or an unwritable folder
                report.failed[str(item.path)] = f"writing {folder}: {exc}"
            bar.update(1)
    bar.close()
    return report
