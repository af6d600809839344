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
    """align_corners=True is the community hub model's default upsampling.

    ``width`` scales every channel count: 1.0 is the community network; 0.45, the default of
    ``train.distill``, is the ``-fast`` student (4.5x fewer FLOPs; the same keys, smaller tensors).
    """

    align_corners: bool = True
    width: float = 1.0


class AnimeGANv2Generator(nn.Module):
    """Photo to anime, about 2.14 M parameters. Input and output NCHW in [-1, 1]; any size >= 16."""

    min_size = 16
    size_multiple = 1

    def __init__(self, config: AnimeGANv2Config | None = None) -> None:
        super().__init__()
        self.config = config or AnimeGANv2Config()
        if not 0 < self.config.width <= 4:
            raise ValueError(f"width must be in (0, 4], not {self.config.width}")

        def ch(n: int) -> int:
            # Multiples of 8 keep SIMD lanes full; width 1.0 gives the community counts exactly.
            return max(8, 8 * int(round(n * self.config.width / 8)))

        # The (0, 1, 0, 1) padding makes the stride-2 convs match TensorFlow's 'SAME' padding.
        self.block_a = nn.Sequential(
            ConvNormLReLU(3, ch(32), kernel_size=7, padding=3),
            ConvNormLReLU(ch(32), ch(64), stride=2, padding=(0, 1, 0, 1)),
            ConvNormLReLU(ch(64), ch(64)),
        )
        self.block_b = nn.Sequential(
            ConvNormLReLU(ch(64), ch(128), stride=2, padding=(0, 1, 0, 1)),
            ConvNormLReLU(ch(128), ch(128)),
        )
        self.block_c = nn.Sequential(
            ConvNormLReLU(ch(128), ch(128)),
            InvertedResBlock(ch(128), ch(256), 2),
            InvertedResBlock(ch(256), ch(256), 2),
            InvertedResBlock(ch(256), ch(256), 2),
            InvertedResBlock(ch(256), ch(256), 2),
            ConvNormLReLU(ch(256), ch(128)),
        )
        self.block_d = nn.Sequential(ConvNormLReLU(ch(128), ch(128)), ConvNormLReLU(ch(128), ch(128)))
        self.block_e = nn.Sequential(
            ConvNormLReLU(ch(128), ch(64)),
            ConvNormLReLU(ch(64), ch(64)),
            ConvNormLReLU(ch(64), ch(32), kernel_size=7, padding=3),
        )
        self.out_layer = nn.Sequential(nn.Conv2d(ch(32), 3, kernel_size=1, bias=False), nn.Tanh())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        align = self.config.align_corners
        out = self.block_a(x)
        half_size = out.shape[-2:]
        out = self.block_c(self.block_b(out))
        out = self.block_d(upsample_to(out, half_size, align))
        out = self.block_e(upsample_to(out, x.shape[-2:], align))
        return self.out_layer(out)
