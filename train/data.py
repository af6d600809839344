"""Image folders for the trainers: recursive listing, robust loading, resize + centre crop, augmentation.

The simple API::

    files = list_images("data/anime_faces")          # raises AnimeGANError when missing/empty
    ds = ImageFolderDataset(files, size=64)           # ds[i] -> (3, 64, 64) float in [-1, 1]
    batch = ds.load_batch([0, 5, 7])                  # (3, 3, 64, 64), unreadable files swapped out
    x = augment(batch, generator, flip=True)          # seeded, so a resumed run draws the same

Unreadable files are skipped (``ds.skipped`` lists them with the reason) rather than stopping
a long run.
"""
from __future__ import annotations

import math
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from animegan.errors import AnimeGANError
from animegan.images import image_files, prepare_image


def list_images(folder: str | os.PathLike[str]) -> list[Path]:
    """Every image file under ``folder`` (recursive, stable order)."""
    path = Path(folder)
    if not path.exists():
        raise AnimeGANError(f"{path}: no such folder")
    if not path.is_dir():
        raise AnimeGANError(f"{path}: is a file, not a folder of images")
    files = image_files([path])
    if not files:
        raise AnimeGANError(f"{path}: no images found (looked for .png, .jpg, .webp ... recursively)")
    return files


def load_square(path: str | os.PathLike[str], size: int) -> np.ndarray:
    """An image file as HxWx3 uint8: short side resized to ``size``, then centre-cropped."""
    rgb = prepare_image(path).rgb
    w, h = rgb.size
    scale = size / min(w, h)
    nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
    if (nw, nh) != (w, h):
        rgb = rgb.resize((nw, nh), Image.Resampling.BICUBIC if scale > 1 else Image.Resampling.LANCZOS)
    left, top = (nw - size) // 2, (nh - size) // 2
    return np.asarray(rgb.crop((left, top, left + size, top + size)), dtype=np.uint8)


def to_model_range(batch: torch.Tensor) -> torch.Tensor:
    """uint8 NCHW -> float in [-1, 1]."""
    return batch.float() / 127.5 - 1.0


class ImageFolderDataset(torch.utils.data.Dataset):
    """Square crops of an image folder (or file list) as float (3, S, S) in [-1, 1].

    ``preload=True`` (default when the decoded set fits in ``max_cache_bytes``) decodes every
    image once, in threads, so training steps read memory only.
    """

    def __init__(self, source: str | os.PathLike[str] | Sequence[Path], size: int, preload: bool | None = None,
                 max_cache_bytes: int = 6 << 30, workers: int | None = None, verbose: bool = True) -> None:
        self.files = list_images(source) if isinstance(source, (str, os.PathLike)) else [Path(f) for f in source]
        if not self.files:
            raise AnimeGANError("no training images given")
        self.size = size
        self.skipped: list[str] = []
        self._bad: set[int] = set()
        self.workers = workers or min(16, os.cpu_count() or 1)
        self.cache: torch.Tensor | None = None
        if preload is None:
            preload = len(self.files) * 3 * size * size <= max_cache_bytes
        if preload:
            self._preload(verbose)

    def __len__(self) -> int:
        return len(self.files)

    def _try_load(self, index: int) -> np.ndarray | None:
        if index in self._bad:
            return None
        try:
            return load_square(self.files[index], self.size)
        except AnimeGANError as exc:
            self._bad.add(index)
            self.skipped.append(str(exc))
            return None

    def _preload(self, verbose: bool) -> None:
        with ThreadPoolExecutor(self.workers) as pool:
            arrays = list(pool.map(self._try_load, range(len(self.files))))
        keep = [i for i, a in enumerate(arrays) if a is not None]
        if not keep:
            raise AnimeGANError(f"none of the {len(self.files)} images could be read (e.g. {self.skipped[0]})")
        self.files = [self.files[i] for i in keep]
        self.cache = torch.from_numpy(np.stack([arrays[i] for i in keep])).permute(0, 3, 1, 2).contiguous()
        if verbose and self.skipped:
            report_skipped(self.skipped)

    def load_uint8(self, indices: Sequence[int]) -> torch.Tensor:
        """uint8 (N, 3, S, S); an unreadable file is replaced by the next readable one."""
        if self.cache is not None:
            return self.cache[torch.as_tensor(list(indices), dtype=torch.long)]

        def one(i: int) -> np.ndarray:
            for k in range(len(self.files)):
                a = self._try_load((i + k) % len(self.files))
                if a is not None:
                    return a
            raise AnimeGANError("none of the training images could be read")

        with ThreadPoolExecutor(self.workers) as pool:
            arrays = list(pool.map(one, indices))
        return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2)

    def load_batch(self, indices: Sequence[int]) -> torch.Tensor:
        """float (N, 3, S, S) in [-1, 1]."""
        return to_model_range(self.load_uint8(indices))

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.load_batch([index])[0]


def report_skipped(skipped: list[str], out=sys.stderr) -> None:
    shown = "; ".join(skipped[:3]) + (" ..." if len(skipped) > 3 else "")
    print(f"warning: skipped {len(skipped)} unreadable image(s): {shown}", file=out, flush=True)


def augment(x: torch.Tensor, generator: torch.Generator, flip: bool = True, rotate: float = 0.0,
            shift: float = 0.0) -> torch.Tensor:
    """Random horizontal flip, rotation (+-degrees) and shift (+-fraction of the side), per image.

    All draws come from ``generator`` (CPU), so the same generator state gives the same batch.
    """
    n = x.shape[0]
    flips = torch.rand(n, generator=generator) < 0.5 if flip else None
    angles = (torch.rand(n, generator=generator) * 2 - 1) * math.radians(rotate) if rotate > 0 else None
    shifts = (torch.rand(n, 2, generator=generator) * 2 - 1) * shift * 2 if shift > 0 else None  # grid units
    if flips is not None:
        x = torch.where(flips.to(x.device).view(n, 1, 1, 1), x.flip(3), x)
    if angles is None and shifts is None:
        return x
    theta = torch.zeros(n, 2, 3)
    a = angles if angles is not None else torch.zeros(n)
    theta[:, 0, 0], theta[:, 0, 1], theta[:, 1, 0], theta[:, 1, 1] = a.cos(), -a.sin(), a.sin(), a.cos()
    if shifts is not None:
        theta[:, :, 2] = shifts
    grid = F.affine_grid(theta.to(x.device, x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
