"""The adversarial part: a patchGAN discriminator, LSGAN losses and a history buffer of fakes.

As the authors' `discriminator_patchGAN` (model_non_linear_3DMM_proxy.py, df_dim = 32): 3x3
convolutions with bias, a stride-1 one with 32 channels, four stride-2 ones with 64, 128, 192,
256 channels (BatchNorm + ELU; none on the first), a 1-channel one; LSGAN losses in their
normalisation (`l2` = sum / 2 / numel): D minimises (2 l2(D(real) - 1) + l2(D(fake)) +
l2(D(history))) / 4, where history is a batch drawn at random from the last 1,000 fakes
(HISTRORY_SZ); G minimises l2(D(fake) - 1) (weight 1 in their code).

`FakeHistory.query` (the CycleGAN image pool) is the older rule, kept for comparison;
`FakeHistory.sample` + `push` is the authors' (draw, then overwrite the drawn slots).
"""
from __future__ import annotations

import torch
from torch import nn


class PatchDiscriminator(nn.Module):
    """(B, 3, H, W) image in [-1, 1] -> (B, 1, H/16, W/16) realism scores, one per patch
    (a 224 input gives 14 x 14 patches, each seeing a 65 x 65 pixel window)."""

    WIDTHS = (1, 2, 4, 6, 8)  # x base: the authors' df_dim multiples

    def __init__(self, in_channels: int = 3, base: int = 32, widths: tuple[int, ...] = WIDTHS):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(in_channels, base * widths[0], 3, 1, 1), nn.ELU()]
        channels = base * widths[0]
        for width in widths[1:]:
            layers += [nn.Conv2d(channels, base * width, 3, 2, 1),
                       nn.BatchNorm2d(base * width, eps=1e-5, momentum=0.1), nn.ELU()]
            channels = base * width
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


def authors_discriminator_loss(real_scores: torch.Tensor, fake_scores: torch.Tensor,
                               history_scores: torch.Tensor) -> torch.Tensor:
    """D's loss in the authors' code: (2 l2(D(real) - 1) + l2(D(fake)) + l2(D(history))) / 4,
    l2 = mean square / 2; 0 when D scores reals 1 and both kinds of fakes 0."""
    return (2 * (real_scores - 1).square().mean() + fake_scores.square().mean()
            + history_scores.square().mean()) / 2 / 4


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

    def sample(self, fakes: torch.Tensor) -> tuple[torch.Tensor, list[int]]:
        """The authors' rule: a batch of len(fakes) stored fakes drawn at random (with
        replacement) and their slots; while the pool is filling, the new fakes themselves.
        `push(fakes, slots)` then writes the new fakes into those slots."""
        fakes = fakes.detach()
        if self.size == 0 or len(self.images) < self.size:
            return fakes, []
        slots = torch.randint(0, self.size, (len(fakes),), generator=self.generator).tolist()
        return torch.stack([self.images[i] for i in slots]).to(fakes.device), slots

    def push(self, fakes: torch.Tensor, slots: list[int]) -> None:
        fakes = fakes.detach()
        if self.size == 0:
            return
        if not slots:
            for fake in fakes[:self.size - len(self.images)]:
                self.images.append(fake.clone())
            return
        for slot, fake in zip(slots, fakes):
            self.images[slot] = fake.clone()

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
