"""The one device and precision policy; everything else asks it."""
from __future__ import annotations

import torch


def pick_device(preference: str | torch.device | None = None) -> torch.device:
    """Return the device to run on: the preference if given, else CUDA, then MPS, then CPU."""
    if preference not in (None, "", "auto"):
        device = torch.device(preference)
        if device.type == "cuda" and not torch.cuda.is_available():
            from .errors import AnimeGANError

            raise AnimeGANError(f"device {preference!r} was asked for but CUDA is not available")
        return device
    if torch.cuda.is_available():
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def inference_dtype(device: torch.device, half: bool | None = None) -> torch.dtype:
    """Half precision on CUDA (where it is fast and accurate enough for these nets), fp32 elsewhere."""
    if half is None:
        half = device.type == "cuda"
    return torch.float16 if half else torch.float32


def memory_format(device: torch.device) -> torch.memory_format:
    """channels_last on CUDA, where cuDNN's NHWC kernels are faster; contiguous elsewhere."""
    return torch.channels_last if device.type == "cuda" else torch.contiguous_format


def prepare(module: torch.nn.Module, device: torch.device, dtype: torch.dtype | None = None) -> torch.nn.Module:
    """Move a network to a device in the policy's dtype and memory format, in eval mode."""
    dtype = dtype or inference_dtype(device)
    return module.to(device=device, dtype=dtype, memory_format=memory_format(device)).eval()
