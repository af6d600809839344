"""The AnimeGAN patch discriminator: a grid of real/fake logits, one per receptive field."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class PatchDiscriminatorConfig:
    width: int = 32
    layers: int = 3
    spectral_norm: bool = True
    norm: str = "instance"  # "instance", "layer" or "none"


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "instance":
        return nn.InstanceNorm2d(channels, affine=True)
    if kind == "layer":
        return nn.GroupNorm(1, channels)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"unknown norm {kind!r}")


class PatchDiscriminator(nn.Module):
    """NCHW image in [-1, 1] -> (N, 1, H/4, W/4) logits (for layers=3)."""

    def __init__(self, config: PatchDiscriminatorConfig | None = None) -> None:
        super().__init__()
        cfg = self.config = config or PatchDiscriminatorConfig()

        def conv(cin: int, cout: int, stride: int = 1) -> nn.Module:
            layer = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=cfg.norm == "none")
            return nn.utils.parametrizations.spectral_norm(layer) if cfg.spectral_norm else layer

        ch = in_ch = cfg.width
        layers: list[nn.Module] = [conv(3, ch), nn.LeakyReLU(0.2, inplace=True)]
        for _ in range(1, cfg.layers):
            layers += [conv(in_ch, ch * 2, stride=2), nn.LeakyReLU(0.2, inplace=True),
                       conv(ch * 2, ch * 4), _norm(cfg.norm, ch * 4), nn.LeakyReLU(0.2, inplace=True)]
            in_ch, ch = ch * 4, ch * 2
        layers += [conv(in_ch, ch * 2), _norm(cfg.norm, ch * 2), nn.LeakyReLU(0.2, inplace=True)]
        final = nn.Conv2d(ch * 2, 1, 3, padding=1)
        layers.append(nn.utils.parametrizations.spectral_norm(final) if cfg.spectral_norm else final)
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
