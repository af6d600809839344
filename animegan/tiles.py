"""Tiled inference for images too large to run in one pass.

AnimeGAN generators normalise each feature map over the whole image (GroupNorm(1) in v2,
InstanceNorm in v3). Run tile by tile, every tile would normalise with its own statistics
and the seams would show as patches of different brightness. So the statistics are taken
once, from a downscaled pass over the whole picture, and every tile is normalised with
those same numbers; overlapping tiles are then blended with linear ramps.
"""
from __future__ import annotations

import contextlib
import math
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from .limits import check_time

NormStats = dict[nn.Module, tuple[torch.Tensor, torch.Tensor]]


def _whole_image_norms(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules()
            if (isinstance(m, nn.GroupNorm) and m.num_groups == 1) or isinstance(m, nn.InstanceNorm2d)]


def _stat_dims(module: nn.Module) -> tuple[int, ...]:
    return (1, 2, 3) if isinstance(module, nn.GroupNorm) else (2, 3)


@contextlib.contextmanager
def recorded_norm_stats(model: nn.Module) -> Iterator[NormStats]:
    """Record the mean and variance each whole-image norm layer sees during the block."""
    stats: NormStats = {}

    def hook(module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        x = args[0].float()
        dims = _stat_dims(module)
        stats[module] = (x.mean(dim=dims, keepdim=True), x.var(dim=dims, keepdim=True, unbiased=False))

    handles = [m.register_forward_pre_hook(hook) for m in _whole_image_norms(model)]
    try:
        yield stats
    finally:
        for h in handles:
            h.remove()


@contextlib.contextmanager
def locked_norm_stats(model: nn.Module, stats: NormStats) -> Iterator[None]:
    """Normalise with ``stats`` instead of each input's own statistics during the block."""

    def hook(module: nn.Module, args: tuple[torch.Tensor, ...], output: torch.Tensor) -> torch.Tensor:
        x = args[0]
        mean, var = stats[module]
        y = (x.float() - mean) * torch.rsqrt(var + module.eps)
        if module.weight is not None:  # per-channel affine, for both norm types
            y = y * module.weight.float().view(1, -1, 1, 1) + module.bias.float().view(1, -1, 1, 1)
        return y.to(output.dtype)

    handles = [m.register_forward_hook(hook) for m in _whole_image_norms(model)]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def _ramp(length: int, overlap: int, at_start: bool, at_end: bool, device: torch.device) -> torch.Tensor:
    """1 in the middle, rising over ``overlap`` pixels at inner edges (never to exactly 0)."""
    w = torch.ones(length, device=device)
    if overlap > 0:
        ramp = (torch.arange(overlap, device=device, dtype=torch.float32) + 1) / (overlap + 1)
        if not at_start:
            w[:overlap] = torch.minimum(w[:overlap], ramp)
        if not at_end:
            w[-overlap:] = torch.minimum(w[-overlap:], ramp.flip(0))
    return w


def _starts(total: int, tile: int, overlap: int) -> list[int]:
    if total <= tile:
        return [0]
    step = tile - overlap
    count = math.ceil((total - overlap) / step)
    return [min(i * step, total - tile) for i in range(count)]


def run_tiled(model: nn.Module, x: torch.Tensor, tile: int = 1024, overlap: int = 64,
              stats_side: int | None = None) -> torch.Tensor:
    """Run ``model`` over ``x`` (N, 3, H, W) in overlapping tiles with shared norm statistics."""
    if tile < 1:
        raise ValueError(f"tile must be at least 1 pixel, not {tile}")
    # An overlap of half the tile or more would stall the tile grid (step <= 0, no tiles, 0/0).
    overlap = max(0, min(overlap, tile // 2))
    n, _, h, w = x.shape
    stats_side = stats_side or tile
    scale = min(1.0, stats_side / max(h, w))
    small = F.interpolate(x, scale_factor=scale, mode="area") if scale < 1.0 else x
    with recorded_norm_stats(model) as stats:
        model(small)
    out = torch.zeros(n, 3, h, w, device=x.device, dtype=torch.float32)
    weight = torch.zeros(1, 1, h, w, device=x.device, dtype=torch.float32)
    th, tw = min(tile, h), min(tile, w)
    ys, xs = _starts(h, th, overlap), _starts(w, tw, overlap)
    with locked_norm_stats(model, stats):
        for y0 in ys:
            for x0 in xs:
                check_time()  # a request's time limit, checked between tiles (animegan.limits)
                piece = model(x[:, :, y0:y0 + th, x0:x0 + tw]).float()
                wy = _ramp(th, overlap, y0 == 0, y0 + th >= h, x.device)
                wx = _ramp(tw, overlap, x0 == 0, x0 + tw >= w, x.device)
                mask = (wy[:, None] * wx[None, :])[None, None]
                out[:, :, y0:y0 + th, x0:x0 + tw] += piece * mask
                weight[:, :, y0:y0 + th, x0:x0 + tw] += mask
    return (out / weight).to(x.dtype)
