"""The DCGAN family for anime faces: latent (N, latent_dim) -> image (N, 3, S, S) in [-1, 1].

Two variants share these classes and differ only in their config:

* ``"dcgan"``, the seeds' network: transposed 4x4 convolutions with batch norm and ReLU in G,
  strided convolutions with batch norm and LeakyReLU in D (trained with BCE and Adam).
  128x128 uses a 256-d latent; the 64x64 configuration a 300-d latent.
* ``"dcgan_improved"``: resize-convolution upsampling (nearest x2 then a 3x3 conv, which
  cannot make the checkerboard pattern transposed convolutions leave), spectral norm in D
  without batch norm. Its training-side switches (hinge loss, EMA of G, DiffAugment) live
  in the trainer's config (``train/faces.py``).

``variant_configs(variant, size)`` gives the generator and discriminator configs of a variant.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

SEED_LATENT = {128: 256, 64: 300}  # the seeds' latent sizes; other sizes use 256


def _check_size(size: int) -> int:
    if size < 16 or size > 512 or size & (size - 1):
        raise ValueError(f"image_size must be a power of two from 16 to 512, not {size}")
    return int(math.log2(size)) - 2  # number of x2 stages from 4x4


@dataclass
class DCGANConfig:
    """Face generator. ``upsample``: "transposed" (the seeds) or "resize" (nearest + 3x3 conv)."""

    image_size: int = 128
    latent_dim: int = 256
    width: int = 64          # channels at half resolution (before the last upsampling); doubles each stage down
    max_channels: int = 512
    upsample: str = "transposed"


@dataclass
class DCGANDiscriminatorConfig:
    image_size: int = 128
    width: int = 64
    max_channels: int = 512
    spectral_norm: bool = False
    batch_norm: bool = True


def _channels(width: int, max_channels: int, stages: int) -> list[int]:
    """Channels at 4x4, 8x8, ... half resolution (``stages`` entries), as in the DCGAN paper."""
    return [min(width * 2 ** (stages - 1 - i), max_channels) for i in range(stages)]


class DCGANGenerator(nn.Module):
    """(N, latent_dim) in N(0, I) -> (N, 3, S, S) in [-1, 1]."""

    def __init__(self, config: DCGANConfig | None = None) -> None:
        super().__init__()
        cfg = self.config = config or DCGANConfig()
        if cfg.upsample not in ("transposed", "resize"):
            raise ValueError(f"upsample must be 'transposed' or 'resize', not {cfg.upsample!r}")
        stages = _check_size(cfg.image_size)
        ch = _channels(cfg.width, cfg.max_channels, stages)
        self.latent_dim, self.image_size = cfg.latent_dim, cfg.image_size
        # The stem is the "first layer" whose activations the semantic sliders use (GANSpace).
        self.stem = nn.Sequential(nn.ConvTranspose2d(cfg.latent_dim, ch[0], 4, 1, 0, bias=False),
                                  nn.BatchNorm2d(ch[0]), nn.ReLU(True))
        self.blocks = nn.Sequential(*[nn.Sequential(*self._up(cin, cout, bias=False), nn.BatchNorm2d(cout), nn.ReLU(True))
                                      for cin, cout in zip(ch[:-1], ch[1:])])
        self.to_rgb = nn.Sequential(*self._up(ch[-1], 3, bias=True), nn.Tanh())
        self.apply(_dcgan_init)

    def _up(self, cin: int, cout: int, bias: bool) -> list[nn.Module]:
        if self.config.upsample == "transposed":
            return [nn.ConvTranspose2d(cin, cout, 4, 2, 1, bias=bias)]
        return [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(cin, cout, 3, 1, 1, bias=bias)]

    def early_features(self, z: torch.Tensor) -> torch.Tensor:
        """The stem's activations (N, C, 4, 4)."""
        return self.stem(z.reshape(z.shape[0], -1, 1, 1))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.to_rgb(self.blocks(self.early_features(z)))


class DCGANDiscriminator(nn.Module):
    """(N, 3, S, S) in [-1, 1] -> (N,) logits."""

    def __init__(self, config: DCGANDiscriminatorConfig | None = None) -> None:
        super().__init__()
        cfg = self.config = config or DCGANDiscriminatorConfig()
        stages = _check_size(cfg.image_size)
        ch = _channels(cfg.width, cfg.max_channels, stages)[::-1]  # half res ... 4x4

        def conv(cin: int, cout: int, k: int, s: int, p: int, bias: bool) -> nn.Module:
            layer = nn.Conv2d(cin, cout, k, s, p, bias=bias)
            return nn.utils.parametrizations.spectral_norm(layer) if cfg.spectral_norm else layer

        layers: list[nn.Module] = [conv(3, ch[0], 4, 2, 1, True), nn.LeakyReLU(0.2, True)]
        for cin, cout in zip(ch[:-1], ch[1:]):
            layers.append(conv(cin, cout, 4, 2, 1, not cfg.batch_norm))
            if cfg.batch_norm:
                layers.append(nn.BatchNorm2d(cout))
            layers.append(nn.LeakyReLU(0.2, True))
        layers.append(conv(ch[-1], 1, 4, 1, 0, True))
        self.net = nn.Sequential(*layers)
        self.apply(_dcgan_init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).flatten(1).mean(1)


def _dcgan_init(m: nn.Module) -> None:
    """The DCGAN paper's initialisation: N(0, 0.02) convs, N(1, 0.02) batch-norm scales."""
    if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
        weight = m.parametrizations.weight.original if hasattr(m, "parametrizations") else m.weight
        nn.init.normal_(weight, 0.0, 0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.BatchNorm2d):
        nn.init.normal_(m.weight, 1.0, 0.02)
        nn.init.zeros_(m.bias)


VARIANTS = ("dcgan", "dcgan_improved")


def variant_configs(variant: str, image_size: int = 128, latent_dim: int | None = None, g_width: int = 64,
                    d_width: int = 64) -> tuple[DCGANConfig, DCGANDiscriminatorConfig]:
    """Generator and discriminator configs of a named variant at a size."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown face variant {variant!r} (known: {', '.join(VARIANTS)})")
    improved = variant == "dcgan_improved"
    z = latent_dim or SEED_LATENT.get(image_size, 256)
    g = DCGANConfig(image_size=image_size, latent_dim=z, width=g_width, upsample="resize" if improved else "transposed")
    d = DCGANDiscriminatorConfig(image_size=image_size, width=d_width, spectral_norm=improved, batch_norm=not improved)
    return g, d
