"""A fixed train/evaluation split of an image folder, chosen by a hash of each file's name.

The same file always lands on the same side, whatever the folder order or machine, so a model
is never trained on the images its FID is measured against.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Iterable

EVAL_EVERY = 10  # one file in ten is held out


def is_eval(path: str | Path, every: int = EVAL_EVERY) -> bool:
    """True for the held-out files: sha1 of the file name, modulo ``every``, is zero."""
    digest = hashlib.sha1(Path(path).name.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % every == 0


def split(paths: Iterable[Path], part: str, every: int = EVAL_EVERY) -> list[Path]:
    """The 'train' or 'eval' part of ``paths`` ('all' keeps everything)."""
    if part == "all":
        return list(paths)
    if part not in ("train", "eval"):
        raise ValueError(f"unknown split {part!r} (train, eval or all)")
    want_eval = part == "eval"
    return [p for p in paths if is_eval(p, every) == want_eval]
