"""Counting a network's arithmetic, for benchmarks and for the metadata of distilled styles."""
from __future__ import annotations

import torch
from torch import nn


def conv_flops(model: nn.Module, size: tuple[int, int] = (512, 512)) -> float:
    """Floating-point operations of the convolutions (2 x multiply-adds) for one image of ``size`` (h, w).

    Norms, activations, padding and resizes are left out: a few percent of the arithmetic, though
    a larger share of the time (memory-bound; see bench/README.md).
    """
    macs = 0

    def hook(module: nn.Conv2d, args: tuple, out: torch.Tensor) -> None:
        nonlocal macs
        k = module.weight
        macs += out.numel() * k.shape[1] * k.shape[2] * k.shape[3]

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.Conv2d)]
    try:
        param = next(model.parameters())
        with torch.inference_mode():
            model(torch.zeros(1, 3, *size, device=param.device, dtype=param.dtype))
    finally:
        for handle in handles:
            handle.remove()
    return 2.0 * macs
