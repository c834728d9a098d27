"""The contact sheet of `nl3dmm reconstruct --sheet out.png`: one row per reconstructed face,
photo crop | render over it | shape | texture, with the photo's name and the face's number, so
a folder of photos can be judged at a glance.

Rows are kept small (ROW_HEIGHT pixels, about 40 kB of pixels each) and assembled at the end.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from ..training.visuals import grid, shape_shading

ROW_HEIGHT = 128
COLUMNS = ("photo crop", "overlay", "shape", "texture")


class ContactSheet:
    """Collects rows, then `save`s them as one PNG."""

    def __init__(self, row_height: int = ROW_HEIGHT):
        self.row_height = row_height
        self.rows: list[np.ndarray] = []
        self.labels: list[str] = []

    def __len__(self) -> int:
        return len(self.rows)

    @torch.no_grad()
    def add(self, label: str, crop: np.ndarray, overlay_crop: np.ndarray, vertices: np.ndarray, m: np.ndarray,
            triangles: torch.Tensor, texture: np.ndarray) -> None:
        """One face: `crop` and `overlay_crop` (S, S, 3) uint8 of the same window, `vertices` (V, 3) and
        `m` (8,) of the crop's camera, `triangles` (F, 3) of the face model, `texture` (Ht, Wt, 3) in [-1, 1]."""
        size = crop.shape[0]
        device = triangles.device
        shading = shape_shading(torch.as_tensor(vertices, device=device)[None],
                                torch.as_tensor(m, device=device)[None], triangles, size)[0].cpu()
        cells = [torch.from_numpy(np.asarray(crop, dtype=np.float32) / 255),
                 torch.from_numpy(np.asarray(overlay_crop, dtype=np.float32) / 255), shading,
                 torch.from_numpy((np.asarray(texture, dtype=np.float32) + 1) / 2)]
        self.rows.append(grid([cells], self.row_height))
        self.labels.append(label)

    def picture(self) -> np.ndarray:
        """(rows x ROW_HEIGHT, W, 3) uint8, each row labelled in its top-left corner."""
        if not self.rows:
            raise ValueError("the contact sheet has no rows: no face was reconstructed")
        width = max(row.shape[1] for row in self.rows)
        padded = [np.pad(row, ((0, 0), (0, width - row.shape[1]), (0, 0)), constant_values=255) for row in self.rows]
        sheet = Image.fromarray(np.concatenate(padded, 0))
        draw = ImageDraw.Draw(sheet)
        for k, label in enumerate(self.labels):
            top = k * self.row_height
            box = draw.textbbox((3, top + 2), label)
            draw.rectangle((box[0] - 2, box[1] - 1, box[2] + 2, box[3] + 1), fill=(0, 0, 0))
            draw.text((3, top + 2), label, fill=(255, 255, 255))
        return np.asarray(sheet)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(self.picture()).save(path)
        return path
