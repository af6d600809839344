"""Building blocks shared by the AnimeGAN generators."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def norm_layer(kind: str, channels: int) -> nn.Module:
    """'layer' is GroupNorm(1): AnimeGANv2's layer norm over (C, H, W); 'instance' is InstanceNorm."""
    if kind == "layer":
        return nn.GroupNorm(num_groups=1, num_channels=channels, affine=True)
    if kind == "instance":
        return nn.InstanceNorm2d(channels, affine=True)
    raise ValueError(f"unknown norm {kind!r}")


class ConvNormLReLU(nn.Sequential):
    """Reflect pad, conv, norm, LeakyReLU(0.2). Index layout (0 pad, 1 conv, 2 norm) is the checkpoint format."""

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        kernel_size: int = 3,
        stride: int = 1,
        padding: int | tuple[int, int, int, int] = 1,
        groups: int = 1,
        bias: bool = False,
        norm: str = "layer",
    ) -> None:
        super().__init__(
            nn.ReflectionPad2d(padding),
            nn.Conv2d(in_ch, out_ch, kernel_size, stride=stride, padding=0, groups=groups, bias=bias),
            norm_layer(norm, out_ch),
            nn.LeakyReLU(0.2, inplace=True),
        )


class InvertedResBlock(nn.Module):
    """MobileNetV2 block: 1x1 expand, 3x3 depthwise, 1x1 project; residual when shapes allow."""

    def __init__(self, in_ch: int, out_ch: int, expansion: float = 2, norm: str = "layer") -> None:
        super().__init__()
        self.use_residual = in_ch == out_ch
        hidden = int(round(in_ch * expansion))
        layers: list[nn.Module] = []
        if expansion != 1:
            layers.append(ConvNormLReLU(in_ch, hidden, kernel_size=1, padding=0, norm=norm))
        layers.append(ConvNormLReLU(hidden, hidden, groups=hidden, bias=True, norm=norm))
        layers.append(nn.Conv2d(hidden, out_ch, kernel_size=1, bias=False))
        layers.append(norm_layer(norm, out_ch))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.layers(x)
        return x + out if self.use_residual else out


def upsample_to(x: torch.Tensor, size: torch.Size | tuple[int, int], align_corners: bool = True) -> torch.Tensor:
    """Bilinear resize to an exact size, so odd input sizes line up with their skip level."""
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=align_corners)
