"""A 2x face upscaler, and the 128 px face generator it makes from a 64 px one.

Training a GAN at 128 px costs about four times as much per image as at 64 px. On a CPU the
cheaper road to 128 px faces is a 64 px generator (trained long, where it is cheap) followed by
a small super-resolution network trained on real faces (supervised: ``train/face_upscaler.py``).

* ``FaceUpscaler``: (N, 3, S, S) -> (N, 3, 2S, 2S). Bilinear upsampling plus a learned residual
  (an EDSR-style body of residual blocks at the input's size, then a sub-pixel convolution), so
  an untrained network is exactly bilinear and every block only adds detail.
* ``UpscaledFaceGenerator``: a ``DCGANGenerator`` then a ``FaceUpscaler``; to the rest of the
  library it is one face generator (``latent_dim``, ``image_size``, ``early_features`` for the
  semantic sliders, which stay the 64 px generator's).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .dcgan import DCGANConfig, DCGANGenerator


@dataclass
class FaceUpscalerConfig:
    channels: int = 32
    blocks: int = 6


class _ResBlock(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(channels, channels, 3, 1, 1), nn.ReLU(True),
                                  nn.Conv2d(channels, channels, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class FaceUpscaler(nn.Module):
    """(N, 3, S, S) in [-1, 1] -> (N, 3, 2S, 2S): bilinear x2 plus a learned residual."""

    def __init__(self, config: FaceUpscalerConfig | None = None) -> None:
        super().__init__()
        cfg = self.config = config or FaceUpscalerConfig()
        if cfg.channels < 1 or cfg.blocks < 0:
            raise ValueError(f"channels must be at least 1 and blocks at least 0, not {cfg.channels}, {cfg.blocks}")
        c = cfg.channels
        self.head = nn.Conv2d(3, c, 3, 1, 1)
        self.body = nn.Sequential(*[_ResBlock(c) for _ in range(cfg.blocks)])
        self.tail = nn.Sequential(nn.Conv2d(c, 3 * 4, 3, 1, 1), nn.PixelShuffle(2))
        # Zero residual at the start: training begins from plain bilinear upsampling.
        nn.init.zeros_(self.tail[0].weight)
        nn.init.zeros_(self.tail[0].bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        base = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        f = self.head(x)
        out = base + self.tail(f + self.body(f))
        # Unclamped while training, so the losses still see (and pull back) values past the range.
        return out if self.training else out.clamp(-1, 1)


@dataclass
class UpscaledFacesConfig:
    generator: dict[str, Any] = field(default_factory=dict)   # DCGANConfig fields (the 64 px generator)
    upscaler: dict[str, Any] = field(default_factory=dict)    # FaceUpscalerConfig fields

    def __post_init__(self) -> None:
        # Checked here, not only when the network is built, so a Hub model's JSON is refused before its
        # weights download.
        if not isinstance(self.generator, dict) or not isinstance(self.upscaler, dict):
            raise ValueError("generator and upscaler configs must be objects")
        DCGANConfig(**self.generator)
        FaceUpscalerConfig(**self.upscaler)


class UpscaledFaceGenerator(nn.Module):
    """(N, latent_dim) -> (N, 3, 2S, 2S) in [-1, 1]: a face generator, then the 2x upscaler."""

    def __init__(self, config: UpscaledFacesConfig | None = None) -> None:
        super().__init__()
        cfg = self.config = config or UpscaledFacesConfig()
        self.generator = DCGANGenerator(DCGANConfig(**cfg.generator))
        self.upscaler = FaceUpscaler(FaceUpscalerConfig(**cfg.upscaler))
        self.latent_dim = self.generator.latent_dim
        self.image_size = 2 * self.generator.image_size

    def early_features(self, z: torch.Tensor) -> torch.Tensor:
        """The 64 px generator's stem activations (what the semantic sliders are computed from)."""
        return self.generator.early_features(z)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.upscaler(self.generator(z))
