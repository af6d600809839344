"""Every loss of the AnimeGAN v2/v3 recipes as a small pure function of tensors.

Images are NCHW in [-1, 1]; features are NCHW from the perceptual network
(``train.perceptual``). Every function returns a scalar tensor (mean over the batch), and
none mixes the samples of a batch unless it says so.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any, Callable

import torch
import torch.nn.functional as F

from animegan.errors import AnimeGANError

GAN_LOSSES = ("lsgan", "hinge", "bce")

# RGB -> YUV, BT.601 (the matrix of tf.image.rgb_to_yuv, which AnimeGAN uses), on RGB in [0, 1].
YUV_MATRIX = (
    (0.299, 0.587, 0.114),
    (-0.14714119, -0.28886916, 0.43601035),
    (0.61497538, -0.51496512, -0.10001026),
)


# ----------------------------------------------------------------------------------------
# Adversarial
# ----------------------------------------------------------------------------------------
def _check_gan(kind: str) -> None:
    if kind not in GAN_LOSSES:
        raise AnimeGANError(f"unknown GAN loss {kind!r} (choose {', '.join(GAN_LOSSES)})")


def d_real_loss(logits: torch.Tensor, kind: str = "lsgan") -> torch.Tensor:
    """Discriminator term for inputs it should call real: LSGAN mean((x-1)^2), hinge mean(relu(1-x)), BCE vs 1."""
    _check_gan(kind)
    if kind == "lsgan":
        return (logits - 1).square().mean()
    if kind == "hinge":
        return F.relu(1 - logits).mean()
    return F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits))


def d_fake_loss(logits: torch.Tensor, kind: str = "lsgan") -> torch.Tensor:
    """Discriminator term for inputs it should call fake: LSGAN mean(x^2), hinge mean(relu(1+x)), BCE vs 0."""
    _check_gan(kind)
    if kind == "lsgan":
        return logits.square().mean()
    if kind == "hinge":
        return F.relu(1 + logits).mean()
    return F.binary_cross_entropy_with_logits(logits, torch.zeros_like(logits))


def g_adv_loss(fake_logits: torch.Tensor, kind: str = "lsgan") -> torch.Tensor:
    """Generator term: LSGAN mean((D(G(p))-1)^2), hinge -mean(D(G(p))), BCE vs 1 (non-saturating)."""
    _check_gan(kind)
    if kind == "lsgan":
        return (fake_logits - 1).square().mean()
    if kind == "hinge":
        return -fake_logits.mean()
    return F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits))


def d_adv_loss(real: torch.Tensor, fake: torch.Tensor, gray: torch.Tensor, smooth: torch.Tensor,
               kind: str = "lsgan", weights: tuple[float, float, float, float] = (1.2, 1.2, 1.2, 0.8)
               ) -> torch.Tensor:
    """AnimeGAN's discriminator loss: anime is real; generated, grayscale anime and edge-smoothed anime are fake.

    ``weights`` are (real, fake, gray, smooth); AnimeGANv2's Hayao values are the default.
    """
    wr, wf, wg, ws = weights
    return (wr * d_real_loss(real, kind) + wf * d_fake_loss(fake, kind)
            + wg * d_fake_loss(gray, kind) + ws * d_fake_loss(smooth, kind))


# ----------------------------------------------------------------------------------------
# Perceptual: content and style
# ----------------------------------------------------------------------------------------
def content_loss(features_photo: torch.Tensor, features_fake: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference of perceptual features of the photo and of G(photo)."""
    return (features_photo - features_fake).abs().mean()


def gram(features: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) -> (N, C, C): each sample's Gram matrix F F^T divided by C*H*W (no mixing across N)."""
    n, c, h, w = features.shape
    f = features.reshape(n, c, h * w).float()
    # In full precision even inside the trainer's autocast: the loss is a small difference of
    # large sums, which bf16's 8-bit mantissa would drown.
    with torch.autocast(f.device.type, enabled=False):
        return torch.bmm(f, f.transpose(1, 2)) / (c * h * w)


def style_loss(features_fake: torch.Tensor, features_style: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference between the Gram matrices of sample i of each batch, averaged over i."""
    if features_fake.shape[0] != features_style.shape[0]:
        raise ValueError("style_loss needs batches of the same size")
    return (gram(features_fake) - gram(features_style)).abs().mean()


def gray_style_loss(features: Callable[[torch.Tensor], torch.Tensor], fake: torch.Tensor,
                    anime_gray: torch.Tensor) -> torch.Tensor:
    """AnimeGANv3's gray-style loss: Gram style loss between the grayscale *output* and grayscale anime.

    Turning both sides gray makes the term carry texture only, never colour.
    """
    return style_loss(features(rgb_to_gray(fake)), features(anime_gray))


# ----------------------------------------------------------------------------------------
# Colour and smoothness
# ----------------------------------------------------------------------------------------
def rgb_to_gray(x: torch.Tensor) -> torch.Tensor:
    """BT.601 luma of NCHW RGB in [-1, 1], repeated on 3 channels (in [-1, 1])."""
    w = x.new_tensor(YUV_MATRIX[0]).view(1, 3, 1, 1)
    return (x * w).sum(1, keepdim=True).expand(-1, 3, -1, -1)


def rgb_to_yuv(x: torch.Tensor) -> torch.Tensor:
    """NCHW RGB in [-1, 1] -> YUV (BT.601) of the [0, 1] image: Y in [0, 1], U and V about +-0.44 and +-0.61."""
    x = x.to(torch.promote_types(x.dtype, torch.float32))
    m = x.new_tensor(YUV_MATRIX)
    with torch.autocast(x.device.type, enabled=False):  # full precision, as in gram()
        return torch.einsum("ij,njhw->nihw", m, (x + 1) / 2)


def color_loss(photo: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """L1 on Y plus Huber (delta 1) on U and V, between the photo and G(photo) in YUV."""
    a, b = rgb_to_yuv(photo.float()), rgb_to_yuv(fake.float())
    return ((a[:, 0] - b[:, 0]).abs().mean() + F.huber_loss(b[:, 1], a[:, 1], delta=1.0)
            + F.huber_loss(b[:, 2], a[:, 2], delta=1.0))


def tv_loss(x: torch.Tensor) -> torch.Tensor:
    """Total variation as AnimeGANv2 writes it: l2(dh)/size(dh) + l2(dw)/size(dw), with l2(t) = sum(t^2)/2."""
    dh = x[:, :, 1:, :] - x[:, :, :-1, :]
    dw = x[:, :, :, 1:] - x[:, :, :, :-1]
    return 0.5 * (dh.square().mean() + dw.square().mean())


# ----------------------------------------------------------------------------------------
# AnimeGANv3 terms
# ----------------------------------------------------------------------------------------
@torch.no_grad()
def superpixel_labels(image: torch.Tensor, segments: int = 64, compactness: float = 10.0,
                      iterations: int = 5) -> torch.Tensor:
    """SLIC-style superpixels of one (3, H, W) image in [-1, 1] -> (H, W) int64 labels.

    Seeds on a regular grid of spacing S; each round assigns every pixel to the nearest seed
    within 2S by d_colour^2 + (compactness / S)^2 d_xy^2 (colour scaled to 0..100 as SLIC's
    Lab range), then moves each seed to the mean of its pixels.
    """
    _, h, w = image.shape
    spacing = max(1.0, math.sqrt(h * w / max(1, segments)))
    ny, nx = max(1, round(h / spacing)), max(1, round(w / spacing))
    dev = image.device
    ys = torch.arange(h, device=dev, dtype=torch.float32)
    xs = torch.arange(w, device=dev, dtype=torch.float32)
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    pos = torch.stack([yy.reshape(-1), xx.reshape(-1)], 1)  # (P, 2)
    col = ((image.float() + 1) * 50).reshape(3, -1).t()  # (P, 3), 0..100
    cy = (torch.arange(ny, device=dev, dtype=torch.float32) + 0.5) * h / ny
    cx = (torch.arange(nx, device=dev, dtype=torch.float32) + 0.5) * w / nx
    c_pos = torch.stack(torch.meshgrid(cy, cx, indexing="ij"), -1).reshape(-1, 2)
    c_col = col[(c_pos[:, 0].long() * w + c_pos[:, 1].long())]
    k = c_pos.shape[0]
    step_y, step_x = h / ny, w / nx
    weight = (compactness / spacing) ** 2
    labels = torch.zeros(h * w, dtype=torch.long, device=dev)
    for _ in range(max(1, iterations)):
        # Pixels lie on a grid, so the spatial terms separate into (H, K) and (W, K) pieces that
        # broadcast to (H, W, K): a third of the memory traffic of a (P, K, 2) offset tensor.
        dy = ys[:, None] - c_pos[None, :, 0]
        dx = xs[:, None] - c_pos[None, :, 1]
        far = (dy.abs() > 2 * step_y)[:, None, :] | (dx.abs() > 2 * step_x)[None, :, :]
        dist = torch.cdist(col, c_col).square().view(h, w, k)
        dist += (weight * dy.square())[:, None, :] + (weight * dx.square())[None, :, :]
        labels = dist.masked_fill_(far, float("inf")).view(-1, k).argmin(1)
        count = torch.bincount(labels, minlength=k).float()
        keep = count > 0
        new_pos = torch.zeros_like(c_pos).index_add_(0, labels, pos)
        new_col = torch.zeros_like(c_col).index_add_(0, labels, col)
        c_pos[keep] = new_pos[keep] / count[keep, None]
        c_col[keep] = new_col[keep] / count[keep, None]
    return labels.reshape(h, w)


@torch.no_grad()
def superpixel_average(images: torch.Tensor, segments: int = 64, compactness: float = 10.0,
                       iterations: int = 5) -> torch.Tensor:
    """Each image's superpixels filled with their mean colour (no gradient): the region-smoothing target."""
    out = torch.empty_like(images)
    for i, img in enumerate(images):
        labels = superpixel_labels(img, segments, compactness, iterations).reshape(-1)
        k = int(labels.max()) + 1
        flat = img.float().reshape(img.shape[0], -1).t()
        sums = torch.zeros(k, flat.shape[1], device=img.device).index_add_(0, labels, flat)
        count = torch.bincount(labels, minlength=k).clamp_min(1).float()
        out[i] = (sums / count[:, None])[labels].t().reshape(img.shape).to(images.dtype)
    return out


def region_smoothing_loss(output: torch.Tensor, superpixel_target: torch.Tensor) -> torch.Tensor:
    """AnimeGANv3's region smoothing: mean |output - superpixel-averaged target| (target detached).

    Pulling each region towards its mean colour flattens texture into anime-like regions.
    Works on pixels or, as the trainer uses it, on perceptual features of both.
    """
    return (output - superpixel_target.detach()).abs().mean()


def box_filter(x: torch.Tensor, radius: int) -> torch.Tensor:
    """Mean over the (2r+1)^2 window clipped at the borders (the guided filter's box)."""
    return F.avg_pool2d(x, 2 * radius + 1, stride=1, padding=radius, count_include_pad=False)


def guided_filter(guide: torch.Tensor, src: torch.Tensor, radius: int = 1, eps: float = 5e-3) -> torch.Tensor:
    """He et al.'s guided filter per channel: edge-preserving smoothing of ``src`` steered by ``guide``."""
    mean_i, mean_p = box_filter(guide, radius), box_filter(src, radius)
    cov = box_filter(guide * src, radius) - mean_i * mean_p
    var = box_filter(guide * guide, radius) - mean_i * mean_i
    a = cov / (var + eps)
    b = mean_p - a * mean_i
    return box_filter(a, radius) * guide + box_filter(b, radius)


def domain_loss(main: torch.Tensor, support: torch.Tensor, features_main: torch.Tensor | None = None,
                features_target: torch.Tensor | None = None, radius: int = 1, eps: float = 5e-3) -> torch.Tensor:
    """AnimeGANv3's tie between the tails: the main tail learns the support tail's anime domain.

    The support output is revised (guided-filtered by itself, detached: it is a label, as the
    v3 paper's fine-grained revision) and the main output must match it in pixels (L1) and,
    when features are given, in perceptual features (L1).
    """
    target = revision_target(support, radius, eps)
    loss = (main.float() - target).abs().mean()
    if features_main is not None and features_target is not None:
        loss = loss + (features_main - features_target.detach()).abs().mean()
    return loss


def revision_target(support: torch.Tensor, radius: int = 1, eps: float = 5e-3) -> torch.Tensor:
    """The detached, guided-filtered support output that ``domain_loss`` compares against."""
    s = support.detach().float()
    return guided_filter(s, s, radius, eps)


# ----------------------------------------------------------------------------------------
# Weights
# ----------------------------------------------------------------------------------------
@dataclass
class LossWeights:
    """Multipliers of each term; the defaults are AnimeGANv2's Hayao (scenery) values."""

    adv_g: float = 300.0
    adv_d: float = 300.0
    content: float = 1.5
    style: float = 2.5
    color: float = 10.0
    tv: float = 1.0
    d_real: float = 1.2
    d_fake: float = 1.2
    d_gray: float = 1.2
    d_smooth: float = 0.8
    # v3 only
    gray_style: float = 2.5
    region: float = 0.8
    domain: float = 1.0

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "LossWeights":
        names = {f.name for f in fields(cls)}
        unknown = set(values) - names
        if unknown:
            raise AnimeGANError(f"unknown loss weight(s): {', '.join(sorted(unknown))} "
                                f"(known: {', '.join(sorted(names))})")
        try:
            return cls(**{k: float(v) for k, v in values.items()})
        except (TypeError, ValueError) as exc:
            raise AnimeGANError(f"loss weights must be numbers ({exc})") from None

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


# AnimeGANv2's configs: scenery as its Hayao run; portraits keep more of the photo's colours
# and take a stronger texture term. The perceptual net's feature scale is handled in
# train.perceptual, so the same numbers serve VGG19 and Inception.
PRESETS: dict[str, dict[str, float]] = {
    "scenery": {"content": 1.5, "style": 2.5, "gray_style": 2.5, "color": 10.0, "tv": 1.0,
                "adv_g": 300.0, "adv_d": 300.0},
    "portrait": {"content": 1.5, "style": 3.0, "gray_style": 3.0, "color": 15.0, "tv": 1.0,
                 "adv_g": 300.0, "adv_d": 300.0},
}


def preset_weights(preset: str, overrides: dict[str, Any] | None = None) -> LossWeights:
    """The preset's weights with any overrides applied."""
    if preset not in PRESETS:
        raise AnimeGANError(f"unknown preset {preset!r} (choose {', '.join(PRESETS)})")
    return LossWeights.from_dict({**PRESETS[preset], **(overrides or {})})
