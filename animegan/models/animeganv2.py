"""AnimeGANv2 generator, key-for-key compatible with the community PyTorch checkpoints.

The layout (block_a ... block_e, out_layer) and every submodule index are part of the
checkpoint format: renaming or reordering anything breaks loading of published weights.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .layers import ConvNormLReLU, InvertedResBlock, upsample_to


@dataclass
class AnimeGANv2Config:
    """align_corners=True is the community hub model's default upsampling."""

    align_corners: bool = True


class AnimeGANv2Generator(nn.Module):
    """Photo to anime, about 2.14 M parameters. Input and output NCHW in [-1, 1]; any size >= 16."""

    min_size = 16
    size_multiple = 1

    def __init__(self, config: AnimeGANv2Config | None = None) -> None:
        super().__init__()
        self.config = config or AnimeGANv2Config()
        # The (0, 1, 0, 1) padding makes the stride-2 convs match TensorFlow's 'SAME' padding.
        self.block_a = nn.Sequential(
            ConvNormLReLU(3, 32, kernel_size=7, padding=3),
            ConvNormLReLU(32, 64, stride=2, padding=(0, 1, 0, 1)),
            ConvNormLReLU(64, 64),
        )
        self.block_b = nn.Sequential(
            ConvNormLReLU(64, 128, stride=2, padding=(0, 1, 0, 1)),
            ConvNormLReLU(128, 128),
        )
        self.block_c = nn.Sequential(
            ConvNormLReLU(128, 128),
            InvertedResBlock(128, 256, 2),
            InvertedResBlock(256, 256, 2),
            InvertedResBlock(256, 256, 2),
            InvertedResBlock(256, 256, 2),
            ConvNormLReLU(256, 128),
        )
        self.block_d = nn.Sequential(ConvNormLReLU(128, 128), ConvNormLReLU(128, 128))
        self.block_e = nn.Sequential(
            ConvNormLReLU(128, 64),
            ConvNormLReLU(64, 64),
            ConvNormLReLU(64, 32, kernel_size=7, padding=3),
        )
        self.out_layer = nn.Sequential(nn.Conv2d(32, 3, kernel_size=1, bias=False), nn.Tanh())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        align = self.config.align_corners
        out = self.block_a(x)
        half_size = out.shape[-2:]
        out = self.block_c(self.block_b(out))
        out = self.block_d(upsample_to(out, half_size, align))
        out = self.block_e(upsample_to(out, x.shape[-2:], align))
        return self.out_layer(out)
