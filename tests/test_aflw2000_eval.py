"""`nl3dmm eval aflw2000`: the crop -> predict -> back-map chain is exact, checkpoints load with
clear errors, and the command runs end to end on real AFLW2000-3D samples."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from nl3dmm.tasks.aflw2000 import evaluate_folder
from nl3dmm.face.camera import project_m
from nl3dmm.cli import main
from nl3dmm.data.samples import find_samples, read_sample
from nl3dmm.tasks.inference_crop import (crop_to_window, to_source_m, to_source_points, window_centre_square,
                                   window_from_box, window_from_landmarks)
from nl3dmm.model.inference import load_trained, predict
from nl3dmm.model.checkpoint import CheckpointError, read_checkpoint


def _aflw_dir(shared_data):
    return shared_data / "prnet" / "aflw2000"


def test_back_mapping_is_exact_nme_zero_for_a_perfect_model(shared_data):
    """A 'model' that answers each crop with the GT landmarks as they sit in that crop scores 0:
    so the crop, the batching order and the way back to the photo are all exact."""
    data = _aflw_dir(shared_data)
    gt_in_crop = {}
    for stem in find_samples(data):
        sample = read_sample(stem)
        top, left, side = window_from_landmarks(sample.landmarks)
        crop = crop_to_window(sample.image, (top, left, side))
        gt_in_crop[crop.tobytes()] = (sample.landmarks - [left, top]) * 224 / side

    def oracle(crops):
        return {"landmarks": np.stack([gt_in_crop[c.tobytes()] for c in crops])}

    result = evaluate_folder(data, oracle, batch=5, progress=False)  # 16 faces: batches of 5, 5, 5, 1
    assert len(result.names) == 16
    np.testing.assert_allclose(result.report.per_face, 0.0, atol=1e-12)
    assert sum(result.report.counts) == 16


def test_an_offset_prediction_gives_the_independent_nme(shared_data):
    """Shift every crop-frame prediction by 2 crop pixels in x: in the photo that is 2 * side / 224
    pixels, so the NME is that over sqrt(w h) of the GT box, computed here independently."""
    data = _aflw_dir(shared_data)
    stems = find_samples(data)[:4]
    expected, answers = [], {}
    for stem in stems:
        sample = read_sample(stem)
        top, left, side = window_from_landmarks(sample.landmarks)
        crop = crop_to_window(sample.image, (top, left, side))
        answers[crop.tobytes()] = (sample.landmarks - [left, top]) * 224 / side + [2.0, 0.0]
        w, h = sample.landmarks.max(0) - sample.landmarks.min(0)
        expected.append(2.0 * side / 224 / math.sqrt(w * h))
    result = evaluate_folder(data, lambda crops: {"landmarks": np.stack([answers[c.tobytes()] for c in crops])},
                             limit=4, progress=False)
    np.testing.assert_allclose(result.report.per_face, expected, rtol=1e-9)


def test_to_source_m_projects_like_the_mapped_crop_points():
    rng = np.random.default_rng(1)
    vertices = rng.normal(size=(30, 3)) * 50
    m_crop = np.array([1.2, 0.1, -0.1, 1.1, 0.05, 0.02, 112.0, 110.0])
    window = (-13, 27, 301)  # partly outside the photo: the mapping must not care
    in_crop = project_m(vertices, m_crop, 224)
    in_photo = project_m(vertices, to_source_m(m_crop, window, 450), 450)
    np.testing.assert_allclose(in_photo, to_source_points(in_crop, window), atol=1e-9)


def test_windows():
    assert window_centre_square(100, 300) == (0, 100, 100)
    top, left, side = window_from_box((10, 20, 110, 120))
    assert side == 168 and (left, top) == (-24, -14)
    with pytest.raises(ValueError, match="x1 > x0"):
        window_from_box((10, 20, 5, 30))


def test_load_trained_errors(tmp_path, untrained_checkpoint):
    with pytest.raises(FileNotFoundError, match="missing"):
        load_trained(tmp_path / "nope.pt")
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="unreadable"):
        load_trained(garbage)
    state = read_checkpoint(untrained_checkpoint)
    state["config"] = dict(state["config"], model="resnet50")
    wrong = tmp_path / "wrong.pt"
    torch.save(state, wrong)
    with pytest.raises(ValueError, match="resnet50"):
        load_trained(wrong)
    state["config"] = dict(state["config"], model="cvpr18", face_model="paper")  # surrey weights, paper mesh
    torch.save(state, wrong)
    with pytest.raises(CheckpointError, match="do not fit"):
        load_trained(wrong)


def test_predict_landmarks_are_the_projected_landmark_vertices(untrained_checkpoint):
    model, face_model, config = load_trained(untrained_checkpoint)
    assert config["face_model"] == "surrey" and not model.training
    crops = np.random.default_rng(0).integers(0, 256, size=(2, 224, 224, 3), dtype=np.uint8)
    out = predict(model, crops)
    mask = face_model.landmark_mask
    assert out["landmarks"].shape == (2, 68, 2) and out["landmark_mask"].sum() == mask.sum() < 68
    assert np.isnan(out["landmarks"][:, ~mask]).all() and np.isfinite(out["landmarks"][:, mask]).all()
    expected = project_m(out["vertices"][1][face_model.landmarks[mask]].astype(np.float64),
                         out["m"][1].astype(np.float64), 224)
    np.testing.assert_allclose(out["landmarks"][1, mask], expected, rtol=1e-4, atol=1e-2)
    # eval mode: a face's prediction does not depend on its batch neighbours
    alone = predict(model, crops[1:])
    np.testing.assert_allclose(alone["m"][0], out["m"][1], rtol=1e-4, atol=1e-5)


def test_eval_command_end_to_end(shared_data, tmp_path, untrained_checkpoint, capsys):
    data = tmp_path / "three"
    data.mkdir()
    # one face from each yaw bin, so the JSON has all three
    yaws = {}
    for stem in find_samples(_aflw_dir(shared_data)):
        yaw = abs(math.degrees(read_sample(stem).pose_para[1]))
        yaws[stem.name] = yaw
    by_bin = {}
    for name, yaw in sorted(yaws.items()):
        by_bin.setdefault(0 if yaw <= 30 else 1 if yaw <= 60 else 2, name)
    assert len(by_bin) == 3, f"the 16 samples should cover all three yaw bins: {yaws}"
    picks = set(by_bin.values())
    for name in picks:
        for suffix in (".jpg", ".mat"):
            (data / f"{name}{suffix}").symlink_to(_aflw_dir(shared_data) / f"{name}{suffix}")
    out = tmp_path / "results.json"
    code = main(["eval", "aflw2000", "--data", str(data), "--ckpt", str(untrained_checkpoint), "--out", str(out),
                 "--batch", "2", "--quiet"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "| (60, 90] | 1 |" in printed and "mean of bins" in printed
    summary = json.loads(out.read_text())
    assert summary["counts"] == {"[0, 30]": 1, "(30, 60]": 1, "(60, 90]": 1}
    assert all(v is not None and v > 0 for v in summary["nme_per_bin"].values())
    assert summary["landmarks_used"] == 50 and len(summary["per_face"]) == 3


def test_eval_command_reports_a_missing_checkpoint(shared_data, tmp_path, capsys):
    code = main(["eval", "aflw2000", "--data", str(_aflw_dir(shared_data)), "--ckpt", str(tmp_path / "x.pt"),
                 "--quiet"])
    assert code == 2 and "checkpoint file missing" in capsys.readouterr().err


def test_eval_only_named_images(shared_data, untrained_checkpoint, capsys):
    args = ["eval", "aflw2000", "--data", str(_aflw_dir(shared_data)), "--ckpt", str(untrained_checkpoint),
            "--quiet", "--json"]
    assert main(args + ["--only", "image04331,image00050"]) == 0
    printed = capsys.readouterr().out
    summary = json.loads(printed[printed.index("\n{") + 1:])  # the JSON follows the table
    assert [face["image"] for face in summary["per_face"]] == ["image00050", "image04331"]
    assert main(args + ["--only", "image00050,image99999"]) == 2
    assert "image99999" in capsys.readouterr().err
