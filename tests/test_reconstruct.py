"""`nl3dmm reconstruct`: the files it writes open in trimesh with the right counts, the overlay
has the photo's size, landmarks/params are consistent, and bad inputs fail one by one; every
detected face of a photo is reconstructed (two pasted faces give two), a photo without a face
is reported and counted, explicit boxes and labels win over detection, and the contact sheet
has one row per face."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from nl3dmm.face.camera import project_m
from nl3dmm.cli import main
from nl3dmm.face.facemodel import load_face_model
from nl3dmm.face.mesh_export import write_textured_obj
from nl3dmm.tasks.contact_sheet import ROW_HEIGHT
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
    mesh = trimesh.load(folder / "image00050.face0.obj", process=False, force="mesh")
    assert mesh.vertices.shape == (fm.num_vertices, 3) and mesh.faces.shape == (fm.num_triangles, 3)
    assert mesh.visual.uv.shape == (fm.num_vertices, 2)
    np.testing.assert_allclose(mesh.visual.uv, np.stack([fm.uv[:, 0], 1 - fm.uv[:, 1]], 1), atol=1e-5)
    assert mesh.visual.material.image.size == Image.open(folder / "image00050.face0_texture.png").size
    # outward winding: OBJ faces are ours reversed
    np.testing.assert_array_equal(mesh.faces, fm.triangles[:, [0, 2, 1]])
    assert Image.open(folder / "overlay.png").size == Image.open(photo_dir / "image00050.jpg").size == (450, 450)

    params = np.load(folder / "image00050.face0.params.npz")
    assert params["shape_code"].shape == (160,) and params["m"].shape == (8,)
    points = np.load(folder / "image00050.face0.landmarks.npy")
    mask = fm.landmark_mask
    assert points.shape == (68, 2) and np.isnan(points[~mask]).all()
    # landmarks in the photo = landmark vertices of the OBJ projected with the photo's camera
    expected = project_m(np.asarray(mesh.vertices)[fm.landmarks[mask]], params["m_image"], 450)
    np.testing.assert_allclose(points[mask], expected, atol=1e-2)
    saved = json.loads((folder / "image00050.face0.landmarks.json").read_text())
    assert [p is None for p in saved["landmarks"]] == list(~mask)
    assert saved["image_size"] == [450, 450]
    index = json.loads((folder / "faces.json").read_text())
    assert index["face_count"] == 1 and index["faces_found_by"] == "landmarks image00050.mat beside the image"
    assert all((folder / name).is_file() for name in index["faces"][0]["files"])


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
    assert "2 face(s) reconstructed from 2, 0 with no face found, 3 failed" in captured.out
    for name in ("gray", "image00050"):
        assert (out / name / f"{name}.face0.obj").is_file() and (out / name / "overlay.png").is_file()
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
    saved = json.loads((out / "image00050" / "image00050.face0.landmarks.json").read_text())
    assert saved["crop_window"]["side"] == round(1.68 * 210) and saved["crop_rule"] == f"landmarks {pts}"
    assert main(["reconstruct", image, "--ckpt", str(untrained_checkpoint), "--out", str(tmp_path / "o2"),
                 "--quiet", "--box", "100,100,300,320"]) == 0
    saved = json.loads((tmp_path / "o2" / "image00050" / "image00050.face0.landmarks.json").read_text())
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


@pytest.fixture
def group_dir(shared_data, tmp_path):
    """A synthetic group photo (two real faces pasted on grey, no label beside it) and a picture
    of no face."""
    from test_detect import two_faces_photo

    folder = tmp_path / "group"
    folder.mkdir()
    photo, truths = two_faces_photo(shared_data)
    Image.fromarray(photo).save(folder / "pair.png")
    Image.fromarray(np.full((200, 300, 3), 170, np.uint8)).save(folder / "wall.png")
    return folder, truths


def test_every_face_and_the_photo_without_one(group_dir, tmp_path, untrained_checkpoint, capsys):
    folder, truths = group_dir
    out, sheet = tmp_path / "out", tmp_path / "sheet.png"
    code = main(["reconstruct", str(folder), "--ckpt", str(untrained_checkpoint), "--out", str(out), "--quiet",
                 "--sheet", str(sheet)])
    captured = capsys.readouterr()
    assert code == 0, captured.err  # a photo with no face is reported, not a failure
    assert "wall.png: no face found" in captured.out
    assert "2 photo(s): 2 face(s) reconstructed from 1, 1 with no face found, 0 failed" in captured.out
    index = json.loads((out / "pair" / "faces.json").read_text())
    assert index["face_count"] == 2 and index["faces_found_by"] == "face detector"
    fm = load_face_model("surrey")
    for k, (face, truth) in enumerate(zip(index["faces"], truths)):
        assert face["face"] == k and face["source"] in ("frontal", "profile-left", "profile-right")
        assert np.isfinite(face["score"]) and len(face["landmark_box"]) == 4 and len(face["detector_box"]) == 4
        x0, y0, x1, y1 = face["landmark_box"]  # face k is the pasted face k (largest first)
        assert x0 < (truth[0] + truth[2]) / 2 < x1 and y0 < (truth[1] + truth[3]) / 2 < y1
        mesh = trimesh.load(out / "pair" / f"pair.face{k}.obj", process=False, force="mesh")
        assert mesh.vertices.shape == (fm.num_vertices, 3)
        points = np.load(out / "pair" / f"pair.face{k}.landmarks.npy")[fm.landmark_mask]
        top, left, side = (face["crop_window"][key] for key in ("top", "left", "side"))
        # each face's landmarks come back into its own window of the photo, not the other face's
        assert np.median(points[:, 0]) == pytest.approx(left + side / 2, abs=side / 2)
    assert Image.open(out / "pair" / "overlay.png").size == (560, 300)
    empty = json.loads((out / "wall" / "faces.json").read_text())
    assert empty["face_count"] == 0 and empty["faces"] == [] and not (out / "wall" / "overlay.png").exists()
    # the contact sheet: a valid PNG with one row (photo crop | overlay | shape | texture) per face
    with Image.open(sheet) as picture:
        picture.verify()
    with Image.open(sheet) as picture:
        assert picture.format == "PNG" and picture.mode == "RGB" and picture.height == 2 * ROW_HEIGHT
        assert picture.width > 3 * ROW_HEIGHT
        rows = np.asarray(picture).reshape(2, ROW_HEIGHT, picture.width, 3)
    assert not np.array_equal(rows[0], rows[1])  # two different faces, not one row twice


def test_max_faces_no_detect_and_explicit_boxes_first(group_dir, tmp_path, untrained_checkpoint, capsys):
    folder, truths = group_dir
    photo = str(folder / "pair.png")
    ckpt = str(untrained_checkpoint)
    assert main(["reconstruct", photo, "--ckpt", ckpt, "--out", str(tmp_path / "one"), "--quiet",
                 "--max-faces", "1"]) == 0
    index = json.loads((tmp_path / "one" / "pair" / "faces.json").read_text())
    assert index["face_count"] == 1 and not (tmp_path / "one" / "pair" / "pair.face1.obj").exists()
    x0, y0, x1, y1 = index["faces"][0]["landmark_box"]
    assert x0 < (truths[0][0] + truths[0][2]) / 2 < x1  # the larger of the two faces
    # --no-detect: the centred square, as before detection existed
    assert main(["reconstruct", photo, "--ckpt", ckpt, "--out", str(tmp_path / "centre"), "--quiet",
                 "--no-detect"]) == 0
    index = json.loads((tmp_path / "centre" / "pair" / "faces.json").read_text())
    assert index["face_count"] == 1 and index["faces"][0]["crop_window"] == {"top": 0, "left": 130, "side": 300}
    assert "detection off" in index["faces_found_by"]
    # an explicit box wins over detection: one face, from the box
    assert main(["reconstruct", photo, "--ckpt", ckpt, "--out", str(tmp_path / "box"), "--quiet",
                 "--box", "350,80,500,230"]) == 0
    index = json.loads((tmp_path / "box" / "pair" / "faces.json").read_text())
    assert index["face_count"] == 1 and index["faces_found_by"] == "box 350,80,500,230"
    assert "score" not in index["faces"][0]
    capsys.readouterr()
    assert main(["reconstruct", photo, "--ckpt", ckpt, "--out", str(tmp_path / "x"), "--sheet",
                 str(tmp_path / "sheet.html")]) == 2
    assert "give a .png path" in capsys.readouterr().err and not (tmp_path / "x").exists()
    for bad in ("0", "-2", "two"):
        with pytest.raises(SystemExit):
            main(["reconstruct", photo, "--ckpt", ckpt, "--out", str(tmp_path / "x"), "--max-faces", bad])
    with pytest.raises(SystemExit):  # detection off and an explicit box contradict each other
        main(["reconstruct", photo, "--ckpt", ckpt, "--out", str(tmp_path / "x"), "--no-detect", "--box", "1,2,3,4"])
