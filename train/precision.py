"""The trainers' fast path: which autocast dtype and memory layout a device trains in.

bfloat16 autocast where the hardware multiplies it natively (CUDA GPUs with bf16, CPUs with
AVX-512 BF16 or AMX); channels_last on CUDA and the CPU, where cuDNN's and oneDNN's NHWC
kernels are the faster ones. Weights and optimiser state stay fp32, and the losses are taken
on fp32 values (the trainers cast network outputs with ``.float()``; the Gram and colour terms
leave autocast, see train/losses.py), so the fast path changes the speed of a step, not what it
computes beyond bf16 rounding (bench/README.md measures both ways).

``amp=False`` (``--fp32``), ``channels_last=False`` or ``ANIMEGAN_PRECISION=fp32`` give the
plain way back.
"""
from __future__ import annotations

import argparse
import contextlib
from dataclasses import dataclass

import torch

from animegan.device import cpu_has_native_bf16, full_precision_forced


@dataclass(frozen=True)
class TrainPrecision:
    """How one trainer runs its forward passes on one device."""

    device_type: str
    dtype: torch.dtype | None  # the autocast dtype; None: plain fp32
    memory_format: torch.memory_format

    def autocast(self) -> contextlib.AbstractContextManager:
        """The context the trainer's forward passes run in."""
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)

    @property
    def needs_grad_scaler(self) -> bool:
        """fp16 gradients underflow without loss scaling; bf16 has fp32's range."""
        return self.dtype == torch.float16

    def describe(self) -> str:
        """One phrase for logs and run status, e.g. ``bf16 autocast, channels_last``."""
        precision = {None: "fp32", torch.bfloat16: "bf16 autocast", torch.float16: "fp16 autocast"}[self.dtype]
        layout = "channels_last" if self.memory_format == torch.channels_last else "NCHW"
        return f"{precision}, {layout}"


def train_precision(device: torch.device, amp: bool = True, channels_last: bool = True,
                    fp16_fallback: bool = False) -> TrainPrecision:
    """The fast path for ``device``, or the plain way where asked or where it would not be faster.

    ``fp16_fallback``: on a CUDA GPU without bf16, autocast in fp16 (the caller then needs a
    GradScaler) instead of staying in fp32.
    """
    dtype: torch.dtype | None = None
    if amp and not full_precision_forced():
        if device.type == "cuda":
            if torch.cuda.is_bf16_supported():
                dtype = torch.bfloat16
            elif fp16_fallback:
                dtype = torch.float16
        elif device.type == "cpu" and cpu_has_native_bf16():
            dtype = torch.bfloat16
    fast_layout = channels_last and device.type in ("cuda", "cpu")
    return TrainPrecision(device.type, dtype, torch.channels_last if fast_layout else torch.contiguous_format)


def add_fp32_flag(parser: argparse.ArgumentParser) -> None:
    """The trainers' ``--fp32`` flag (None when not given, so a resumed run's saved choice stands)."""
    parser.add_argument("--fp32", action="store_true", default=None,
                        help="no bf16 autocast, even where the device has it (the plain, slower way)")
