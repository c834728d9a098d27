"""Face profiling (`nl3dmm profile`): views of real crops of the bundled store at new poses.

Stated bounds:
* labels: the stored landmarks equal the landmark vertices projected through the stored m
  and through the stored Pose_Para to 0.01 px; the mesh rendered through the stored m shows,
  at each visible landmark's pixel, a surface point within 1 px of the landmark vertex in the
  image plane, and within 3 px in 3-D where the surface faces the camera within 60 degrees;
* a view with the source's own angles and no jitter has the source's m (float32 rounding)
  and reproduces the crop: mean L1 over face pixels drawn from seen texels <= 0.04 in [0, 1]
  (test_unwrap.py's bound for unwrap + render: two bilinear resamplings), and the background
  (no warp) within 1/255 on average.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.io as sio
import torch
from PIL import Image

import nl3dmm
from nl3dmm.cli import main
from nl3dmm.data import default_store, read_sample
from nl3dmm.data.loader import TrainingStore
from nl3dmm.data.profile import ProfileSettings, profile
from nl3dmm.data.profile_views import (FaceProfiler, ViewPose, camera_pose, mirror_texels, rotation_angles,
                                       sample_poses, source_pose)
from nl3dmm.data.store import StoreError, new_manifest, shard_name, shard_problem, write_manifest, write_shard
from nl3dmm.face.camera import (image_to_clip, pose_para_to_m, pose_rotation, project_m, project_m_with_depth,
                                project_pose_para)
from nl3dmm.training.config import make_config
from nl3dmm.training.loop import open_training_data, train


@pytest.fixture(scope="module")
def store():
    return TrainingStore(default_store())


@pytest.fixture(scope="module")
def profiler():
    return FaceProfiler()


def _turned_sample(store, rng):
    """A random source sample whose face is turned > 20 degrees (so a view can hide its far side)."""
    turned = [i for i in range(len(store)) if abs(source_pose(store.sample(i)["m"]).yaw) > np.deg2rad(20)]
    return store.sample(int(rng.choice(turned)))


def test_rotation_angles_invert_pose_rotation(seed):
    rng = np.random.default_rng(seed)
    for _ in range(100):
        angles = rng.uniform([-np.pi, -np.pi / 2 + 1e-3, -np.pi], [np.pi, np.pi / 2 - 1e-3, np.pi])
        assert np.allclose(rotation_angles(pose_rotation(*angles)), angles, atol=1e-9)


def test_view_labels_land_on_the_rendered_landmark_vertices(store, profiler, seed):
    rng = np.random.default_rng(seed)
    sample = store.sample(int(rng.integers(len(store))))
    poses = sample_poses(sample["m"], 3, rng, 90.0, 10.0, 10.0, 0.1, 8.0)
    views = profiler(sample["image"], sample["m"], sample["texture"], sample["texture_mask"], poses)
    points = profiler.vertices[profiler.landmark_ids]
    m32 = views.m.astype(np.float32)
    for k, pose in enumerate(poses):
        landmarks = views.landmarks[k].astype(np.float32)
        assert np.abs(project_m(points, m32[k].astype(np.float64), 224) - landmarks).max() < 0.01
        assert np.abs(project_pose_para(points, views.pose_para[k], 224)[:, :2] - landmarks).max() < 0.01
        assert np.allclose(pose_para_to_m(views.pose_para[k]), views.m[k], rtol=1e-9, atol=1e-9)
        assert abs(views.pose_para[k][1] - pose.yaw) < 1e-12
    # Render the mesh through each stored m: at a visible landmark's pixel the surface is its vertex.
    vertices = torch.from_numpy(profiler.vertices.astype(np.float32))[None].expand(len(poses), -1, -1)
    clip = image_to_clip(project_m_with_depth(vertices, torch.from_numpy(m32), 224), 224, 224)
    rast = nl3dmm.rasterize(clip.contiguous(), profiler.triangles, (224, 224), cull_backfaces=True)
    model_points = nl3dmm.interpolate(torch.from_numpy(profiler.vertices.astype(np.float32)), rast, profiler.triangles)
    scale = np.linalg.norm(views.m[:, [0, 2, 4]], axis=1)   # pixels per model unit
    visible = views.landmark_visible
    assert visible.sum() >= 0.4 * visible.size, f"only {visible.sum()} of {visible.size} landmarks visible"
    for k in range(len(poses)):
        col, row = np.floor(views.landmarks[k]).astype(int).T
        offset = model_points[k, row, col].numpy() - points                      # (68, 3) model units
        in_plane = np.abs(project_m(offset, m32[k].astype(np.float64), 0) - project_m(0 * offset, m32[k], 0))
        along = np.linalg.norm(offset, axis=1) * scale[k]
        # Where the surface faces the camera within 60 degrees, a pixel spans little depth. Both
        # the landmark's vertex normal and the triangle drawn at its pixel must face it: around
        # the nostrils a drawn triangle can be far steeper than the averaged vertex normal says
        # (seed 1323267967: 3.35 px of depth within 0.5 px in the image plane).
        view_axis = camera_pose(views.m[k])[1][2]
        ids = rast[k, row, col, 3].long().numpy()                                  # 0: empty
        drawn = profiler.vertices[profiler.triangles.numpy()[ids - 1]]
        normal = np.cross(drawn[:, 1] - drawn[:, 0], drawn[:, 2] - drawn[:, 0])
        normal /= np.maximum(np.linalg.norm(normal, axis=1, keepdims=True), 1e-30)
        facing = (visible[k] & (profiler.normals[profiler.landmark_ids] @ view_axis > 0.5)
                  & (np.abs(normal @ view_axis) > 0.5) & (ids > 0))
        print(f"view {k}: in-plane max {in_plane[visible[k]].max():.2f} px, {facing.sum()} facing, 3-D max "
              f"{along[facing].max(initial=0):.2f} px")
        assert (in_plane[visible[k]] <= 1.0).all(), "a landmark is more than 1 px from its rendered vertex"
        assert facing.sum() >= 5, "too few landmarks face the camera for the next check to mean anything"
        assert (along[facing] <= 3.0).all(), "the surface at a landmark's pixel is another part of the face"


def test_identity_view_reproduces_the_source_crop(store, profiler, seed):
    rng = np.random.default_rng(seed)
    index = int(rng.integers(len(store)))
    sample = store.sample(index)
    pose = source_pose(sample["m"])
    views = profiler(sample["image"], sample["m"], sample["texture"], sample["texture_mask"], [pose])
    assert np.allclose(views.m[0], sample["m"], rtol=0, atol=1e-4 * np.abs(sample["m"]).max())
    assert np.allclose(views.windows[0], [0, 0, 224], atol=1e-3)
    m = torch.from_numpy(sample["m"].astype(np.float32))[None]
    vertices = torch.from_numpy(profiler.vertices.astype(np.float32))[None]
    rast = nl3dmm.rasterize(image_to_clip(project_m_with_depth(vertices, m, 224), 224, 224), profiler.triangles,
                            (224, 224), cull_backfaces=True)
    seen = profiler.seen_squarely(sample["m"], sample["texture_mask"].shape) & sample["texture_mask"]
    texel = nl3dmm.interpolate(profiler.uv, rast, profiler.triangles)
    drawn_from_seen = nl3dmm.sample_texture(torch.from_numpy(seen.astype(np.float32))[None, ..., None], texel)
    face = (rast[0, ..., 3] > 0).numpy()
    good = face & (drawn_from_seen[0, ..., 0] >= 0.999).numpy()
    error = np.abs(views.image[0].astype(float) - sample["image"]).mean(-1) / 255
    print(f"sample {index}: face L1 {error[good].mean():.4f} on {good.sum()} px, background L1 "
          f"{error[~face].mean() * 255:.3f}/255")
    assert good.sum() >= 0.8 * face.sum()
    assert error[good].mean() <= 0.04
    assert error[~face].mean() <= 1 / 255


def test_never_seen_texels_are_masked_or_mirrored_not_invented(store, profiler, seed):
    rng = np.random.default_rng(seed)
    sample = _turned_sample(store, rng)
    yaw = source_pose(sample["m"]).yaw
    pose = ViewPose(0.0, -0.5 * yaw, 0.0)          # turn past frontal: the far side shows
    seen = profiler.seen_squarely(sample["m"], sample["texture_mask"].shape) & sample["texture_mask"]
    views = profiler(sample["image"], sample["m"], sample["texture"], sample["texture_mask"], [pose])
    mask = views.texture_mask[0]
    assert mask.any() and not (mask & ~seen).any(), "a texel the photo never showed is a texture target"
    assert (views.texture[0][~mask] == 0).all()
    assert np.array_equal(views.texture[0][mask], sample["texture"][mask])
    assert views.filled[0] > 0.02, f"a turned-past-frontal view drew only {views.filled[0]:.3f} from unseen texels"
    mirrored = FaceProfiler(mirror=True)(sample["image"], sample["m"], sample["texture"], sample["texture_mask"],
                                         [pose])
    _, known = mirror_texels(sample["texture"], seen)
    extra = mirrored.texture_mask[0] & ~seen
    assert extra.any() and not (mirrored.texture_mask[0] & ~known).any()


def test_bad_input_is_named(store, profiler):
    sample = store.sample(0)
    with pytest.raises(ValueError, match="uint8"):
        profiler(sample["image"].astype(np.float32), sample["m"], sample["texture"], sample["texture_mask"],
                 [source_pose(sample["m"])])
    with pytest.raises(ValueError, match="finite camera"):
        source_pose(np.full(8, np.nan))
    with pytest.raises(ValueError, match="views"):
        ProfileSettings(views=0)
    with pytest.raises(ValueError, match="max_yaw"):
        ProfileSettings(max_yaw=120)


def _mini_store(root, store, indices) -> None:
    """A complete store holding the samples `indices` of `store` (with their record names)."""
    arrays = {name: np.stack([store.sample(i)[name] for i in indices]) for name in store.fields}
    names = store.sources()
    write_shard(root, 0, arrays, {"records": [names[i] for i in indices]})
    manifest = new_manifest({"test": True}, {"from": str(store.root)})
    manifest["shards"] = [{"index": 0, "name": shard_name(0), "count": len(indices)}]
    manifest["complete"] = True
    write_manifest(root, manifest)


@pytest.fixture(scope="module")
def profiled(tmp_path_factory, store):
    root = tmp_path_factory.mktemp("profile")
    rng = np.random.default_rng()
    names = store.sources()
    first = int(rng.integers(len(store)))
    other = [i for i in range(len(store)) if names[i] != names[first]]   # two different photos
    indices = sorted([first, int(rng.choice(other))])
    print(f"source samples {indices}")
    _mini_store(root / "src", store, indices)
    settings = ProfileSettings(views=1, shard_size=1, seed=int(rng.integers(1 << 30)))
    manifest = profile(root / "src", root / "out", settings, workers=1, progress=False)
    return root, settings, manifest


def test_store_layout_counts_and_resume(profiled):
    root, settings, manifest = profiled
    out = root / "out"
    assert manifest["complete"] and manifest["counts"]["samples"] == 2 * 2 and manifest["counts"]["views"] == 2
    assert "masked" in manifest["notes"]["unseen_regions"]
    assert all(shard_problem(out / s["name"]) is None for s in manifest["shards"])
    data = TrainingStore(out)
    assert "landmark_visible" in data.fields
    source_names = TrainingStore(root / "src").sources()
    assert sorted(set(data.sources())) == sorted(set(source_names))   # views keep their photo's name
    # Resuming: complete shards are kept, a broken one is rebuilt to the same bytes.
    kept = (out / "shard-00000" / "image.npy").stat().st_mtime_ns
    before = np.load(out / "shard-00001" / "image.npy")
    (out / "shard-00001" / "image.npy").write_bytes(b"broken")
    logs = []
    profile(root / "src", out, settings, workers=1, progress=False, log=logs.append)
    assert (out / "shard-00000" / "image.npy").stat().st_mtime_ns == kept
    assert any("rebuilding shard-00001" in line for line in logs)
    assert np.array_equal(np.load(out / "shard-00001" / "image.npy"), before)
    with pytest.raises(StoreError, match="other settings"):
        profile(root / "src", out, ProfileSettings(views=2, shard_size=1), workers=1, progress=False)


def test_every_view_passes_read_sample_validation(profiled, tmp_path):
    root, _, _ = profiled
    data = TrainingStore(root / "out")
    for i in range(len(data)):
        sample = data.sample(i)
        stem = tmp_path / f"view{i}"
        Image.fromarray(sample["image"]).save(stem.with_suffix(".png"))
        sio.savemat(stem.with_suffix(".mat"), {"Pose_Para": sample["pose_para"][None].astype(np.float64),
                                               "Shape_Para": sample["shape_para"][:, None].astype(np.float64),
                                               "Exp_Para": sample["exp_para"][:, None].astype(np.float64),
                                               "pt2d": (sample["landmarks"].T + 0.5).astype(np.float64)})
        read = read_sample(stem, image_suffix=".png")
        assert read.image.shape == (224, 224, 3) and np.isfinite(sample["m"]).all()
        assert np.allclose(read.landmarks, sample["landmarks"], atol=1e-4)
        assert sample["landmark_visible"].dtype == bool and sample["landmark_visible"].any()
        assert (sample["texture"][~sample["texture_mask"]] == 0).all()
        if i % 2:   # a view (not the source copy): its Pose_Para is its own camera
            assert np.allclose(read.m, sample["m"], rtol=1e-5, atol=1e-4 * np.abs(sample["m"]).max())
    described = json.loads((root / "out" / shard_name(0) / "shard.json").read_text())["views"]
    assert [d["view"] for d in described] == [0, 1] and 0 <= described[1]["filled"] <= 1


def test_profiled_store_loads_as_training_data_and_holds_views_out_with_their_photo(profiled):
    root, _, _ = profiled
    data = open_training_data(str(root / "out"))
    batch = data.get(np.arange(len(data)))
    assert len(data) == 4 and set(batch) >= {"image", "m", "landmarks", "texture", "texture_mask"}
    assert batch["image"].shape == (4, 224, 224, 3) and batch["m"].shape == (4, 8)
    photo = TrainingStore(root / "src").sources()[0].rsplit("/", 1)[-1]
    rest = open_training_data(str(root / "out"), exclude=photo)
    assert len(rest) == 2 and rest.excluded == 2, "a held-out photo must take its views along"


@pytest.mark.slow
def test_profiled_store_trains(profiled, tmp_path):
    root, _, _ = profiled
    summary = train(make_config("tiny", data=str(root / "out"), steps=1, out=str(tmp_path / "run")))
    assert summary is not None and (tmp_path / "run").is_dir()


def test_cli_reports_bad_arguments(profiled, tmp_path, capsys):
    root, _, _ = profiled
    assert main(["profile", str(root / "src"), str(tmp_path / "x"), "--views", "0", "--quiet"]) == 2
    assert "views" in capsys.readouterr().err
    assert main(["profile", str(tmp_path / "missing"), str(tmp_path / "y"), "--quiet"]) == 2


@pytest.mark.slow
def test_two_workers_write_the_same_store_as_one(profiled, tmp_path):
    root, settings, _ = profiled
    profile(root / "src", tmp_path / "parallel", settings, workers=2, progress=False)
    for shard in ("shard-00000", "shard-00001"):
        for field in ("image", "m", "landmarks", "texture_mask", "landmark_visible"):
            assert np.array_equal(np.load(root / "out" / shard / f"{field}.npy"),
                                  np.load(tmp_path / "parallel" / shard / f"{field}.npy")), (shard, field)
