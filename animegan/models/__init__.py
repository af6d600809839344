"""Networks only: no file or network I/O here.

``build_model(architecture, config)`` rebuilds any network from the plain dict stored in
a weights file's metadata, so a weights file alone knows how to rebuild its model.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

from torch import nn

from .animeganv2 import AnimeGANv2Config, AnimeGANv2Generator
from .animeganv3 import AnimeGANv3Config, AnimeGANv3Generator
from .dcgan import DCGANConfig, DCGANDiscriminator, DCGANDiscriminatorConfig, DCGANGenerator
from .discriminator import PatchDiscriminator, PatchDiscriminatorConfig
from .face_upscaler import FaceUpscaler, FaceUpscalerConfig, UpscaledFaceGenerator, UpscaledFacesConfig

# architecture name -> (config dataclass, model class, kind)
ARCHITECTURES: dict[str, tuple[type, Callable[..., nn.Module], str]] = {
    "animeganv2": (AnimeGANv2Config, AnimeGANv2Generator, "style"),
    "animeganv3": (AnimeGANv3Config, AnimeGANv3Generator, "style"),
    "patch_discriminator": (PatchDiscriminatorConfig, PatchDiscriminator, "discriminator"),
    # Both face variants are one architecture; the config's switches (upsample, spectral_norm,
    # batch_norm) say which (see models/dcgan.py variant_configs).
    "dcgan": (DCGANConfig, DCGANGenerator, "faces"),
    "dcgan_discriminator": (DCGANDiscriminatorConfig, DCGANDiscriminator, "discriminator"),
    # A 64 px face generator followed by a 2x upscaler: one face generator at 128 px.
    "dcgan_upscaled": (UpscaledFacesConfig, UpscaledFaceGenerator, "faces"),
    "face_upscaler": (FaceUpscalerConfig, FaceUpscaler, "upscaler"),
}


def make_config(architecture: str, config: dict[str, Any] | None = None) -> Any:
    """The architecture's config dataclass from a plain dict; unknown keys are an error."""
    if architecture not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {architecture!r} (known: {', '.join(sorted(ARCHITECTURES))})")
    config_cls = ARCHITECTURES[architecture][0]
    names = {f.name for f in dataclasses.fields(config_cls)}
    unknown = set(config or {}) - names
    if unknown:
        raise ValueError(f"unknown {architecture} config keys: {', '.join(sorted(unknown))}")
    return config_cls(**(config or {}))


def build_model(architecture: str, config: dict[str, Any] | None = None) -> nn.Module:
    """Build an untrained network of the named architecture."""
    return ARCHITECTURES[architecture][1](make_config(architecture, config))


def architecture_kind(architecture: str) -> str:
    """'style' (photo -> anime), 'faces' (latent -> face), 'upscaler' (image -> 2x image) or 'discriminator'."""
    return ARCHITECTURES[architecture][2]


__all__ = [
    "ARCHITECTURES", "AnimeGANv2Config", "AnimeGANv2Generator", "AnimeGANv3Config", "AnimeGANv3Generator",
    "DCGANConfig", "DCGANDiscriminator", "DCGANDiscriminatorConfig", "DCGANGenerator", "FaceUpscaler",
    "FaceUpscalerConfig", "UpscaledFaceGenerator", "UpscaledFacesConfig",
    "PatchDiscriminator", "PatchDiscriminatorConfig", "architecture_kind", "build_model", "make_config",
]
