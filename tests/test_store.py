"""The preprocessing command and the training store: a small 300W-LP-style tree made of real
samples plus broken files -> manifest counts, named skips, exact crop geometry (m corrected),
pseudo textures, resuming after simulated kills, atomic shard writes, parallel = serial."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from nl3dmm.face.camera import IBUG68_FLIP, project_m
from nl3dmm.cli import main
from nl3dmm.data import read_sample
from nl3dmm.data.crop import CROP_SIZE
from nl3dmm.data.landmark_targets import landmark_target
from nl3dmm.data.loader import TrainingStore
from nl3dmm.data.preprocess import PreprocessSettings, preprocess
from nl3dmm.data.store import FIELDS, StoreError, open_shard, shard_problem, write_shard
from nl3dmm.face.facemodel import load_paper_mesh

SETTINGS = PreprocessSettings(shard_size=2, flip=True)
GOOD = {"AFW/image00050": "prnet/aflw2000/image00050", "AFW/image00251": "prnet/aflw2000/image00251",
        "HELEN/image02420": "prnet/aflw2000/image02420", "IBUG/IBUG_image_008_1_0": "face3d/IBUG_image_008_1_0"}


def make_tree(shared_data: Path, root: Path) -> Path:
    """300W-LP-like folders: 4 real samples, a corrupt label, a text file named .jpg, an image
    without a label, and a `landmarks/` folder of labels without images (as in 300W-LP)."""
    for target, origin in GOOD.items():
        (root / target).parent.mkdir(parents=True, exist_ok=True)
        for suffix in (".jpg", ".mat"):
            shutil.copy(shared_data / f"{origin}{suffix}", root / f"{target}{suffix}")
    shutil.copy(shared_data / "prnet/aflw2000/image00081.jpg", root / "HELEN/bad_label.jpg")
    (root / "HELEN/bad_label.mat").write_bytes((shared_data / "prnet/aflw2000/image00081.mat").read_bytes()[:300])
    (root / "HELEN/not_an_image.jpg").write_text("this is not a JPEG\n")
    shutil.copy(shared_data / "prnet/aflw2000/image00081.mat", root / "HELEN/not_an_image.mat")
    shutil.copy(shared_data / "prnet/aflw2000/image00475.jpg", root / "AFW/orphan.jpg")
    (root / "landmarks/AFW").mkdir(parents=True)
    shutil.copy(shared_data / "prnet/aflw2000/image00050.mat", root / "landmarks/AFW/image00050_pts.mat")
    return root


@pytest.fixture(scope="module")
def built(shared_data, tmp_path_factory):
    """(source tree, reference store built serially in one go)."""
    base = tmp_path_factory.mktemp("store")
    src = make_tree(shared_data, base / "src")
    out = base / "reference"
    preprocess(src, out, SETTINGS, workers=1, progress=False, log=lambda _: None)
    return src, out


@pytest.fixture(scope="module")
def mesh():
    return load_paper_mesh()


def assert_same_store(a: Path, b: Path) -> None:
    """Every shard file byte-identical, and the same manifest."""
    assert json.loads((a / "manifest.json").read_text()) == json.loads((b / "manifest.json").read_text())
    names = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert names == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    for name in names:
        assert (a / name).read_bytes() == (b / name).read_bytes(), f"{name} differs"


def test_manifest_counts_and_named_skips(built):
    src, out = built
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["complete"] is True
    assert manifest["counts"] == {"samples": 8, "sources": 6, "skipped_sources": 2, "flipped": 4, "shards": 3,
                                  "unpaired_images": 1,
                                  # the 300W-LP photo (plain + flipped) has mean-shape targets, the rest pt3d_68
                                  "landmark_conventions": {"mean": 2, "pt3d_68": 6}}
    assert manifest["sources"]["unpaired_examples"] == ["AFW/orphan.jpg"]
    assert [s["count"] for s in manifest["shards"]] == [4, 2, 2]  # shard 1 = bad_label + image02420
    skipped = {e["sample"]: e["error"] for e in manifest["skipped"]}
    assert set(skipped) == {"HELEN/bad_label", "HELEN/not_an_image"}
    assert "bad_label.mat" in skipped["HELEN/bad_label"] and "LabelError" in skipped["HELEN/bad_label"]
    assert "not_an_image.jpg" in skipped["HELEN/not_an_image"]
    assert set(manifest["fields"]) == set(FIELDS) and manifest["fields"]["shape"]["optional"]
    assert "mean shape" in manifest["notes"]["shapes"]
    info = json.loads((out / "shard-00001" / "shard.json").read_text())
    assert info["sources"] == ["HELEN/bad_label", "HELEN/image02420"]
    assert info["records"] == ["HELEN/image02420"] * 2 and len(info["skipped"]) == 1
    assert not list(out.glob(".tmp-*"))


def test_shards_are_memory_mapped_with_the_documented_fields(built):
    _, out = built
    store = TrainingStore(out)
    assert len(store) == 8 and list(store.counts) == [4, 2, 2]
    for shard in store.shards:
        for name, array in shard.items():
            field = FIELDS[name]
            assert isinstance(array, np.memmap), name
            assert array.dtype == np.dtype(field.dtype) and array.shape[1:] == field.shape, name
        assert "shape" not in shard  # no dense shapes without the BFM bases
        assert list(shard["flipped"]) == [False, True] * (len(shard["flipped"]) // 2)


def test_crops_carry_m_and_landmarks_exactly(built, mesh):
    """For every stored sample: the stored landmarks are the source's landmark targets (pt3d_68, or
    for 300W-LP the 3-D-consistent stand-in of landmark_targets.py) moved by the crop window (and
    mirrored for flips); the mean face projected with the stored m lands where the
    source m put it, moved the same way (so m's correction is exact), and within a few px of
    the landmarks; the stored pixels are the source photo resampled through the same window."""
    src, out = built
    kp = mesh.mean_shape[mesh.keypoints].astype(np.float64)
    for folder in sorted(out.glob("shard-*")):
        info = json.loads((folder / "shard.json").read_text())
        arrays = open_shard(folder)
        for i, (name, (top, left, side)) in enumerate(zip(info["records"], info["boxes"])):
            sample = read_sample(src / name)
            k = CROP_SIZE / side
            expect_points = (landmark_target(sample, mesh)[0] - [left, top]) * k
            expect_face = (project_m(kp, sample.m, sample.height) - [left, top]) * k
            m = arrays["m"][i].astype(np.float64)
            if arrays["flipped"][i]:
                # The flipped m sees the mirrored face: X -> -X, vertex for vertex (camera.flip_m).
                expect_points = np.c_[CROP_SIZE - expect_points[:, 0], expect_points[:, 1]][IBUG68_FLIP]
                expect_face = np.c_[CROP_SIZE - expect_face[:, 0], expect_face[:, 1]]
                face = project_m(kp * [-1, 1, 1], m, CROP_SIZE)
            else:
                face = project_m(kp, m, CROP_SIZE)
            np.testing.assert_allclose(arrays["landmarks"][i], expect_points, atol=1e-3, err_msg=name)
            np.testing.assert_allclose(face, expect_face, atol=0.01, err_msg=name)
            inner = np.linalg.norm(project_m(kp, m, CROP_SIZE) - arrays["landmarks"][i], axis=1)[17:].mean()
            assert inner < 6.0, f"{name}: mean face {inner:.1f} px from the landmarks"
            # Pixels: sample the photo at the window's pixel centres (bilinear) and compare.
            image = arrays["image"][i][:, ::-1] if arrays["flipped"][i] else arrays["image"][i]
            centres = (np.arange(CROP_SIZE) + 0.5) / k - 0.5
            rows, cols = top + centres, left + centres
            r0, c0 = np.floor(rows).astype(int), np.floor(cols).astype(int)
            fr, fc = (rows - r0)[:, None, None], (cols - c0)[None, :, None]
            photo = np.pad(sample.image.astype(np.float64), ((side, side + 1), (side, side + 1), (0, 0)))
            r0, c0 = r0 + side, c0 + side
            p = lambda dr, dc: photo[(r0 + dr)[:, None], (c0 + dc)[None, :]]
            resampled = (1 - fr) * ((1 - fc) * p(0, 0) + fc * p(0, 1)) + fr * ((1 - fc) * p(1, 0) + fc * p(1, 1))
            error = np.abs(resampled - image).mean()
            assert error < 6.0, f"{name}: crop pixels differ from the photo by {error:.1f} grey levels"


def test_flipped_samples_mirror_their_originals(built):
    _, out = built
    arrays = open_shard(out / "shard-00000")
    for i in (0, 2):
        assert np.array_equal(arrays["image"][i + 1], arrays["image"][i][:, ::-1])
        assert np.array_equal(arrays["pose_para"][i + 1], arrays["pose_para"][i])
        mirrored = np.c_[CROP_SIZE - arrays["landmarks"][i][:, 0], arrays["landmarks"][i][:, 1]][IBUG68_FLIP]
        np.testing.assert_allclose(arrays["landmarks"][i + 1], mirrored, atol=1e-4)


def test_pseudo_textures_are_filled_where_visible(built):
    _, out = built
    store = TrainingStore(out)
    for i in range(len(store)):
        sample = store.sample(i)
        texture, visible = sample["texture"], sample["texture_mask"]
        assert 0.3 < visible.mean() < 0.95, f"sample {i}: visible fraction {visible.mean():.2f}"
        assert (texture[~visible] == 0).all()
        assert texture[visible].mean() > 20  # photo colours, not black


def _rerun(src: Path, out: Path, settings: PreprocessSettings = SETTINGS, workers: int = 1) -> list[str]:
    messages: list[str] = []
    preprocess(src, out, settings, workers=workers, progress=False, log=messages.append)
    return messages


def _interrupted_copy(reference: Path, target: Path, lost_shards: list[int]) -> None:
    """What a run killed before `lost_shards` were finished leaves: those folders absent from
    disk and from the manifest, which is marked incomplete."""
    shutil.copytree(reference, target)
    manifest = json.loads((target / "manifest.json").read_text())
    for index in lost_shards:
        shutil.rmtree(target / f"shard-{index:05d}")
    manifest["shards"] = [s for s in manifest["shards"] if s["index"] not in lost_shards]
    manifest["skipped"] = [e for e in manifest["skipped"] if e["shard"] not in lost_shards]
    manifest["complete"], manifest["counts"] = False, {}
    (target / "manifest.json").write_text(json.dumps(manifest))


def test_resume_after_a_kill_equals_a_clean_run(built, tmp_path):
    src, reference = built
    out = tmp_path / "killed"
    _interrupted_copy(reference, out, lost_shards=[2])
    with pytest.raises(StoreError, match="incomplete"):
        TrainingStore(out)
    before = {p: p.stat().st_mtime_ns for p in (out / "shard-00000").iterdir()}
    messages = _rerun(src, out)
    assert any("resuming: 2 of 3 shards" in m for m in messages)
    assert before == {p: p.stat().st_mtime_ns for p in (out / "shard-00000").iterdir()}  # kept, not rewritten
    assert_same_store(reference, out)


def test_resume_removes_half_written_temporaries(built, tmp_path):
    src, reference = built
    out = tmp_path / "killed"
    _interrupted_copy(reference, out, lost_shards=[1])
    # A worker killed while writing shard 1: a temp folder with a truncated array in it.
    temp = out / ".tmp-shard-00001-4242-deadbeef"
    temp.mkdir()
    (temp / "image.npy").write_bytes((reference / "shard-00001" / "image.npy").read_bytes()[:5000])
    (out / ".tmp-manifest.json.0badc0de").write_text("{")
    assert len(TrainingStore(out, require_complete=False)) == 6  # the temp folder is never read
    messages = _rerun(src, out)
    assert any(".tmp-shard-00001" in m for m in messages)
    assert_same_store(reference, out)


def test_damaged_or_foreign_shards_are_rebuilt(built, tmp_path):
    src, reference = built
    out = tmp_path / "damaged"
    shutil.copytree(reference, out)
    texture = out / "shard-00000" / "texture.npy"
    texture.write_bytes(texture.read_bytes()[:-1000])  # e.g. a disk-full copy
    assert "truncated" in shard_problem(out / "shard-00000")
    info_path = out / "shard-00002" / "shard.json"
    info = json.loads(info_path.read_text())
    info["sources"] = ["somewhere/else"]
    info_path.write_text(json.dumps(info))
    messages = _rerun(src, out)
    assert sum("rebuilding" in m for m in messages) == 2
    assert_same_store(reference, out)


def test_shard_writes_are_atomic(tmp_path, monkeypatch):
    arrays = {name: np.zeros((2,) + tuple(abs(s) for s in f.shape), f.dtype)
              for name, f in FIELDS.items() if not f.optional}
    write_shard(tmp_path, 0, arrays, {"note": "first"})
    calls = []
    real_save = np.save

    def failing_save(path, array, **kwargs):
        calls.append(path)
        if len(calls) == 3:
            raise OSError("No space left on device (simulated)")
        real_save(path, array, **kwargs)

    monkeypatch.setattr(np, "save", failing_save)
    with pytest.raises(OSError, match="simulated"):
        write_shard(tmp_path, 1, arrays, {})
    with pytest.raises(OSError, match="simulated"):  # replacing an existing shard fails the same way
        calls.clear()
        write_shard(tmp_path, 0, {**arrays, "m": np.ones((2, 8), np.float32)}, {"note": "second"})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shard-00000"]  # no half shard, no temp
    assert json.loads((tmp_path / "shard-00000" / "shard.json").read_text())["note"] == "first"
    assert (open_shard(tmp_path / "shard-00000")["m"] == 0).all()
    with pytest.raises(StoreError, match="field 'm' has shape"):
        write_shard(tmp_path, 2, {**arrays, "m": np.zeros((2, 7), np.float32)}, {})


def test_other_settings_or_foreign_folders_are_refused(built, tmp_path):
    src, reference = built
    out = tmp_path / "store"
    shutil.copytree(reference, out)
    with pytest.raises(StoreError, match=r"other settings or sources \(differs in \['digest', 'flip'\]\)"):
        _rerun(src, out, PreprocessSettings(shard_size=2, flip=False))
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "holiday.jpg").write_text("x")
    with pytest.raises(StoreError, match="not empty and has no manifest.json"):
        _rerun(src, foreign)


def test_parallel_command_equals_serial(built, tmp_path, capsys):
    src, reference = built
    out = tmp_path / "parallel"
    assert main(["preprocess", str(src), str(out), "--workers", "2", "--shard-size", "2", "--flip", "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "8 samples in 3 shards from 6 sources (2 skipped, 1 images without a label)" in printed
    assert "skipped HELEN/bad_label" in printed and "not_an_image.jpg" in printed
    assert_same_store(reference, out)


def test_a_basis_unwraps_with_the_dense_shapes(built, tmp_path, mesh, seed):
    """With a basis whose parameters do nothing, unflipped crops get exactly the mean-shape
    textures and flipped ones nearly (their target is the mirrored mean, resampled); a basis
    that widens faces by 8% changes the textures; a bad basis fails before any work."""
    from nl3dmm.face.bfm import BFMBasis

    src, reference = built
    D = mesh.num_vertices * 3
    inert = BFMBasis(mesh.mean_shape.reshape(-1), np.zeros((D, 199), np.float32), np.zeros((D, 29), np.float32))
    settings = PreprocessSettings(shard_size=2, flip=True, basis=str(inert.save(tmp_path / "inert.npz")))
    _rerun(src, tmp_path / "inert", settings)
    plain, same = TrainingStore(reference), TrainingStore(tmp_path / "inert")
    flipped = plain.gather("flipped", np.arange(len(plain)))
    every = np.arange(len(plain))
    a, b = plain.gather("texture", every).astype(int), same.gather("texture", every).astype(int)
    assert np.array_equal(a[~flipped], b[~flipped])
    seen_a = plain.gather("texture_mask", every)[flipped]
    seen_b = same.gather("texture_mask", every)[flipped]
    both = seen_a & seen_b
    assert both.sum() > 0.97 * max(seen_a.sum(), seen_b.sum())
    assert np.abs(a[flipped] - b[flipped])[both].mean() < 4.0  # measured 2.6 (the mean is 0.6 mm asymmetric)
    assert "dense shape" in json.loads((tmp_path / "inert" / "manifest.json").read_text())["notes"]["shapes"]

    widen = np.zeros((D, 199), np.float32)
    widen[0::3, 0] = mesh.mean_shape[:, 0] * 0.08 / 1e5  # Shape_Para[0] (about 1e5) scales x
    wide = BFMBasis(mesh.mean_shape.reshape(-1), widen, np.zeros((D, 29), np.float32))
    _rerun(src, tmp_path / "wide", PreprocessSettings(shard_size=2, flip=True,
                                                      basis=str(wide.save(tmp_path / "wide.npz"))))
    c = TrainingStore(tmp_path / "wide").gather("texture", every).astype(int)
    assert np.abs(a - c).mean() > 1.0

    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    assert main(["preprocess", str(src), str(tmp_path / "never"), "--basis", str(tmp_path / "bad.npz"),
                 "--quiet"]) == 2
    assert not (tmp_path / "never").exists()
