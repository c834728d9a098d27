"""The parts of bench/peers that decide whether a peer is compared fairly, without any peer
installed: the shared helpers against our ops, the agreement checks on wrong outputs, and
compare.py's protocol and files on our reference alone."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

import nl3dmm

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench" / "peers"))

import compare  # noqa: E402
import peer_checks  # noqa: E402
from peer_scene import Peer, PeerScene, barycentric_uv, id_agreement, pixel_centres, sample_bilinear  # noqa: E402


def test_sample_bilinear_is_our_clamped_texture_lookup(seed):
    """grid_sample as the adapters call it puts texels where ours are, rows along v."""
    tex = torch.rand(1, 7, 5, 3, dtype=torch.float64)
    uv = torch.rand(2, 4, 6, 2, dtype=torch.float64) * 1.6 - 0.3  # past the border too
    expected = nl3dmm.sample_texture(tex, uv, boundary="clamp", backend="reference")
    torch.testing.assert_close(sample_bilinear(tex, uv), expected, rtol=0, atol=1e-12)


def test_barycentric_uv_is_our_interpolation(seed):
    """Weights of the second and third vertex, as Open3D returns them, give our interpolate."""
    scene = PeerScene(1, 32)
    attr = torch.rand(scene.uv.shape)
    rast = nl3dmm.rasterize(scene.pos, scene.tri, (32, 32))
    ids = rast[..., 3].long() - 1
    assert (ids >= 0).sum() > 100
    got = barycentric_uv(attr, scene.tri, ids, rast[..., 1], 1 - rast[..., 0] - rast[..., 1])
    torch.testing.assert_close(got, nl3dmm.interpolate(attr, rast, scene.tri), rtol=0, atol=1e-5)


def test_pixel_centres_and_screen_vertices_follow_our_convention():
    assert pixel_centres(2).tolist() == [[0.5, 0.5], [1.5, 0.5], [0.5, 1.5], [1.5, 1.5]]
    scene = PeerScene(1, 32)
    screen = scene.screen_vertices(0)
    expected = (scene.pos[0, :, :2].numpy() + 1) * 16
    assert abs(screen[:, :2] - expected).max() < 1e-5
    assert (screen[:, 2] == scene.pos[0, :, 2].numpy()).all()


def test_id_agreement_counts_pixels_either_side_covers():
    ours = torch.tensor([[0, 1, -1, -1, 5]])
    peer = torch.tensor([[0, 2, 3, -1, 5]])
    assert id_agreement(ours, peer) == pytest.approx(2 / 4)
    assert id_agreement(ours, ours) == 1.0


class _Fixed(Peer):
    """A peer whose outputs are given tensors."""

    def __init__(self, ids, image, grads):
        self.ids, self.image, self.grads = ids, image, grads

    def rasterize(self):
        return self.ids

    def triangle_ids(self, out):
        return out

    def textured(self):
        return self.image

    def forward_backward(self):
        return self.grads


def _outputs(ids, image, grads):
    return peer_checks.Outputs(_Fixed(ids, image, grads))


def test_checks_pass_equal_outputs_and_name_each_kind_of_difference(seed):
    ids = torch.randint(-1, 50, (2, 8, 8))
    image = torch.rand(2, 8, 8, 3)
    grads = (torch.randn(2, 10, 4), torch.randn(1, 4, 4, 3))
    base = _outputs(ids, image, grads)
    for op in ("rasterize", "textured", "forward_backward"):
        assert peer_checks.agreement(_outputs(ids, image, grads), base, op).failures() == []

    shifted = torch.where(ids >= 0, ids + 1, ids)
    assert "triangle id" in peer_checks.agreement(_outputs(shifted, image, grads), base, "rasterize").failures()[0]
    assert "within" in peer_checks.agreement(_outputs(ids, image + 0.1, grads), base, "textured").failures()[0]
    bad_pos = (grads[0] * 1.2, grads[1])
    assert "grad_pos" in peer_checks.agreement(_outputs(ids, image, bad_pos), base, "forward_backward").failures()[0]
    nan_tex = (grads[0], torch.full_like(grads[1], float("nan")))
    assert "grad_tex" in peer_checks.agreement(_outputs(ids, image, nan_tex), base, "forward_backward").failures()[0]
    # texel (0, 0) holds our empty pixels' gradient: a difference there alone is no failure
    corner = grads[1].clone()
    corner[:, 0, 0] += 100
    assert peer_checks.agreement(_outputs(ids, image, (grads[0], corner)), base, "forward_backward").failures() == []


def test_interleave_alternates_after_warmup():
    calls = []
    ours_ms, peer_ms = compare.interleave(lambda: calls.append("A"), lambda: calls.append("B"),
                                          pairs=3, warmup=2, pause=0)
    assert calls == ["A", "B"] * 5
    assert len(ours_ms) == len(peer_ms) == 3
    s = compare.summary([2.0, 4.0, 3.0], [6.0, 12.0, 9.0])
    assert (s["ratio_median"], s["ratio_best"], s["ours_spread"]) == (3.0, 3.0, 1.5)


def test_compare_writes_the_table_and_stops_its_load(tmp_path, monkeypatch):
    started = []

    def start_load(threads):
        started.append(real_start(threads))
        return started[-1]

    real_start = compare.start_load
    monkeypatch.setattr(compare, "start_load", start_load)
    assert compare.main(["--peers", "reference", "--sizes", "1x32", "--ops", "rasterize,textured",
                         "--pairs", "2", "--warmup", "0", "--pause", "0", "--load", "1",
                         "--out-dir", str(tmp_path)]) == 0
    assert started and started[0].poll() is not None  # the busy loop is gone
    written = sorted(p.name for p in tmp_path.iterdir())
    assert len(written) == 2 and written[0].startswith("peers-") and written[0].endswith("-load.json")
    report = json.loads((tmp_path / written[0]).read_text())
    assert [c["case"] for c in report["cases"]] == ["rasterize B=1 32²", "textured B=1 32²"]
    for case in report["cases"]:
        assert case["agreement"]["ids"] == 1.0
        assert len(case["ours_ms"]) == len(case["peer_ms"]) == 2
        assert case["ratio_median"] > 0
    assert report["load_threads"] == 1 and report["load_cores"] > 0
    assert "load average" in report["uptime_before"] and "load average" in report["uptime_after"]
    table = (tmp_path / written[1]).read_text()
    assert "| rasterize B=1 32² |" in table and "our pure-torch reference" in table


@pytest.mark.parametrize("argv", [["--sizes", "1x"], ["--peers", "nope"], ["--peers", "ours"],
                                  ["--ops", "shade"], ["--pairs", "0"]])
def test_compare_refuses_bad_arguments(argv, tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        compare.main([*argv, "--out-dir", str(tmp_path)])
    assert exit_info.value.code == 2
    assert not any(tmp_path.iterdir())
