"""`nl3dmm reconstruct`: the files it writes open in trimesh with the right counts, the overlay
has the photo's size, landmarks/params are consistent, and bad inputs fail one by one."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from nl3dmm.face.camera import project_m
from nl3dmm.cli import main
from nl3dmm.face.facemodel import load_face_model
from nl3dmm.face.mesh_export import write_textured_obj
from nl3dmm.tasks.reconstruct import read_landmark_file

trimesh = pytest.importorskip("trimesh")


@pytest.fixture
def photo_dir(shared_data, tmp_path):
    """One real AFLW2000-3D photo with its .mat beside it (so the crop comes from its landmarks)."""
    folder = tmp_path / "photos"
    folder.mkdir()
    for suffix in (".jpg", ".mat"):
        (folder / f"image00050{suffix}").symlink_to(shared_data / "prnet" / "aflw2000" / f"image00050{suffix}")
    return folder


def test_outputs_round_trip(photo_dir, tmp_path, untrained_checkpoint, capsys):
    out = tmp_path / "out"
    code = main(["reconstruct", str(photo_dir), "--ckpt", str(untrained_checkpoint), "--out", str(out), "--quiet"])
    assert code == 0
    assert "landmarks image00050.mat beside the image" in capsys.readouterr().out
    folder = out / "image00050"
    fm = load_face_model("surrey")
    mesh = trimesh.load(folder / "mesh.obj", process=False, force="mesh")
    assert mesh.vertices.shape == (fm.num_vertices, 3) and mesh.faces.shape == (fm.num_triangles, 3)
    assert mesh.visual.uv.shape == (fm.num_vertices, 2)
    np.testing.assert_allclose(mesh.visual.uv, np.stack([fm.uv[:, 0], 1 - fm.uv[:, 1]], 1), atol=1e-5)
    assert mesh.visual.material.image.size == Image.open(folder / "mesh_texture.png").size
    # outward winding: OBJ faces are ours reversed
    np.testing.assert_array_equal(mesh.faces, fm.triangles[:, [0, 2, 1]])
    assert Image.open(folder / "overlay.png").size == Image.open(photo_dir / "image00050.jpg").size == (450, 450)

    params = np.load(folder / "params.npz")
    assert params["shape_code"].shape == (160,) and params["m"].shape == (8,)
    points = np.load(folder / "landmarks.npy")
    mask = fm.landmark_mask
    assert points.shape == (68, 2) and np.isnan(points[~mask]).all()
    # landmarks in the photo = landmark vertices of the OBJ projected with the photo's camera
    expected = project_m(np.asarray(mesh.vertices)[fm.landmarks[mask]], params["m_image"], 450)
    np.testing.assert_allclose(points[mask], expected, atol=1e-2)
    saved = json.loads((folder / "landmarks.json").read_text())
    assert [p is None for p in saved["landmarks"]] == list(~mask)
    assert saved["image_size"] == [450, 450]


def test_bad_inputs_fail_one_by_one(photo_dir, tmp_path, untrained_checkpoint, capsys):
    rgb = np.asarray(Image.open(photo_dir / "image00050.jpg"))
    Image.fromarray(rgb).convert("L").save(tmp_path / "gray.png")
    Image.fromarray(rgb[:20, :20]).save(tmp_path / "tiny.png")
    (tmp_path / "notes.jpg").write_text("this is not a picture")
    inputs = [tmp_path / "missing.jpg", tmp_path / "notes.jpg", tmp_path / "gray.png", tmp_path / "tiny.png",
              photo_dir / "image00050.jpg"]
    out = tmp_path / "out"
    code = main(["reconstruct", *map(str, inputs), "--ckpt", str(untrained_checkpoint), "--out", str(out),
                 "--batch", "2", "--quiet"])
    assert code == 1
    captured = capsys.readouterr()
    assert "no such file" in captured.err and "missing.jpg" in captured.err
    assert "not a readable image" in captured.err and "notes.jpg" in captured.err
    assert "image too small" in captured.err and "20 x 20" in captured.err
    assert "gray.png" not in captured.err and "L image converted to RGB" in captured.out
    assert "2 reconstructed, 3 failed" in captured.out
    for name in ("gray", "image00050"):
        assert (out / name / "mesh.obj").is_file() and (out / name / "overlay.png").is_file()
    assert not (out / "tiny").exists() and not (out / "notes").exists()
    # the grayscale photo went through the model as RGB: its overlay is RGB at the photo's size
    assert Image.open(out / "gray" / "overlay.png").mode == "RGB"


def test_box_and_landmark_options(photo_dir, tmp_path, untrained_checkpoint, capsys):
    pts = tmp_path / "face.pts"
    pts.write_text("version: 1\nn_points: 3\n{\n100 120\n300 120\n200 330\n}\n")
    np.testing.assert_allclose(read_landmark_file(pts), [[99.5, 119.5], [299.5, 119.5], [199.5, 329.5]])
    out = tmp_path / "out"
    image = str(photo_dir / "image00050.jpg")
    assert main(["reconstruct", image, "--ckpt", str(untrained_checkpoint), "--out", str(out), "--quiet",
                 "--landmarks", str(pts)]) == 0
    saved = json.loads((out / "image00050" / "landmarks.json").read_text())
    assert saved["crop_window"]["side"] == round(1.68 * 210) and saved["crop_rule"] == f"landmarks {pts}"
    assert main(["reconstruct", image, "--ckpt", str(untrained_checkpoint), "--out", str(tmp_path / "o2"),
                 "--quiet", "--box", "100,100,300,320"]) == 0
    saved = json.loads((tmp_path / "o2" / "image00050" / "landmarks.json").read_text())
    assert saved["crop_window"] == {"top": 210 - 185, "left": 200 - 185, "side": 370}  # centre (200, 210), side 1.68 * 220
    # --landmarks names one image's points: refused for several
    assert main(["reconstruct", image, image, "--ckpt", str(untrained_checkpoint), "--out", str(out), "--quiet",
                 "--landmarks", str(pts)]) == 2
    assert "describes one image" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["reconstruct", image, "--ckpt", "x", "--out", "y", "--box", "1,2,3"])


def test_obj_writer_rejects_bad_input(tmp_path):
    with pytest.raises(ValueError, match="uint8"):
        write_textured_obj(tmp_path / "a.obj", np.zeros((3, 3)), np.array([[0, 1, 2]]), np.zeros((3, 2)),
                           np.zeros((4, 4, 3)))
    with pytest.raises(ValueError, match="vertex ids"):
        write_textured_obj(tmp_path / "a.obj", np.zeros((3, 3)), np.array([[0, 1, 3]]), np.zeros((3, 2)),
                           np.zeros((4, 4, 3), np.uint8))
