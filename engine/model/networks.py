"""The networks of the nonlinear 3DMM, as named configurations (`build_model(name, face_model)`).

`cvpr18` (default; CVPR'18 paper): encoder E (224x224 image -> m (8), f_S (160), f_T (160)),
shape decoder D_S = MLP 160 -> 1000 -> Q*3 (scaled by the face model's per-coordinate std and
mean), texture decoder D_T = CNN 160 -> 128x128x3 (tanh).

`tpami19` (the authors' later code): the encoder also predicts 27 SH lighting numbers; D_S is a
CNN producing a 192x224x3 shape map in UV space, sampled bilinearly at each vertex's UV
(S = out * scale + mean); D_T produces a 192x224x3 albedo, shaded per texel with the SH
lighting and the vertex normals rotated by m (texture = 2 * ((albedo + 1) / 2 * shade) - 1).

Layer plans follow the authors' TensorFlow code (shared/PAPER.md): 3x3 convolutions unless
stated, BatchNorm (eps 1e-5, TF decay 0.9 = torch momentum 0.1) + ELU after every hidden layer,
no bias before a BatchNorm, weights drawn from N(0, 0.02) as in their `conv2d`/`linear`.
Where PAPER.md leaves a choice open it is ours and said so below.

Images enter as (B, 3, H, W) in [-1, 1]; textures leave as (B, H, W, 3) (the renderer's layout).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..face.facemodel import FaceModel, load_paper_mesh
from ..face.rendering import render_face
from ..face.shading import m_rotation, sh_shading, vertex_normals, white_light
from ..face.unwrap import rasterize_uv_space
from ..render import interpolate


@dataclass(frozen=True)
class NetworkConfig:
    name: str
    image_size: int = 224
    base_channels: int = 32             # the authors' gf_dim
    code_size: int = 160                # l_S = l_T = gfc_dim / 2
    texture_size: tuple[int, int] = (128, 128)
    texture_upsamplings: int = 4        # 8x8 -> 128x128 (CVPR'18); 5 for 6x7 -> 192x224
    shape_decoder: str = "mlp"          # "mlp" (CVPR'18) or "uv" (TPAMI'19)
    mlp_hidden: int = 1000
    lighting: bool = False              # predict 27 SH numbers and shade the albedo


CONFIGS = {
    "cvpr18": NetworkConfig("cvpr18"),
    "tpami19": NetworkConfig("tpami19", texture_size=(192, 224), texture_upsamplings=5, shape_decoder="uv",
                             lighting=True),
}


def _init_weights(module: nn.Module) -> None:
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


def conv_bn_elu(cin: int, cout: int, kernel: int = 3, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, stride, kernel // 2, bias=False),
                         nn.BatchNorm2d(cout, eps=1e-5, momentum=0.1), nn.ELU())


class PooledHead(nn.Module):
    """3x3 conv + BN, global average pool (the code's 7x7 pool on a 224 input), then an
    optional linear layer."""

    def __init__(self, cin: int, channels: int, out: int | None = None):
        super().__init__()
        self.conv = nn.Conv2d(cin, channels, 3, 1, 1, bias=False)
        self.bn = nn.BatchNorm2d(channels, eps=1e-5, momentum=0.1)
        self.linear = nn.Linear(channels, out) if out is not None else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = self.bn(self.conv(x)).mean(dim=(2, 3))
        return self.linear(pooled) if self.linear is not None else pooled


class Encoder(nn.Module):
    """E: 13 conv layers (7x7 stride 2 first, then 3x3; five stride-2 steps take 224 to 7) and
    pooled heads: m (64 channels -> 8), f_S and f_T (code_size channels each), optional
    lighting (64 -> 27). The 14th conv of the paper's count is each head's own conv."""

    def __init__(self, base: int = 32, code_size: int = 160, lighting: bool = False):
        super().__init__()
        g = base
        plan = [(3, g, 7, 2), (g, 2 * g, 3, 1),
                (2 * g, 2 * g, 3, 2), (2 * g, 2 * g, 3, 1), (2 * g, 4 * g, 3, 1),
                (4 * g, 4 * g, 3, 2), (4 * g, 3 * g, 3, 1), (3 * g, 6 * g, 3, 1),
                (6 * g, 6 * g, 3, 2), (6 * g, 4 * g, 3, 1), (4 * g, 8 * g, 3, 1),
                (8 * g, 8 * g, 3, 2), (8 * g, 5 * g, 3, 1)]
        self.trunk = nn.Sequential(*(conv_bn_elu(*layer) for layer in plan))
        fc = 2 * code_size  # the authors' gfc_dim: heads use gfc/5 channels for m and lighting
        self.m_head = PooledHead(5 * g, fc // 5, 8)
        self.shape_head = PooledHead(5 * g, code_size)
        self.texture_head = PooledHead(5 * g, code_size)
        self.lighting_head = PooledHead(5 * g, fc // 5, 27) if lighting else None

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        features = self.trunk(image)
        out = {"m_normalized": self.m_head(features), "shape_code": self.shape_head(features),
               "texture_code": self.texture_head(features)}
        if self.lighting_head is not None:
            out["lighting"] = self.lighting_head(features)
        return out


class UpsamplingDecoder(nn.Module):
    """code -> (B, C, H, W): a linear layer to (H/32 or H/16) x (W/..) x 10*base channels + BN
    + ELU, then transposed 3x3 convolutions with channels 5b, 8b | 8b, 4b, 6b | 6b, 3b, 4b |
    4b, 2b, 2b | 2b, b, C (b = base), the first of each group after the first upsampling by 2.

    With 5 upsamplings (TPAMI'19, 192x224 from 6x7) the first transposed conv also has
    stride 2, as in the code; with 4 (CVPR'18, 128x128 from 8x8) it has stride 1 — our choice,
    the paper only gives the input size and the number of upsamplings."""

    def __init__(self, code_size: int, size: tuple[int, int], out_channels: int, base: int = 32,
                 upsamplings: int = 5):
        super().__init__()
        if upsamplings not in (4, 5):
            raise ValueError(f"upsamplings must be 4 or 5, got {upsamplings}")
        factor = 2 ** upsamplings
        if size[0] % factor or size[1] % factor:
            raise ValueError(f"texture size {size} is not divisible by {factor}")
        b = base
        self.start = (size[0] // factor, size[1] // factor, 10 * b)
        self.linear = nn.Linear(code_size, int(np.prod(self.start)))
        self.bn0 = nn.BatchNorm2d(10 * b, eps=1e-5, momentum=0.1)
        plan = [(10 * b, 5 * b, 2 if upsamplings == 5 else 1), (5 * b, 8 * b, 1),
                (8 * b, 8 * b, 2), (8 * b, 4 * b, 1), (4 * b, 6 * b, 1),
                (6 * b, 6 * b, 2), (6 * b, 3 * b, 1), (3 * b, 4 * b, 1),
                (4 * b, 4 * b, 2), (4 * b, 2 * b, 1), (2 * b, 2 * b, 1),
                (2 * b, 2 * b, 2), (2 * b, b, 1)]
        layers = []
        for cin, cout, stride in plan:
            layers += [nn.ConvTranspose2d(cin, cout, 3, stride, 1, output_padding=stride - 1, bias=False),
                       nn.BatchNorm2d(cout, eps=1e-5, momentum=0.1), nn.ELU()]
        layers.append(nn.ConvTranspose2d(b, out_channels, 3, 1, 1))
        self.layers = nn.Sequential(*layers)

    def forward(self, code: torch.Tensor) -> torch.Tensor:
        h, w, c = self.start
        x = self.linear(code).reshape(-1, h, w, c).permute(0, 3, 1, 2)  # TF reshape is HWC
        return self.layers(F.elu(self.bn0(x)))


class MLPShapeDecoder(nn.Module):
    """D_S of CVPR'18: f_S -> 1000 (BN + ELU, as the code's `generator_decoder_shape_1d`) ->
    Q*3 normalised offsets; S = offsets * std_shape + mean_shape."""

    def __init__(self, face_model: FaceModel, code_size: int = 160, hidden: int = 1000):
        super().__init__()
        mean, std = _shape_statistics(face_model)
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)
        self.hidden = nn.Sequential(nn.Linear(code_size, hidden), nn.BatchNorm1d(hidden, eps=1e-5, momentum=0.1),
                                    nn.ELU())
        self.out = nn.Linear(hidden, 3 * face_model.num_vertices)

    def forward(self, code: torch.Tensor) -> dict[str, torch.Tensor]:
        normalized = self.out(self.hidden(code)).reshape(code.shape[0], -1, 3)
        return {"shape_normalized": normalized, "vertices": normalized * self.std + self.mean}


class UVShapeDecoder(nn.Module):
    """D_S of TPAMI'19: f_S -> 192x224x3 shape map (2 tanh), sampled bilinearly at each
    vertex's UV; S = sample * scale + mean_shape. `scale` is 4/3 of the model's largest
    per-coordinate std, which is 9,995 for the paper model (the authors' constant is 1e4)."""

    def __init__(self, face_model: FaceModel, code_size: int = 160, size: tuple[int, int] = (192, 224),
                 base: int = 32):
        super().__init__()
        mean, std = _shape_statistics(face_model)
        self.register_buffer("mean", mean)
        self.register_buffer("std", torch.full_like(std, float(std.max()) * 4 / 3))
        grid = torch.from_numpy(face_model.uv.astype(np.float32)) * 2 - 1  # grid_sample's [-1, 1]
        self.register_buffer("grid", grid.reshape(1, 1, -1, 2))
        self.decoder = UpsamplingDecoder(code_size, size, 3, base, upsamplings=5)

    def forward(self, code: torch.Tensor) -> dict[str, torch.Tensor]:
        shape_map = 2 * torch.tanh(self.decoder(code))
        normalized = sample_uv_map(shape_map, self.grid)
        return {"shape_normalized": normalized, "vertices": normalized * self.std + self.mean,
                "shape_uv": shape_map}


def sample_uv_map(maps: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) maps sampled bilinearly at (1, 1, V, 2) grid points (= 2 * uv - 1) ->
    (B, V, C). align_corners=False: texel k spans [k, k+1) / size, matching FaceModel.uv;
    "border" clamps the neck/ear vertices that lie outside the map."""
    sampled = F.grid_sample(maps, grid.expand(maps.shape[0], -1, -1, -1), mode="bilinear",
                            padding_mode="border", align_corners=False)
    return sampled[:, :, 0].transpose(1, 2)


class TextureDecoder(nn.Module):
    """D_T: f_T -> (B, H, W, 3) texture (or albedo) in [-1, 1] (tanh)."""

    def __init__(self, code_size: int = 160, size: tuple[int, int] = (128, 128), base: int = 32,
                 upsamplings: int = 4):
        super().__init__()
        self.decoder = UpsamplingDecoder(code_size, size, 3, base, upsamplings)

    def forward(self, code: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.decoder(code)).permute(0, 2, 3, 1)


def _shape_statistics(face_model: FaceModel) -> tuple[torch.Tensor, torch.Tensor]:
    if face_model.std_shape is None:
        raise ValueError(f"{face_model.name} has no std_shape; the shape decoder needs it to scale its output")
    return (torch.from_numpy(face_model.mean_shape.astype(np.float32)),
            torch.from_numpy(face_model.std_shape.astype(np.float32)))


class NonlinearFaceModel(nn.Module):
    """Encoder + shape decoder + texture decoder for one face model. `forward(image)` returns:

    * `m` (B, 8) camera (denormalised with the model's m statistics) and `m_normalized`;
    * `shape_code`, `texture_code` (B, 160);
    * `vertices` (B, Q, 3) in the model's units, `shape_normalized` (B, Q, 3);
    * `texture` (B, H, W, 3) in [-1, 1];
    * tpami19 also: `albedo` (B, H, W, 3), `lighting` (B, 27), `shade` (B, H, W, 3), `shape_uv`
      (B, 3, 192, 224), `uv_mask` (H, W) texels covered by the mesh.
    """

    def __init__(self, config: NetworkConfig, face_model: FaceModel):
        super().__init__()
        if face_model.m_mean is None or face_model.m_std is None:
            raise ValueError(f"{face_model.name} has no camera statistics (m_mean / m_std)")
        self.config = config
        self.face_model_name = face_model.name
        self.register_buffer("m_mean", torch.from_numpy(face_model.m_mean.astype(np.float32)))
        self.register_buffer("m_std", torch.from_numpy(face_model.m_std.astype(np.float32)))
        self.register_buffer("triangles", torch.from_numpy(face_model.triangles.astype(np.int32)))
        self.register_buffer("uv", torch.from_numpy(face_model.uv.astype(np.float32)))
        self.encoder = Encoder(config.base_channels, config.code_size, config.lighting)
        if config.shape_decoder == "mlp":
            self.shape_decoder = MLPShapeDecoder(face_model, config.code_size, config.mlp_hidden)
        elif config.shape_decoder == "uv":
            self.shape_decoder = UVShapeDecoder(face_model, config.code_size, (192, 224), config.base_channels)
        else:
            raise ValueError(f"unknown shape decoder {config.shape_decoder!r}")
        self.texture_decoder = TextureDecoder(config.code_size, config.texture_size, config.base_channels,
                                              config.texture_upsamplings)
        if config.lighting:
            # The mesh in UV space: fixed per model, so rasterized once.
            self.register_buffer("uv_raster", rasterize_uv_space(self.uv, torch.from_numpy(face_model.triangles),
                                                                 config.texture_size))
        self.apply(_init_weights)

    def normalize_m(self, m: torch.Tensor) -> torch.Tensor:
        return (m - self.m_mean) / self.m_std

    def normalize_shape(self, vertices: torch.Tensor) -> torch.Tensor:
        return (vertices - self.shape_decoder.mean) / self.shape_decoder.std

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        size = self.config.image_size
        if image.ndim != 4 or image.shape[1] != 3 or tuple(image.shape[2:]) != (size, size):
            raise ValueError(f"image must be (B, 3, {size}, {size}), got {tuple(image.shape)}")
        out = self.encoder(image)
        out["m"] = out["m_normalized"] * self.m_std + self.m_mean
        out.update(self.shape_decoder(out["shape_code"]))
        texture = self.texture_decoder(out["texture_code"])
        if not self.config.lighting:
            out["texture"] = texture
            return out
        # Lighting is offset by an ambient white light so an untrained model shades with ~1
        # instead of 0 (a constant, so the architecture is unchanged).
        out["lighting"] = out["lighting"] + white_light(image.shape[0], dtype=image.dtype).to(image.device)
        normals = vertex_normals(out["vertices"], self.triangles) @ m_rotation(out["m"]).transpose(1, 2)
        rast = self.uv_raster.expand(image.shape[0], -1, -1, -1).contiguous()
        texel_normals = F.normalize(interpolate(normals.contiguous(), rast, self.triangles), dim=-1)
        out["shade"] = sh_shading(texel_normals, out["lighting"])
        out["albedo"] = texture
        out["texture"] = 2 * ((texture + 1) / 2 * out["shade"]) - 1
        out["uv_mask"] = self.uv_raster[0, ..., 3] > 0
        return out


    def render(self, outputs: dict[str, torch.Tensor], background: torch.Tensor | None = None,
               face_mask: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """The forward outputs rendered at the input size (`face.rendering.render_face`):
        `background` is the input image as (B, H, W, 3), `face_mask` (B, H, W)."""
        return render_face(outputs["vertices"], outputs["m"], outputs["texture"], self.triangles, self.uv,
                           self.config.image_size, background, face_mask)


def build_model(name: str = "cvpr18", face_model: FaceModel | None = None) -> NonlinearFaceModel:
    """The named configuration (`cvpr18` or `tpami19`) for `face_model` (default: the paper's)."""
    if name not in CONFIGS:
        raise ValueError(f"unknown network configuration {name!r}; choose from {sorted(CONFIGS)}")
    if face_model is None:
        face_model = load_paper_mesh()
    return NonlinearFaceModel(CONFIGS[name], face_model)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def parameter_summary(model: nn.Module) -> str:
    """One line per top-level part with its parameter count, then the total."""
    rows = [(name, count_parameters(child)) for name, child in model.named_children()]
    rows.append(("total", count_parameters(model)))
    width = max(len(name) for name, _ in rows)
    title = f"{type(model).__name__}"
    if isinstance(model, NonlinearFaceModel):
        title += f" ({model.config.name}, {model.face_model_name})"
    return "\n".join([title] + [f"  {name:<{width}}  {count:>13,d}" for name, count in rows])
