"""`nl3dmm reconstruct`: photos -> 3-D faces with a trained checkpoint, every face of each photo.

Per image, into `OUT/<image stem>/`, for face k (k = 0, 1, ... largest first):
* `<stem>.face<k>.obj`, `.mtl`, `_texture.png`: the shape in the face model's own axes and units
  (x to the subject's left, y up; BFM units for the paper mesh, millimetres for Surrey) with the
  predicted UV texture (`mesh_export.py`);
* `<stem>.face<k>.landmarks.json`, `.landmarks.npy`: the 68 iBUG landmarks (projected landmark
  vertices) in the photo's corner frame (x right, y down, pixel (r, c) covers [c, c+1) x
  [r, r+1)); points the face model does not define are null / NaN;
* `<stem>.face<k>.params.npz`: `m` (camera of the 224 crop), `m_image` (camera of the photo),
  `shape_code`, `texture_code`, `crop_window` (top, left, side in photo pixels), `landmark_mask`;
and once per photo:
* `overlay.png`: the textured renders of all its faces composited over the photo, at its size;
* `faces.json`: the index: image, size, how the faces were found, and per face its landmark box,
  detector box and score (detected faces), crop window and file names. A photo where no face was
  found gets a `faces.json` with no faces, is reported and counted, and is not a failure.

Where the faces are, in order: `--box x0,y0,x1,y1` (read as the box of the face's landmarks,
brow to chin); `--landmarks FILE` (.pts, iBUG 1-based, or .mat with pt3d_68 / pt2d / pts_2d /
pts_3d); a `.pts` or `.mat` of the same stem beside the image; else the face detector
(`detect.py`: every face, at most `max_faces`, its box mapped to the crop rule's landmark box);
with `detect=False` (`--no-detect`) the largest centred square instead, for photos that are
already face crops. The report says which rule each face used.

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
from .contact_sheet import ContactSheet
from .detect import Detection, detect_faces
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
class FaceWindow:
    window: Window
    crop: np.ndarray                  # (224, 224, 3) uint8
    rule: str                         # how the window was chosen
    detection: Detection | None = None


@dataclass
class PreparedImage:
    path: Path
    image: np.ndarray                 # (H, W, 3) uint8 RGB
    faces: list[FaceWindow]           # empty: no face found
    notes: list[str] = field(default_factory=list)


@dataclass
class ReconstructionReport:
    written: dict[str, Path] = field(default_factory=dict)   # input -> its output folder (photos with faces)
    faces: dict[str, int] = field(default_factory=dict)      # input -> faces reconstructed
    no_face: list[str] = field(default_factory=list)         # inputs where no face was found
    failed: dict[str, str] = field(default_factory=dict)     # input -> why
    notes: dict[str, list[str]] = field(default_factory=dict)
    sheet: Path | None = None

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


def choose_windows(path: Path, image: np.ndarray, box: tuple[float, ...] | None, landmarks: str | Path | None,
                   detect: bool = True, max_faces: int | None = None) -> list[tuple[Window, str, Detection | None]]:
    """(window, rule, detection) of each face to reconstruct; explicit boxes and landmarks first."""
    if box is not None:
        require_box_overlaps(box, *image.shape[:2])
        return [(window_from_box(box), f"box {','.join(f'{v:g}' for v in box)}", None)]
    if landmarks is not None:
        return [(window_from_landmarks(read_landmark_file(landmarks)), f"landmarks {landmarks}", None)]
    for suffix in (".pts", ".mat"):
        beside = path.with_suffix(suffix)
        if beside.is_file():
            return [(window_from_landmarks(read_landmark_file(beside)), f"landmarks {beside.name} beside the image",
                     None)]
    if not detect:
        return [(window_centre_square(*image.shape[:2]), "centre square (detection off)", None)]
    return [(window_from_box(found.landmark_box), f"detected ({found.source}, score {found.score:.2f})", found)
            for found in detect_faces(image, max_faces)]


def prepare(path: Path, box: tuple[float, ...] | None = None, landmarks: str | Path | None = None,
            detect: bool = True, max_faces: int | None = None) -> PreparedImage:
    image, notes = read_rgb(path)
    faces = [FaceWindow(window, crop_to_window(image, window), rule, found)
             for window, rule, found in choose_windows(path, image, box, landmarks, detect, max_faces)]
    return PreparedImage(path, image, faces, notes)


@torch.no_grad()
def render_overlay(model: NonlinearFaceModel, prediction: dict[str, np.ndarray], indices: list[int],
                   item: PreparedImage) -> np.ndarray:
    """(H, W, 3) uint8: the textured renders of the faces (rows `indices` of `prediction`, in the
    order of `item.faces`) drawn one over the other in the photo's own frame over the photo."""
    height, width = item.image.shape[:2]
    device = model.triangles.device
    picture = torch.from_numpy(np.array(item.image, dtype=np.float32)).to(device)[None] / 127.5 - 1.0
    for index, face in zip(indices, item.faces):
        m_image = torch.as_tensor(to_source_m(prediction["m"][index], face.window, height), dtype=torch.float32)
        picture = render_face(torch.as_tensor(prediction["vertices"][index:index + 1], device=device),
                              m_image[None].to(device),
                              torch.as_tensor(prediction["texture"][index:index + 1], device=device), model.triangles,
                              model.uv, (height, width), picture)["image"]
    return texture_to_uint8(picture[0].cpu().numpy())


def write_face(folder: Path, stem: str, k: int, item: PreparedImage, face: FaceWindow,
               prediction: dict[str, np.ndarray], index: int, face_model: FaceModel) -> dict:
    """The files of face k; returns its entry of faces.json."""
    base = f"{stem}.face{k}"
    files = write_textured_obj(folder / f"{base}.obj", prediction["vertices"][index], face_model.triangles,
                               face_model.uv, texture_to_uint8(prediction["texture"][index]))
    mask = prediction["landmark_mask"]
    points = to_source_points(prediction["landmarks"][index], face.window)
    points[~mask] = np.nan
    np.save(folder / f"{base}.landmarks.npy", points)
    window = dict(zip(("top", "left", "side"), map(int, face.window)))
    (folder / f"{base}.landmarks.json").write_text(json.dumps({
        "image": str(item.path), "image_size": [int(item.image.shape[1]), int(item.image.shape[0])], "face": k,
        "frame": "corner frame of the photo: x right, y down, pixel (r, c) covers [c, c+1) x [r, r+1)",
        "order": "iBUG 68 (0-based); null where the face model defines no such point",
        "landmarks": [[float(x), float(y)] if ok else None for (x, y), ok in zip(points, mask)],
        "crop_window": window, "crop_rule": face.rule, "notes": item.notes}, indent=1))
    np.savez(folder / f"{base}.params.npz", m=prediction["m"][index],
             m_image=to_source_m(prediction["m"][index], face.window, item.image.shape[0]),
             shape_code=prediction["shape_code"][index], texture_code=prediction["texture_code"][index],
             crop_window=np.array(face.window), landmark_mask=mask)
    entry = {"face": k, "crop_rule": face.rule, "crop_window": window,
             "files": sorted(p.name for p in files.values())
             + [f"{base}.landmarks.json", f"{base}.landmarks.npy", f"{base}.params.npz"]}
    if face.detection is not None:
        entry.update(face.detection.as_dict())
    return entry


def write_index(folder: Path, item: PreparedImage, entries: list[dict], finder: str) -> None:
    (folder / "faces.json").write_text(json.dumps({
        "image": str(item.path), "image_size": [int(item.image.shape[1]), int(item.image.shape[0])],
        "faces_found_by": finder, "face_count": len(entries),
        "boxes": "landmark_box: the square the crop rule reads (x0, y0, x1, y1, corner frame); detector_box: "
                 "the detector's own box; score: the detector's margin (larger is surer, per source)",
        "overlay": "overlay.png" if entries else None, "faces": entries, "notes": item.notes}, indent=1))


def _folder_for(out: Path, stem: str, taken: set[str]) -> Path:
    name, k = stem, 2
    while name in taken:  # two inputs with the same stem (from different folders) keep both results
        name, k = f"{stem}-{k}", k + 1
    taken.add(name)
    return out / name


def reconstruct(paths: list[str | Path], ckpt: str | Path, out: str | Path, box: tuple[float, ...] | None = None,
                landmarks: str | Path | None = None, batch: int = 8, device: str | torch.device = "cpu",
                progress: bool = True, detect: bool = True, max_faces: int | None = None,
                sheet: str | Path | None = None) -> ReconstructionReport:
    """Reconstruct every face of every input; per-file failures land in the report, never stop the
    batch. `sheet`: also write a contact sheet PNG there (one row per face)."""
    from tqdm import tqdm

    inputs = expand_inputs(paths)
    if not inputs:
        raise FileNotFoundError(f"no input images in {', '.join(map(str, paths))}")
    if landmarks is not None and len(inputs) > 1:
        raise ValueError("--landmarks describes one image; give one image, or put NAME.pts / NAME.mat beside each")
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    if max_faces is not None and max_faces < 1:
        raise ValueError(f"max_faces must be >= 1, got {max_faces}")
    if sheet is not None and Path(sheet).suffix.lower() != ".png":  # refused before the work, not after
        raise ValueError(f"the contact sheet is written as PNG: give a .png path, got {sheet}")
    model, face_model, _ = load_trained(ckpt, device)
    out = Path(out)
    report, taken = ReconstructionReport(), set()
    contact = ContactSheet() if sheet is not None else None
    bar = tqdm(total=len(inputs), desc="reconstruct", unit="img", disable=not progress)
    for start in range(0, len(inputs), batch):
        ready: list[PreparedImage] = []
        for path in inputs[start:start + batch]:
            try:
                ready.append(prepare(path, box, landmarks, detect, max_faces))
            except (OSError, ValueError) as exc:
                report.failed[str(path)] = str(exc)
                bar.update(1)
        crops = [face.crop for item in ready for face in item.faces]
        prediction = _predict_in_chunks(model, crops, face_model, batch)
        first = 0
        for item in ready:
            indices = list(range(first, first + len(item.faces)))
            first += len(item.faces)
            folder = _folder_for(out, item.path.stem, taken)
            # detected faces each carry their detector's rule; an explicit box/label/centre is one rule
            finder = "face detector" if not item.faces or item.faces[0].detection else item.faces[0].rule
            try:
                folder.mkdir(parents=True, exist_ok=True)
                entries = [write_face(folder, folder.name, k, item, face, prediction, index, face_model)
                           for k, (face, index) in enumerate(zip(item.faces, indices))]
                if item.faces:
                    overlay = render_overlay(model, prediction, indices, item)
                    Image.fromarray(overlay).save(folder / "overlay.png")
                write_index(folder, item, entries, finder)
            except (OSError, ValueError) as exc:  # e.g. a full disk or an unwritable folder
                report.failed[str(item.path)] = f"writing {folder}: {exc}"
                bar.update(1)
                continue
            report.notes[str(item.path)] = [face.rule for face in item.faces] + item.notes
            if not item.faces:
                report.no_face.append(str(item.path))
            else:
                report.written[str(item.path)] = folder
                report.faces[str(item.path)] = len(item.faces)
                if contact is not None:
                    for k, (face, index) in enumerate(zip(item.faces, indices)):
                        contact.add(f"{folder.name} face{k}", face.crop, crop_to_window(overlay, face.window),
                                    prediction["vertices"][index], prediction["m"][index], model.triangles,
                                    prediction["texture"][index])
            bar.update(1)
    bar.close()
    if contact is not None and len(contact):
        report.sheet = contact.save(sheet)
    return report


def _predict_in_chunks(model: NonlinearFaceModel, crops: list[np.ndarray], face_model: FaceModel,
                       chunk: int) -> dict[str, np.ndarray]:
    """`predict` over any number of crops (photos may hold many faces), `chunk` at a time."""
    if not crops:
        return {}
    parts = [predict(model, np.stack(crops[i:i + chunk]), face_model) for i in range(0, len(crops), chunk)]
    return {key: (parts[0][key] if key == "landmark_mask" else np.concatenate([p[key] for p in parts]))
            for key in parts[0]}
