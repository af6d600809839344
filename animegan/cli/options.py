"""Flags and progress bars shared by several commands."""
from __future__ import annotations

import argparse
import sys

from tqdm import tqdm

from ..device import COMPILE_MODES, PRECISION_ENV


def add_device_flags(parser: argparse.ArgumentParser) -> None:
    """``--device`` and ``--fp32`` (full precision where the policy would use bfloat16 or float16)."""
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1, mps (default: auto)")
    parser.add_argument("--fp32", action="store_true",
                        help=f"run the network in float32 (default: bfloat16 on CPUs with native bf16, float16 "
                             f"on CUDA; the same as {PRECISION_ENV}=fp32)")


def add_compile_flag(parser: argparse.ArgumentParser) -> None:
    """``--compile [MODE]``: the network through torch.compile (``device.compile_network``)."""
    parser.add_argument("--compile", nargs="?", const="default", default=None, choices=COMPILE_MODES, metavar="MODE",
                        help="run the network through torch.compile (under a minute to compile first, then faster; "
                             f"MODE: {', '.join(COMPILE_MODES)}; reduce-overhead adds CUDA graphs on a GPU)")


def half_from_flags(args: argparse.Namespace) -> bool | None:
    """The ``half`` argument the library takes: False with ``--fp32``, else None (the policy decides).

    Passed down rather than written into the environment, so calling ``main()`` in a process
    (a test, a notebook) changes nothing for the work that follows it.
    """
    return False if getattr(args, "fp32", False) else None


class LazyBar:
    """A tqdm bar on stderr, opened on the first update so set-up errors print without an empty bar.

    Call it as a ``progress(done, total)`` callback; the total may change (a video's frame count
    is only an estimate until decoding ends).
    """

    def __init__(self, unit: str, desc: str) -> None:
        self.unit, self.desc = unit, desc
        self.bar: tqdm | None = None

    def __call__(self, done: int, total: int) -> None:
        if self.bar is None:
            self.bar = tqdm(total=total, unit=self.unit, desc=self.desc, file=sys.stderr)
        if total != self.bar.total:
            self.bar.total = total
        self.bar.update(done - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
