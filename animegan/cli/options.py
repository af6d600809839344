"""Flags shared by several commands."""
from __future__ import annotations

import argparse
import os

from ..device import PRECISION_ENV


def add_precision_flag(parser: argparse.ArgumentParser) -> None:
    """``--fp32``: full precision where the policy would use bfloat16 or float16."""
    parser.add_argument("--fp32", action="store_true",
                        help=f"run the network in float32 (default: bfloat16 on CPUs with native bf16, float16 "
                             f"on CUDA; the same as {PRECISION_ENV}=fp32)")


def apply_precision_flag(args: argparse.Namespace) -> None:
    # Through the environment, so every stylizer this command builds (image batches, video) sees it.
    if getattr(args, "fp32", False):
        os.environ[PRECISION_ENV] = "fp32"
