"""Bad input gets a clear TypeError/ValueError naming the argument, never a crash or a
silently wrong image."""
from __future__ import annotations

import pytest
import torch

import nl3dmm

POS = torch.tensor([[[-1, -1, 0, 1], [1, -1, 0, 1], [-1, 1, 0, 1.0]]])
TRI = torch.tensor([[0, 1, 2]], dtype=torch.int32)


def _rast():
    return nl3dmm.rasterize(POS, TRI, (4, 4))


@pytest.mark.parametrize("pos, tri, resolution, error, words", [
    (POS.numpy(), TRI, (4, 4), TypeError, "pos must be a torch.Tensor"),
    (POS.half(), TRI, (4, 4), TypeError, "pos must be float32 or float64"),
    (POS[0], TRI, (4, 4), ValueError, "pos must have shape (B, V, 4)"),
    (POS[..., :3], TRI, (4, 4), ValueError, "pos must have shape (B, V, 4)"),
    (POS[:, :0], TRI, (4, 4), ValueError, "mesh is empty"),
    (POS[:0], TRI, (4, 4), ValueError, "empty batch"),
    (POS.clone().index_fill_(1, torch.tensor([1]), float("nan")), TRI, (4, 4), ValueError, "pos contains NaN or Inf"),
    (POS.clone().index_fill_(1, torch.tensor([2]), float("inf")), TRI, (4, 4), ValueError, "pos contains NaN or Inf"),
    (POS, TRI.float(), (4, 4), TypeError, "tri must be int32"),
    (POS, TRI[0], (4, 4), ValueError, "tri must have shape (F, 3)"),
    (POS, TRI[:0], (4, 4), ValueError, "tri has no triangles"),
    (POS, TRI - 1, (4, 4), ValueError, "negative vertex index"),
    (POS, TRI + 1, (4, 4), ValueError, "references vertex 3 but there are only 3 vertices"),
    (POS, TRI, (0, 4), ValueError, "resolution must be within"),
    (POS, TRI, (4, 0), ValueError, "resolution must be within"),
    (POS, TRI, (4.5, 4), TypeError, "resolution must be a pair of ints"),
    (POS, TRI, 4, TypeError, "resolution must be a pair of ints"),
    (POS, TRI, (4, 4, 4), TypeError, "resolution must be a pair of ints"),
])
def test_rasterize_rejects(pos, tri, resolution, error, words):
    with pytest.raises(error) as info:
        nl3dmm.rasterize(pos, tri, resolution)
    assert words in str(info.value)


def test_interpolate_rejects():
    rast = _rast()
    cases = [
        (torch.randn(3, 2).int(), rast, TRI, TypeError, "attr must be float32 or float64"),
        (torch.randn(3, 2).double(), rast, TRI, TypeError, "attr is torch.float64 but rast is torch.float32"),
        (torch.randn(2, 3, 2), rast, TRI, ValueError, "attr has batch 2 but rast has batch 1"),
        (torch.randn(3), rast, TRI, ValueError, "attr must have shape (B, V, C)"),
        (torch.randn(2, 2), rast, TRI, ValueError, "tri references vertex 2 but there are only 2"),
        (torch.full((3, 2), float("nan")), rast, TRI, ValueError, "attr contains NaN"),
        (torch.randn(3, 2), rast[..., :3], TRI, ValueError, "rast must have shape (B, H, W, 4)"),
        (torch.randn(3, 2), rast.clone().index_fill_(3, torch.tensor([3]), 7.0), TRI, ValueError,
         "rast[..., 3] must hold triangle ids 0..1"),
        (torch.randn(3, 2), rast.clone().index_fill_(3, torch.tensor([3]), 0.5), TRI, ValueError,
         "rast[..., 3] must hold triangle ids"),
    ]
    for attr, r, tri, error, words in cases:
        with pytest.raises(error) as info:
            nl3dmm.interpolate(attr, r, tri)
        assert words in str(info.value), (words, str(info.value))


def test_sample_texture_rejects():
    uv = torch.rand(1, 4, 4, 2)
    cases = [
        (torch.rand(1, 8, 8, 3), uv[..., :1], "clamp", ValueError, "uv must have shape (B, H, W, 2)"),
        (torch.rand(8, 8, 3), uv, "clamp", ValueError, "tex must have shape (B, Ht, Wt, C)"),
        (torch.rand(1, 0, 8, 3), uv, "clamp", ValueError, "tex is empty"),
        (torch.rand(2, 8, 8, 3), uv, "clamp", ValueError, "tex has batch 2 but uv has batch 1"),
        (torch.rand(1, 8, 8, 3).double(), uv, "clamp", TypeError, "tex is torch.float64 but uv is torch.float32"),
        (torch.rand(1, 8, 8, 3), uv.clone().fill_(float("nan")), "clamp", ValueError, "uv contains NaN"),
        (torch.rand(1, 8, 8, 3), uv, "mirror", ValueError, "boundary must be one of"),
    ]
    for tex, u, boundary, error, words in cases:
        with pytest.raises(error) as info:
            nl3dmm.sample_texture(tex, u, boundary)
        assert words in str(info.value), (words, str(info.value))


def test_unknown_or_unavailable_backend_is_named():
    with pytest.raises(ValueError, match="backend must be one of"):
        nl3dmm.rasterize(POS, TRI, (4, 4), backend="opengl")
    status = nl3dmm.available_backends()
    for name, why in status.items():
        if why is not None:
            with pytest.raises(RuntimeError, match=f"backend '{name}' cannot run here"):
                nl3dmm.rasterize(POS, TRI, (4, 4), backend=name)


def test_out_buffer_of_wrong_shape_is_rejected():
    from nl3dmm.render.backends.cpu import CpuBackend
    with pytest.raises(ValueError, match="out must be a contiguous"):
        CpuBackend().rasterize(POS, TRI, 4, 4, False, out=torch.empty(1, 4, 5, 4))


def test_validation_cache_notices_in_place_changes():
    """Validated tensors are remembered, but an in-place edit forces a fresh check."""
    tri = TRI.clone()
    nl3dmm.rasterize(POS, tri, (4, 4))
    tri[0, 0] = 7
    with pytest.raises(ValueError, match="references vertex 7"):
        nl3dmm.rasterize(POS, tri, (4, 4))
    rast = nl3dmm.rasterize(POS, TRI, (4, 4))
    nl3dmm.interpolate(torch.randn(3, 2), rast, TRI)
    rast[0, 0, 0, 3] = 5.0
    with pytest.raises(ValueError, match="must hold triangle ids"):
        nl3dmm.interpolate(torch.randn(3, 2), rast, TRI)
    with pytest.raises(ValueError, match="tri references vertex 2"):  # same tri, fewer vertices
        nl3dmm.interpolate(torch.randn(2, 2), nl3dmm.rasterize(POS, TRI, (4, 4)), TRI)


def test_inputs_on_different_devices_are_named():
    """'meta' tensors stand in for a second device on machines without a GPU."""
    meta = torch.device("meta")
    with pytest.raises(ValueError, match="tri is on meta but the other inputs are on cpu"):
        nl3dmm.rasterize(POS, TRI.to(meta), (4, 4))
    with pytest.raises(ValueError, match="attr is on meta but rast is on cpu"):
        nl3dmm.interpolate(torch.randn(3, 2, device=meta), _rast(), TRI)
    with pytest.raises(ValueError, match="tex is on meta but uv is on cpu"):
        nl3dmm.sample_texture(torch.rand(1, 8, 8, 3, device=meta), torch.rand(1, 4, 4, 2))
    with pytest.raises(ValueError, match="no rendering backend for device meta"):
        nl3dmm.sample_texture(torch.rand(1, 8, 8, 3, device=meta), torch.rand(1, 4, 4, 2, device=meta))
