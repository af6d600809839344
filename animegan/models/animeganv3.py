"""AnimeGANv3-style generator: a shared encoder, a support tail and a main tail.

As the v3 paper lays it out, training supervises both tails (the support tail carries the
grayscale-style and content terms, the main tail the colour and region terms), while
inference runs the encoder and the main tail only. Instance Normalization stands in for
v3's LADE layers.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .layers import ConvNormLReLU, InvertedResBlock, upsample_to


@dataclass
class AnimeGANv3Config:
    width: int = 32
    residual_blocks: int = 4
    align_corners: bool = False


class Tail(nn.Module):
    """Decoder: resize-convolution back to the skip level, then to the input size."""

    def __init__(self, width: int, align_corners: bool) -> None:
        super().__init__()
        self.align_corners = align_corners
        self.up1 = nn.Sequential(ConvNormLReLU(width * 4, width * 2, norm="instance"),
                                 ConvNormLReLU(width * 2, width * 2, norm="instance"))
        self.up2 = nn.Sequential(ConvNormLReLU(width * 2, width, norm="instance"),
                                 ConvNormLReLU(width, width, kernel_size=7, padding=3, norm="instance"))
        self.out = nn.Sequential(nn.Conv2d(width, 3, kernel_size=1, bias=False), nn.Tanh())

    def forward(self, features: torch.Tensor, skip: torch.Tensor, size: torch.Size) -> torch.Tensor:
        out = self.up1(upsample_to(features, skip.shape[-2:], self.align_corners)) + skip
        out = self.up2(upsample_to(out, size, self.align_corners))
        return self.out(out)


class AnimeGANv3Generator(nn.Module):
    """Input and output NCHW in [-1, 1]. ``forward`` gives the main tail; ``forward_both`` gives (support, main)."""

    min_size = 16
    size_multiple = 1

    def __init__(self, config: AnimeGANv3Config | None = None) -> None:
        super().__init__()
        self.config = config or AnimeGANv3Config()
        w = self.config.width
        self.enc_a = nn.Sequential(
            ConvNormLReLU(3, w, kernel_size=7, padding=3, norm="instance"),
            ConvNormLReLU(w, w * 2, stride=2, padding=(0, 1, 0, 1), norm="instance"),
            ConvNormLReLU(w * 2, w * 2, norm="instance"),
        )
        blocks: list[nn.Module] = [
            ConvNormLReLU(w * 2, w * 4, stride=2, padding=(0, 1, 0, 1), norm="instance"),
            ConvNormLReLU(w * 4, w * 4, norm="instance"),
        ]
        blocks += [InvertedResBlock(w * 4, w * 4, 2, norm="instance") for _ in range(self.config.residual_blocks)]
        self.enc_b = nn.Sequential(*blocks)
        self.support_tail = Tail(w, self.config.align_corners)
        self.main_tail = Tail(w, self.config.align_corners)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        skip = self.enc_a(x)
        return self.enc_b(skip), skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features, skip = self.encode(x)
        return self.main_tail(features, skip, x.shape[-2:])

    def forward_both(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Training pass: both tails share one encoder pass."""
        features, skip = self.encode(x)
        size = x.shape[-2:]
        return self.support_tail(features, skip, size), self.main_tail(features, skip, size)
