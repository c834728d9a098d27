"""The adversarial part: a patchGAN discriminator, LSGAN losses and a history buffer of fakes.

PAPER.md gives the discriminator as "a stride-1 conv, four stride-2 convs, a 1-channel conv"
with an LSGAN loss and a history of fakes; kernel sizes, channel widths, normalisation and the
history's replacement rule are not stated, so they are ours: 3x3 convolutions with 32, 64, 128,
256, 512 channels, BatchNorm + ELU (the authors' building blocks elsewhere), no normalisation
on the first layer, and the image-pool rule of Shrivastava et al. / CycleGAN (each fake is
swapped for a stored one with probability 1/2) over 1,000 images (the code's HISTRORY_SZ).
"""
from __future__ import annotations

import torch
from torch import nn


class PatchDiscriminator(nn.Module):
    """(B, 3, H, W) image in [-1, 1] -> (B, 1, H/16, W/16) realism scores, one per patch
    (a 224 input gives 14 x 14 patches, each seeing a 65 x 65 pixel window)."""

    def __init__(self, in_channels: int = 3, base: int = 32):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(in_channels, base, 3, 1, 1), nn.ELU()]
        channels = base
        for _ in range(4):
            layers += [nn.Conv2d(channels, 2 * channels, 3, 2, 1, bias=False),
                       nn.BatchNorm2d(2 * channels, eps=1e-5, momentum=0.1), nn.ELU()]
            channels *= 2
        layers.append(nn.Conv2d(channels, 1, 3, 1, 1))
        self.layers = nn.Sequential(*layers)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.normal_(module.weight, 0.0, 0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.layers(image)


def lsgan_discriminator_loss(real_scores: torch.Tensor, fake_scores: torch.Tensor) -> torch.Tensor:
    """LSGAN (Mao et al. 2017) for D: (mean (D(real) - 1)^2 + mean D(fake)^2) / 2; 0 when D
    scores reals 1 and fakes 0."""
    return ((real_scores - 1).square().mean() + fake_scores.square().mean()) / 2


def lsgan_generator_loss(fake_scores: torch.Tensor, weight: float = 1.0) -> torch.Tensor:
    """LSGAN for the generator: weight * mean (D(fake) - 1)^2 / 2; 0 when D takes fakes for real."""
    return weight * (fake_scores - 1).square().mean() / 2


class FakeHistory:
    """A pool of past fakes for the discriminator, so it does not forget earlier artefacts.

    `query(fakes)` stores detached copies: while the pool is filling it returns the batch as
    given; afterwards each returned image is, with probability 1/2, a random stored one (which
    the new fake replaces), else the new fake itself."""

    def __init__(self, size: int = 1000, generator: torch.Generator | None = None):
        if size < 0:
            raise ValueError(f"history size must be >= 0, got {size}")
        self.size = size
        self.generator = generator
        self.images: list[torch.Tensor] = []

    def __len__(self) -> int:
        return len(self.images)

    def query(self, fakes: torch.Tensor) -> torch.Tensor:
        if self.size == 0:
            return fakes.detach()
        out = []
        for fake in fakes.detach():
            if len(self.images) < self.size:
                self.images.append(fake.clone())
                out.append(fake)
                continue
            coin, slot = torch.rand(2, generator=self.generator)
            if coin < 0.5:
                index = int(slot * self.size)
                out.append(self.images[index].clone())
                self.images[index] = fake.clone()
            else:
                out.append(fake)
        return torch.stack(out)
