"""The one device and precision policy; everything else asks it.

The CPU choices (bfloat16 where the CPU has native bf16 dot products, channels_last) are the
ones ``bench/stylize_bench.py`` measured as fastest; see ``bench/README.md`` for the figures.
"""
from __future__ import annotations

import functools
import os
import re
from pathlib import Path

import torch

PRECISION_ENV = "ANIMEGAN_PRECISION"  # "fp32" forces full precision everywhere; "auto" (default) is the policy


def pick_device(preference: str | torch.device | None = None) -> torch.device:
    """Return the device to run on: the preference if given, else CUDA, then MPS, then CPU."""
    if preference not in (None, "", "auto"):
        from .errors import AnimeGANError

        try:
            device = torch.device(preference)
        except (RuntimeError, TypeError):
            raise AnimeGANError(f"unknown device {preference!r} (use auto, cpu, cuda, cuda:N or mps)") from None
        if device.type == "cuda":
            if not torch.cuda.is_available():
                raise AnimeGANError(f"device {preference!r} was asked for but CUDA is not available")
            if device.index is not None and device.index >= torch.cuda.device_count():
                raise AnimeGANError(f"device {preference!r}: this machine has {torch.cuda.device_count()} GPU(s)")
        elif device.type == "mps":
            mps = getattr(torch.backends, "mps", None)
            if mps is None or not mps.is_available():
                raise AnimeGANError(f"device {preference!r} was asked for but Apple MPS is not available")
        elif device.type != "cpu":
            raise AnimeGANError(f"device {preference!r} is not supported (use auto, cpu, cuda, cuda:N or mps)")
        return device
    if torch.cuda.is_available():
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


@functools.lru_cache(maxsize=1)
def cpu_has_native_bf16() -> bool:
    """True where the CPU multiplies bfloat16 in hardware (AVX-512 BF16 or AMX).

    Elsewhere oneDNN emulates bf16 and it can be slower than fp32, so the policy keeps fp32.
    Only Linux says so cheaply (/proc/cpuinfo); other systems get fp32.
    """
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return False
    if not re.search(r"\b(avx512_bf16|amx_bf16)\b", text):
        return False
    try:  # and this torch build's oneDNN can use it (a private check, so guarded)
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def full_precision_forced() -> bool:
    return os.environ.get(PRECISION_ENV, "auto").strip().lower() in ("fp32", "float32", "full")


def inference_dtype(device: torch.device, half: bool | None = None, *, cpu_reduced: bool = True) -> torch.dtype:
    """The dtype a network runs in for inference.

    ``half=None`` (auto): fp16 on CUDA; bf16 on a CPU with native bf16 when ``cpu_reduced``
    (the stylizer: about 3x faster at 512 px, within 1/255 on average); fp32 otherwise.
    ``half=True`` asks for the reduced type on any device, ``half=False`` for fp32.
    """
    if half is None:
        if full_precision_forced():
            return torch.float32
        half = device.type == "cuda" or (device.type == "cpu" and cpu_reduced and cpu_has_native_bf16())
    if not half:
        return torch.float32
    return torch.bfloat16 if device.type == "cpu" else torch.float16


def memory_format(device: torch.device) -> torch.memory_format:
    """channels_last on CUDA and CPU, where cuDNN's and oneDNN's NHWC kernels are the faster ones."""
    return torch.channels_last if device.type in ("cuda", "cpu") else torch.contiguous_format


COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def compile_network(module: torch.nn.Module, mode: str) -> torch.nn.Module:
    """``torch.compile`` for fixed-shape work (a video's frames): one graph per input shape.

    Opt-in, not the policy: on a 2-core CPU the first call compiles for 40 to 60 s and the rest
    run 4 to 40% faster (bench/README.md), which pays only over many same-size frames.
    ``reduce-overhead`` adds CUDA graphs on a GPU.
    """
    if mode not in COMPILE_MODES:
        from .errors import AnimeGANError

        raise AnimeGANError(f"unknown compile mode {mode!r} (use one of {', '.join(COMPILE_MODES)})")
    return torch.compile(module, mode=mode, dynamic=False)  # type: ignore[return-value]


def prepare(module: torch.nn.Module, device: torch.device, dtype: torch.dtype | None = None) -> torch.nn.Module:
    """Move a network to a device in the policy's dtype and memory format, in eval mode."""
    dtype = dtype or inference_dtype(device)
    return module.to(device=device, dtype=dtype, memory_format=memory_format(device)).eval()
