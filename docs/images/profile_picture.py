"""Draws docs/images/profile.png: a bundled crop and five profiled views of it (nl3dmm profile's
drawing, no crop jitter), landmarks projected from the landmark vertices through each view's m
(green: visible, red: hidden by the face). Run from the repository root."""
from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from nl3dmm.data import default_store
from nl3dmm.data.loader import TrainingStore
from nl3dmm.data.profile_views import FaceProfiler, ViewPose, source_pose

SOURCE = "prnet/aflw2000/image00050"
YAWS = (15, 35, 55, 75, 90)   # degrees, on the side the face looks to
TILE = 160


def main() -> None:
    store = TrainingStore(default_store())
    names = store.sources()
    index = next(i for i, name in enumerate(names) if name == SOURCE and not store.sample(i)["flipped"])
    sample = store.sample(index)
    start = source_pose(sample["m"])
    side = np.sign(start.yaw) or 1.0
    poses = [ViewPose(start.pitch, side * np.deg2rad(yaw), start.roll) for yaw in YAWS]
    views = FaceProfiler()(sample["image"], sample["m"], sample["texture"], sample["texture_mask"], poses)
    tiles = [Image.fromarray(sample["image"]).resize((TILE, TILE), Image.BILINEAR)]
    for k in range(len(poses)):
        tile = Image.fromarray(views.image[k]).resize((TILE, TILE), Image.BILINEAR)
        draw = ImageDraw.Draw(tile)
        for (x, y), visible in zip(views.landmarks[k] * TILE / 224, views.landmark_visible[k]):
            draw.ellipse([x - 1.2, y - 1.2, x + 1.2, y + 1.2], fill=(40, 220, 60) if visible else (230, 40, 40))
        tiles.append(tile)
    sheet = Image.new("RGB", (TILE * len(tiles), TILE))
    for i, tile in enumerate(tiles):
        sheet.paste(tile, (i * TILE, 0))
    sheet.save("docs/images/profile.png", optimize=True)
    print(f"docs/images/profile.png: {SOURCE} (yaw {np.rad2deg(start.yaw):.0f}) and views at yaw {YAWS}")


if __name__ == "__main__":
    main()
